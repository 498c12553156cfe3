"""The QoS resource manager (QRM): resource policies behind the kubelet's hook.

* :mod:`.types` — the domain types every policy speaks (no protobuf);
* :mod:`.server` — one generic gRPC server per policy on a unix socket;
* :mod:`.cpu`, :mod:`.memory` — the CPU and memory policies.
"""
