"""SharedRead: callers asking together share one read; nobody gets a read that started
before they asked; failures reach every caller; a cancelled caller stops nobody else."""

from __future__ import annotations

import asyncio

import pytest

from activities.shared_read import SharedRead


class Source:
    """A read that counts itself and can be held open."""

    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self) -> int:
        self.reads += 1
        number = self.reads
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return number


async def test_callers_asking_together_share_one_read() -> None:
    source = Source()
    shared = SharedRead(source.read)
    assert await asyncio.gather(*(shared() for _ in range(50))) == [1] * 50
    assert source.reads == 1


async def test_a_caller_arriving_during_a_read_gets_the_next_one() -> None:
    source = Source()
    source.release.clear()
    shared = SharedRead(source.read)
    early = asyncio.ensure_future(shared())
    await source.started.wait()
    late = [asyncio.ensure_future(shared()) for _ in range(20)]
    await asyncio.sleep(0)
    source.release.set()
    assert await early == 1
    # All late callers share read 2, which started after they asked.
    assert await asyncio.gather(*late) == [2] * 20
    assert source.reads == 2


async def test_sequential_callers_each_get_a_fresh_read() -> None:
    source = Source()
    shared = SharedRead(source.read)
    assert [await shared() for _ in range(3)] == [1, 2, 3]


async def test_a_failure_reaches_every_caller_and_the_next_read_is_fresh() -> None:
    source = Source()
    source.fail = ConnectionError("rpc down")
    shared = SharedRead(source.read)
    results = await asyncio.gather(*(shared() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    source.fail = None
    assert await shared() == 2


async def test_a_cancelled_caller_does_not_cancel_the_read() -> None:
    source = Source()
    source.release.clear()
    shared = SharedRead(source.read)
    leaving = asyncio.ensure_future(shared())
    staying = asyncio.ensure_future(shared())
    await source.started.wait()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    source.release.set()
    assert await staying == 1
