"""The network resource plugin: a NIC and a guaranteed egress bandwidth per pod."""

from agent.qrm.network.inventory import NIC, NICInventory, NICInventoryError, read_nics
from agent.qrm.network.policy import (
    BANDWIDTH_ANNOTATION,
    NETNS_NAME_ANNOTATION,
    NIC_NAME_ANNOTATION,
    QOS_CLASS_ANNOTATION,
    NetClass,
    NetworkPlan,
    NetworkPolicy,
)

__all__ = [
    "BANDWIDTH_ANNOTATION",
    "NETNS_NAME_ANNOTATION",
    "NIC",
    "NIC_NAME_ANNOTATION",
    "QOS_CLASS_ANNOTATION",
    "NICInventory",
    "NICInventoryError",
    "NetClass",
    "NetworkPlan",
    "NetworkPolicy",
    "read_nics",
]
