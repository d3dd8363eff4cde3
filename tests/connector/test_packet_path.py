"""The composed packet path: order constraints hold (in-memory link, real ledger)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connector.balances import open_ledger
from connector.codec import ilp
from connector.config import NodeConfig
from connector.packet_path import build_packet_path
from connector.services.interface import LOCAL, IncomingRequest
from connector.services.local import make_test_prepare
from connector.services.peer_protocol import PEER_PROTOCOL_CONDITION

FULFILLMENT = bytes([7]) * 32
CONDITION = sha256(FULFILLMENT).digest()


class AnsweringLink:
    """An open BTP link whose far end answers every Prepare with `reply`."""

    is_open = True

    def __init__(self, reply: ilp.Fulfill | ilp.Reject) -> None:
        self.reply = ilp.encode(reply)
        self.sent: list[ilp.Prepare] = []

    async def send_ilp(self, packet: bytes, timeout: float) -> bytes:
        self.sent.append(ilp.decode_prepare(packet))
        return self.reply


@pytest.fixture
async def setup(tmp_path: Path):
    config = NodeConfig.model_validate(
        {
            "nodeId": "me",
            "ilpAddress": "g.me",
            "btpServerPort": 0,
            "ledgerPath": str(tmp_path / "ledger.sqlite3"),
            "receiverSecret": "a receiver secret of some length",
            "feeBasisPoints": 100,
            "peers": [
                {"id": "up", "authToken": "t1", "maxPacketAmount": 10_000, "creditLimit": 20_000},
                {"id": "down", "authToken": "t2", "url": "ws://127.0.0.1:1"},
            ],
            "routes": [{"prefix": "g.down", "peer": "down"}],
        }
    )
    ledger = open_ledger(config)
    links = {"down": AnsweringLink(ilp.Fulfill(FULFILLMENT, b""))}
    yield build_packet_path(config, ledger, links), ledger, links
    await ledger.close()


def request(amount: int = 5_000, expires_in: float = 10.0, **kwargs) -> IncomingRequest:
    prepare = ilp.Prepare(
        amount,
        datetime.now(UTC) + timedelta(seconds=expires_in),
        kwargs.get("condition", CONDITION),
        kwargs.get("destination", "g.down.bob"),
        b"",
    )
    return IncomingRequest(kwargs.get("from_peer", "up"), prepare, ilp.encode(prepare))


async def test_forwarded_packet_pays_fee_and_moves_both_balances(setup) -> None:
    path, ledger, links = setup
    assert await path.incoming.handle_request(request(5_000)) == ilp.Fulfill(FULFILLMENT, b"")
    sent = links["down"].sent[-1]
    assert sent.amount == 4_950  # 1% kept
    assert ledger.snapshot("up").balance == 5_000
    assert ledger.snapshot("down").balance == -4_950


async def test_refused_packets_hold_no_credit(setup) -> None:
    path, ledger, _ = setup
    for refused, code in [
        (request(10_001), "F08"),  # over the peer's maximum, before its credit is touched
        (request(expires_in=-1), "R02"),  # expired, before anything else
        (request(expires_in=1.5), "R02"),  # too little time left after shortening
        (request(destination="g.nowhere.x"), "F02"),
    ]:
        reject = await path.incoming.handle_request(refused)
        assert (reject.code, reject.triggered_by) == (code, "g.me")
    assert ledger.snapshot("up").pending_incoming == 0
    assert ledger.snapshot("up").balance == 0


async def test_wrong_fulfillment_is_f05_and_owed_to_nobody(setup) -> None:
    path, ledger, links = setup
    links["down"].reply = ilp.encode(ilp.Fulfill(bytes(32), b""))
    reject = await path.incoming.handle_request(request())
    assert (reject.code, reject.triggered_by) == ("F05", "g.me")
    assert (ledger.snapshot("up").balance, ledger.snapshot("down").balance) == (0, 0)


async def test_downstream_reject_is_relayed_and_refunded(setup) -> None:
    path, ledger, links = setup
    theirs = ilp.Reject("F99", "g.down.bob", "no thanks", b"why")
    links["down"].reply = ilp.encode(theirs)
    assert await path.incoming.handle_request(request()) == theirs
    assert ledger.snapshot("up").balance == 0


async def test_packets_for_this_node_reach_its_receiver(setup) -> None:
    path, ledger, _ = setup
    prepare, fulfillment = make_test_prepare("g.me", 700, datetime.now(UTC) + timedelta(seconds=9))
    answer = await path.incoming.handle_request(IncomingRequest("up", prepare, ilp.encode(prepare)))
    assert answer == ilp.Fulfill(fulfillment, b"")
    assert ledger.snapshot("up").balance == 700


async def test_own_packets_pay_no_fee_and_hold_nothing(setup) -> None:
    path, ledger, links = setup
    assert type(await path.originate.handle_request(request(5_000, from_peer=LOCAL))) is ilp.Fulfill
    assert links["down"].sent[-1].amount == 5_000
    assert ledger.snapshot("down").balance == -5_000


async def test_peer_protocol_is_answered_not_forwarded(setup) -> None:
    path, _, links = setup
    control = request(0, destination="peer.route.control", condition=PEER_PROTOCOL_CONDITION)
    assert await path.incoming.handle_request(control) == ilp.Fulfill(bytes(32), b"")
    assert links["down"].sent == []


async def test_credit_limit_is_t04(setup) -> None:
    path, ledger, _ = setup
    for _ in range(4):
        assert type(await path.incoming.handle_request(request(5_000))) is ilp.Fulfill
    reject = await path.incoming.handle_request(request(5_000))
    assert (reject.code, reject.message) == ("T04", "exceeded maximum balance.")
    assert ledger.snapshot("up").balance == 20_000


class HeldLink:
    """An open BTP link whose far end answers only when the test lets it."""

    is_open = True

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def send_ilp(self, packet: bytes, timeout: float) -> bytes:
        await self.release.wait()
        return ilp.encode(ilp.Fulfill(FULFILLMENT, b""))


async def test_packets_over_the_in_flight_cap_are_t03_counted_and_hold_nothing(
    tmp_path: Path,
) -> None:
    node_id = f"n{uuid.uuid4().hex[:8]}"  # counters are per process: a label of its own
    config = NodeConfig.model_validate(
        {
            "nodeId": node_id,
            "ilpAddress": "g.me",
            "btpServerPort": 0,
            "ledgerPath": str(tmp_path / "ledger.sqlite3"),
            "receiverSecret": "a receiver secret of some length",
            "maxInFlightPerPeer": 2,
            "peers": [
                {"id": "up", "authToken": "t1"},
                {"id": "down", "authToken": "t2", "url": "ws://127.0.0.1:1"},
            ],
            "routes": [{"prefix": "g.down", "peer": "down"}],
        }
    )
    ledger = open_ledger(config)
    link = HeldLink()
    path = build_packet_path(config, ledger, {"down": link})
    try:
        held = [asyncio.create_task(path.incoming.handle_request(request(100))) for _ in range(2)]
        await asyncio.sleep(0.01)
        busy = await path.incoming.handle_request(request(100))
        assert (busy.code, busy.triggered_by) == ("T03", "g.me")
        assert ledger.snapshot("up").pending_incoming == 200  # the refused one held nothing
        # Peer protocols are answered at the cap: the link stays usable.
        control = request(0, destination="peer.route.control", condition=PEER_PROTOCOL_CONDITION)
        assert type(await path.incoming.handle_request(control)) is ilp.Fulfill
        link.release.set()
        assert [type(answer) for answer in await asyncio.gather(*held)] == [ilp.Fulfill] * 2
        # The slots are back.
        assert type(await path.incoming.handle_request(request(100))) is ilp.Fulfill
        rejected = {"node": node_id, "origin": "peer", "result": "rejected", "code": "T03"}
        assert REGISTRY.get_sample_value("paychan_packets_total", rejected) == 1
        assert ledger.snapshot("up").balance == 300
    finally:
        await ledger.close()
