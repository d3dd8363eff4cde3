"""BlockWatch: every waiter is served by one head poll per interval; a waiter wakes when the
head moves from the block it saw (also backwards), else on its timeout; polling stops when
nobody waits, and a failing read only delays the waiters to their timeouts."""

from __future__ import annotations

import asyncio

from activities.block_watch import BlockWatch

EVERY = 0.01


class Chain:
    """A head the test moves; counts the reads."""

    def __init__(self, head: int = 5) -> None:
        self.head = head
        self.reads = 0
        self.fail: Exception | None = None

    async def read_head(self) -> int:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return self.head


async def test_many_waiters_share_each_poll_and_wake_on_the_next_block() -> None:
    chain = Chain(head=5)
    watch = BlockWatch(chain.read_head, EVERY)
    assert await watch.after(None, timeout=1.0) == 5
    waiters = [asyncio.ensure_future(watch.after(5, timeout=5.0)) for _ in range(100)]
    await asyncio.sleep(10 * EVERY)
    assert not any(waiter.done() for waiter in waiters)
    polls = chain.reads
    chain.head = 6
    assert await asyncio.gather(*waiters) == [6] * 100
    # A poll or two for all of them, not one per waiter.
    assert chain.reads - polls <= 3


async def test_a_head_already_past_what_the_waiter_saw_returns_at_once() -> None:
    chain = Chain(head=7)
    watch = BlockWatch(chain.read_head, EVERY)
    assert await watch.after(None, timeout=1.0) == 7
    async with asyncio.timeout(EVERY):
        assert await watch.after(6, timeout=5.0) == 7


async def test_without_a_new_block_the_waiter_wakes_on_its_timeout() -> None:
    chain = Chain(head=5)
    watch = BlockWatch(chain.read_head, EVERY)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await watch.after(5, timeout=0.1) == 5
    assert loop.time() - began >= 0.1


async def test_a_chain_that_rolled_back_counts_as_moved() -> None:
    chain = Chain(head=9)
    watch = BlockWatch(chain.read_head, EVERY)
    assert await watch.after(None, timeout=1.0) == 9
    chain.head = 4
    assert await watch.after(9, timeout=5.0) == 4


async def test_polling_stops_when_nobody_waits() -> None:
    chain = Chain()
    watch = BlockWatch(chain.read_head, EVERY)
    await watch.after(None, timeout=1.0)
    await asyncio.sleep(5 * EVERY)
    idle = chain.reads
    await asyncio.sleep(10 * EVERY)
    assert chain.reads == idle


async def test_failing_reads_delay_waiters_to_their_timeout_then_polling_recovers() -> None:
    chain = Chain(head=5)
    chain.fail = ConnectionError("node restarting")
    watch = BlockWatch(chain.read_head, EVERY)
    assert await watch.after(None, timeout=0.05) is None
    chain.fail = None
    chain.head = 6
    assert await watch.after(None, timeout=1.0) == 6
