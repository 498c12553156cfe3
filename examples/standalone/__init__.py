"""The standalone demo: a latency-sensitive service beside CPU-hungry batch jobs."""
