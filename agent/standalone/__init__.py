"""The standalone node: pods from a folder of manifests, run for real on this machine.

The local node plays the kubelet's part: it admits each pod through the agent's
real plugin sockets, runs each container's command as a process in its own
cgroup, applies the allocation, and follows the folder as files come and go.
"""
