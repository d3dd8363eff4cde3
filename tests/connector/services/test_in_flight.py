"""InFlightLimitService: T03 beyond a peer's cap; every slot given back however a packet ends."""

from __future__ import annotations

import asyncio

import pytest

from connector.codec import ilp
from connector.errors import ConnectorBusy, TransferTimedOut, to_reject
from connector.services.in_flight import InFlightLimitService
from connector.services.interface import IncomingRequest, Response


class Gate:
    """A next service that holds every request until the test answers it."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[Response]] = []

    async def handle_request(self, request: IncomingRequest) -> Response:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        return await future


async def started(service: InFlightLimitService, request: IncomingRequest) -> asyncio.Task:
    task = asyncio.create_task(service.handle_request(request))
    await asyncio.sleep(0)  # let it take its slot
    return task


async def test_over_the_cap_is_t03_and_goes_no_further(incoming, fulfill) -> None:
    gate = Gate()
    service = InFlightLimitService(gate, per_peer=2)
    held = [await started(service, incoming()) for _ in range(2)]
    with pytest.raises(ConnectorBusy) as raised:
        await service.handle_request(incoming())
    reject = to_reject(raised.value, "test.conn")
    assert (reject.code, reject.triggered_by) == ("T03", "test.conn")
    assert reject.message == "too many packets in flight from this peer. limit=2"
    assert len(gate.waiting) == 2  # the refused packet never reached the next service
    for future in gate.waiting:
        future.set_result(fulfill)
    assert await asyncio.gather(*held) == [fulfill, fulfill]


async def test_the_cap_is_per_peer_with_overrides(incoming, fulfill) -> None:
    gate = Gate()
    service = InFlightLimitService(gate, per_peer=1, peer_caps={"big": 3})
    held = [await started(service, incoming(from_peer="upstream"))]
    held += [await started(service, incoming(from_peer="big")) for _ in range(3)]
    held.append(await started(service, incoming(from_peer="other")))
    assert (service.in_flight("upstream"), service.in_flight("big")) == (1, 3)
    for peer in ("upstream", "big", "other"):
        with pytest.raises(ConnectorBusy):
            await service.handle_request(incoming(from_peer=peer))
    for future in gate.waiting:
        future.set_result(fulfill)
    await asyncio.gather(*held)


@pytest.mark.parametrize(
    "ending",
    ["fulfill", "reject", "timeout", "exception", "cancel"],
)
async def test_a_slot_is_freed_however_the_packet_ends(ending, incoming, fulfill, reject) -> None:
    gate = Gate()
    service = InFlightLimitService(gate, per_peer=1)
    task = await started(service, incoming())
    with pytest.raises(ConnectorBusy):
        await service.handle_request(incoming())
    future = gate.waiting[0]
    match ending:
        case "fulfill":
            future.set_result(fulfill)
        case "reject":
            future.set_result(reject)
        case "timeout":  # the expiry service's R00, raised through the chain
            future.set_exception(TransferTimedOut("packet expired."))
        case "exception":
            future.set_exception(RuntimeError("bug"))
        case "cancel":  # the link went down or the node stops
            task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert service.in_flight("upstream") == 0
    # The freed slot is usable again.
    again = await started(service, incoming())
    gate.waiting[1].set_result(fulfill)
    assert await again is fulfill


async def test_nothing_leaks_after_many_mixed_endings(incoming, fulfill, reject) -> None:
    gate = Gate()
    peers = ("a", "b", "c")
    service = InFlightLimitService(gate, per_peer=40, total=1_000)
    tasks = [
        asyncio.create_task(service.handle_request(incoming(from_peer=peers[i % 3])))
        for i in range(150)
    ]
    await asyncio.sleep(0)
    assert [service.in_flight(peer) for peer in peers] == [40, 40, 40]
    answers: list[Response | BaseException] = [
        fulfill,
        reject,
        TransferTimedOut("packet expired."),
    ]
    for index, future in enumerate(gate.waiting):
        answer = answers[index % 3]
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        elif index % 7 == 0:
            future.cancel()
        else:
            future.set_result(answer)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    busy = sum(isinstance(result, ConnectorBusy) for result in results)
    assert busy == 30  # 10 over the cap per peer
    assert sum(type(result) is ilp.Fulfill for result in results) > 0
    assert [service.in_flight(peer) for peer in peers] == [0, 0, 0]
    assert service.in_flight() == 0


async def test_the_node_cap_counts_every_peer(incoming, fulfill) -> None:
    gate = Gate()
    service = InFlightLimitService(gate, per_peer=2, total=3)
    held = [await started(service, incoming(from_peer=peer)) for peer in ("a", "a", "b")]
    assert service.in_flight() == 3
    with pytest.raises(ConnectorBusy) as raised:
        await service.handle_request(incoming(from_peer="c"))  # c has none in flight
    assert raised.value.message == "too many packets in flight. limit=3"
    assert service.in_flight("c") == 0  # a refused packet holds no slot
    gate.waiting[0].set_result(fulfill)
    await held[0]
    held.append(await started(service, incoming(from_peer="c")))
    assert (service.in_flight(), service.in_flight("a"), service.in_flight("c")) == (3, 1, 1)
    for future in gate.waiting[1:]:
        future.set_result(fulfill)
    await asyncio.gather(*held)
    assert service.in_flight() == 0
