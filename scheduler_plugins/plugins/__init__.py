"""The extender's plugins: pure filter and score functions over a :class:`NodeView`.

Each plugin module has ``filter(pod, node) -> str | None`` (``None``: the node
fits; otherwise the reason it does not) and ``score(pod, node) -> int | None``
(0..:data:`MAX_SCORE`, ``None`` when the plugin has nothing to say about the pod).
"""

from typing import Final

MAX_SCORE: Final = 100
"""Plugins score 0..100 (kube-scheduler's MaxNodeScore); the HTTP layer scales
to the extender range 0..10."""
