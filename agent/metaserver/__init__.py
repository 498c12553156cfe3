"""The metaserver: the one place that knows the node (pods, topology, cgroups, metrics)."""
