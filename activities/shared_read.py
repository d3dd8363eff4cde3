"""SharedRead: one chain read for every caller that asks at about the same time.

When many peers provision at once from one wallet, each balance check reads the same
wallet balances, allowance and fees. Callers that ask while no read of theirs has started
share the next one; a read already under way is never joined, because it may predate
something the caller must see (its own last transaction). So every caller gets a value
read after it asked, and a burst of N callers costs two reads instead of N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._lock = asyncio.Lock()
        # The read not started yet, which new callers join.
        self._next: asyncio.Future[T] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # Failures reach every caller; marked retrieved in case all of them were cancelled.
            self._next.add_done_callback(lambda done: done.cancelled() or done.exception())
            task = asyncio.create_task(self._run(self._next))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A cancelled caller leaves; the read goes on for the others.
        return await asyncio.shield(self._next)

    async def _run(self, result: asyncio.Future[T]) -> None:
        async with self._lock:  # after the read under way, whose callers asked earlier
            if self._next is result:
                self._next = None  # from here on, new callers wait for the read after this
            try:
                result.set_result(await self._read())
            except Exception as err:
                result.set_exception(err)
