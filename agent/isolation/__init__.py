"""Isolation beyond CPU and memory: network bandwidth classes (tc HTB with nftables
classification by cgroup) and block IO weights and throttles, each with a loop that
caps the reclaimed class from what the services measurably use."""
