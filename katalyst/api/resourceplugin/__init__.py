"""The kubelet QoS resource manager hook (``resourceplugin.*`` proto packages)."""
