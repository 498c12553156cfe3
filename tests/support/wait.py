"""Waiting for a condition that work outside the test's control makes true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(
    condition: Callable[[], bool], what: str = "", *, timeout: float = 10.0
) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds.

    A bound on work done by servers, kernels and other tasks, not a timing assertion.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.02)
