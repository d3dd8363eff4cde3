"""BlockWatch: the chain head, polled once for every waiter.

Many peers provisioning at once each wait for the receipts of their transactions. Polled
one by one, every pending transaction cost a receipt lookup and a nonce read each poll
interval: with 100 peers, thousands of RPC calls a second while nothing can change between
two blocks. Waiters here sleep until the head moves from the block they last looked at,
and one `eth_blockNumber` per interval serves them all. A waiter also wakes after its
timeout, so what needs no new block (sending again a transaction a restarted node lost)
still happens on a stalled chain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class BlockWatch:
    def __init__(self, read_head: Callable[[], Awaitable[int]], every: float) -> None:
        self._read_head = read_head
        self._every = every
        self._head: int | None = None
        # Set (and replaced) whenever the head moves.
        self._moved = asyncio.Event()
        self._waiters = 0
        self._poller: asyncio.Task[None] | None = None

    async def after(self, seen: int | None, timeout: float) -> int | None:
        """The head as soon as it is known and not `seen`, else after `timeout` seconds the
        last head known (None before the first read)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        try:
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._poll())
            while not self._moved_from(seen) and (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._moved.wait(), remaining)
            return self._head
        finally:
            self._waiters -= 1

    def _moved_from(self, seen: int | None) -> bool:
        return self._head is not None and self._head != seen

    async def _poll(self) -> None:
        """Runs while anyone waits. A failed read is tried again at the next interval; the
        waiters' timeouts keep them going meanwhile."""
        while self._waiters:
            try:
                head = await self._read_head()
            except Exception as err:  # the RPC node is down or restarting
                log.warning("BLOCK_POLL_FAILED", error=str(err))
            else:
                if head != self._head:  # a chain rolled back counts as moved too
                    self._head = head
                    moved, self._moved = self._moved, asyncio.Event()
                    moved.set()
            await asyncio.sleep(self._every)
