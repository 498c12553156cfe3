"""Enforcement: turning the policies' decisions into cgroup and /proc writes."""
