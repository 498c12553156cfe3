"""The test suite: unit, contract (fake vs real cgroup fs), kernel, integration and e2e."""
