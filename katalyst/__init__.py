"""katalyst: the shared library of the node QoS resource manager.

QoS model and annotation parsing (:mod:`katalyst.qos`), cgroup drivers
(:mod:`katalyst.cgroup`), CPU sets and topology, checkpoints
(:mod:`katalyst.checkpoint`), the wire protocols (:mod:`katalyst.api`) and the
clock seam (:mod:`katalyst.clock`). It never imports the process packages
(``agent``, ``controllers``, ``scheduler_plugins``) and never talks to the API server.
"""

__version__ = "0.1.0"
