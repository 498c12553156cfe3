"""``pluginregistration``: the kubelet plugin watcher's registration handshake.

Import the generated modules directly::

    from katalyst.api.pluginregistration import api_pb2, api_pb2_grpc
"""
