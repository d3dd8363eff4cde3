"""Heartbeats for activities that make no progress reports of their own.

With a short heartbeat timeout on every call, a worker killed mid-activity is noticed in
seconds instead of after the activity's whole start-to-close timeout, and a cancel reaches
the activity (Temporal delivers cancellation only through heartbeats).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio import activity

P = ParamSpec("P")
R = TypeVar("R")

# Well under the workflows' heartbeat timeout (3 s), so one late beat is not a failure.
HEARTBEAT_EVERY = 1.0


def heartbeating(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run `fn`, heartbeating every second until it returns."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        work = asyncio.ensure_future(fn(*args, **kwargs))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_EVERY)
                if done:
                    return work.result()
                activity.heartbeat()
        finally:
            work.cancel()

    return run
