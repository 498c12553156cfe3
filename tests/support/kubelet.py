"""The kubelet emulator of the tests: the standalone node's local kubelet.

See :mod:`agent.standalone.kubelet` for what it does and how faithfully.
"""

from agent.standalone.kubelet import *  # noqa: F403 - the tests' view of that module
