"""The CPU resource policy (``qrm_cpu_plugin``): pools, exclusive CPUs, NUMA hints.

* :mod:`.policy` -- :class:`CPUPolicy`, the :class:`~agent.qrm.types.ResourcePolicy`
  the plugin server serves (state and decisions, no I/O);
* :mod:`.pools` -- :func:`compute_pools`, the pools as a pure function of the
  reserve, the dedicated sets and the reclaim size;
* :mod:`.exclusive` -- which exclusive CPUs a dedicated pod gets (NUMA hints are
  :func:`agent.qrm.hints.numa_hints`, shared with the memory policy);
* :mod:`.state` -- the immutable state and its checkpoint form.
"""

from agent.qrm.cpu.exclusive import take_cpus
from agent.qrm.cpu.policy import OCI_PROPERTY, PLUGIN_NAME, POOL_ANNOTATION, RESOURCE, CPUPolicy
from agent.qrm.cpu.pools import (
    NAMED_POOLS,
    POOL_DEDICATED,
    POOL_RECLAIM,
    POOL_RESERVE,
    POOL_SHARE,
    Pools,
    compute_pools,
)
from agent.qrm.cpu.state import STATE_VERSION, DedicatedSet

__all__ = [
    "NAMED_POOLS",
    "OCI_PROPERTY",
    "PLUGIN_NAME",
    "POOL_ANNOTATION",
    "POOL_DEDICATED",
    "POOL_RECLAIM",
    "POOL_RESERVE",
    "POOL_SHARE",
    "RESOURCE",
    "STATE_VERSION",
    "CPUPolicy",
    "DedicatedSet",
    "Pools",
    "compute_pools",
    "take_cpus",
]
