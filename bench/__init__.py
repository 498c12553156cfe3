"""Benchmarks: speed goals as ratios against a baseline measured in the same run."""
