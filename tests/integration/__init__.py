"""Integration tests: real gRPC over unix sockets, driven by the kubelet emulator."""
