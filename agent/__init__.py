"""The node agent (``katalyst-agent``): metaserver, QoS resource manager plugins,
sysadvisor, eviction, reporter, enforcement and the standalone local node."""
