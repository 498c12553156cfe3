"""The node of a cluster: the kubelet's pods from the API server, enforced in its cgroups."""
