"""``resourceplugin.v1alpha1``: what Katalyst's patched kubelet calls on a resource plugin.

Import the generated modules directly::

    from katalyst.api.resourceplugin.v1alpha1 import api_pb2, api_pb2_grpc
"""
