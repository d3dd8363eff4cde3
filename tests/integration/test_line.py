"""The 5-node line from examples/, in-process: peer1 - peer2 - peer3 - peer4 - peer5.

Every node is a real `ConnectorNode` (real BTP over loopback websockets, real SQLite ledgers)
built from the example YAML with ports and data dir overridden through the environment.
The test-only changes to the examples are applied to the parsed configs and listed in
`line()`. Two misbehaving BTP peers hang off peer5 as children: `slow` never answers, `liar`
answers with a wrong fulfillment. Each reject code is produced by the scenario that causes it.
Settlement is disabled (no chain here).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

import pytest

from connector.btp.client import BtpClient
from connector.btp.errors import BtpRefused
from connector.codec import ilp
from connector.codec.btp import ProtocolData
from connector.config import NodeConfig, PeerConfig, RouteConfig, parse_config
from connector.devstack import free_port
from connector.node import ConnectorNode
from connector.services.fee import amount_after_fee
from connector.services.interface import Response
from connector.services.local import make_prepare, make_test_prepare
from connector.services.peer_protocol import PEER_PROTOCOL_CONDITION

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = [f"peer{i}" for i in range(1, 6)]
PEER3_FEE_BPS = 10
MAX_FROM_PEER1 = 1_000_000
CHILD_CREDIT = 2_500


class MisbehavingPeer:
    """A BTP peer's handler: `slow` never answers a Prepare; `liar` fulfils with junk."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.prepares: list[ilp.Prepare] = []

    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        self.prepares.append(ilp.decode_prepare(packet))
        if self.mode == "slow":
            await asyncio.Event().wait()
        return ilp.encode(ilp.Fulfill(bytes([1]) * 32, b""))

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        raise BtpRefused("F00", "not supported")


@dataclass
class Line:
    configs: dict[str, NodeConfig]
    nodes: dict[str, ConnectorNode]
    children: dict[str, BtpClient] = field(default_factory=dict)
    handlers: dict[str, MisbehavingPeer] = field(default_factory=dict)


def _with_peer(config: NodeConfig, peer_id: str, **changes: object) -> NodeConfig:
    peers = [p.model_copy(update=changes) if p.id == peer_id else p for p in config.peers]
    return config.model_copy(update={"peers": peers})


def line_configs(data_dir: Path) -> dict[str, NodeConfig]:
    environ: dict[str, str] = {
        **os.environ,
        "PAYCHAN_DATA_DIR": str(data_dir),
        "PAYCHAN_ENABLE_SETTLEMENT": "false",
        "PAYCHAN_RUN_WORKER": "false",
    }
    for name in NAMES:
        upper = name.upper()
        environ[f"{upper}_BTP_PORT"] = str(free_port())
        environ[f"{upper}_HEALTH_PORT"] = "0"
        environ[f"{upper}_ADMIN_PORT"] = "0"
    configs = {
        name: parse_config((EXAMPLES / f"{name}.yaml").read_text(), environ, source=name)
        for name in NAMES
    }
    # Test-only changes to the examples:
    # peer1 routes g.nowhere to peer2, which has no route for it (F02 from a later hop);
    configs["peer1"] = configs["peer1"].model_copy(
        update={"routes": [*configs["peer1"].routes, RouteConfig(prefix="g.nowhere", peer="peer2")]}
    )
    # peer2 accepts packets of at most 1,000,000 from peer1 (F08);
    configs["peer2"] = _with_peer(configs["peer2"], "peer1", max_packet_amount=MAX_FROM_PEER1)
    # peer3 charges a fee of 10 basis points;
    configs["peer3"] = configs["peer3"].model_copy(update={"fee_basis_points": PEER3_FEE_BPS})
    # peer5 has two child peers under its address, with little credit (T04).
    children = [
        PeerConfig(
            id=child, auth_token=f"token-of-{child}", relation="child", credit_limit=CHILD_CREDIT
        )
        for child in ("slow", "liar")
    ]
    routes = [RouteConfig(prefix=f"g.peer5.{child.id}", peer=child.id) for child in children]
    configs["peer5"] = configs["peer5"].model_copy(
        update={
            "peers": [*configs["peer5"].peers, *children],
            "routes": [*configs["peer5"].routes, *routes],
        }
    )
    return configs


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


def all_links_up(line: Line) -> bool:
    return all(
        node.is_connected(peer.id) for node in line.nodes.values() for peer in node.config.peers
    )


@pytest.fixture(scope="module")
async def line(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Line]:
    configs = line_configs(tmp_path_factory.mktemp("line"))
    result = Line(configs, {name: ConnectorNode(configs[name]) for name in NAMES})
    try:
        for name in reversed(NAMES):  # servers first, so clients connect at once
            await result.nodes[name].start()
        peer5_url = f"ws://127.0.0.1:{result.nodes['peer5'].btp_port}"
        for child in ("slow", "liar"):
            result.handlers[child] = MisbehavingPeer(child)
            client = BtpClient(
                peer5_url, "peer5", child, f"token-of-{child}", result.handlers[child]
            )
            result.children[child] = client
            await client.start()
        await wait_for(lambda: all_links_up(result))
        yield result
    finally:
        for client in result.children.values():
            await client.stop()
        for node in result.nodes.values():
            await node.stop()


def soon(seconds: float = 30.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def pay(line: Line, destination: str, amount: int, expires_in: float = 30.0) -> Response:
    return await line.nodes["peer1"].sender.send_test_payment(destination, amount, soon(expires_in))


def balances(line: Line) -> dict[tuple[str, str], int]:
    return {
        (name, account.peer_id): account.balance
        for name, node in line.nodes.items()
        for account in node.ledger.snapshots()
    }


def assert_reject(
    response: Response, code: str, triggered_by: str, message: str = ""
) -> ilp.Reject:
    assert type(response) is ilp.Reject, response
    assert (response.code, response.triggered_by) == (code, triggered_by), response
    assert message in response.message, response
    return response


async def test_packet_from_peer1_is_fulfilled_by_peer5(line: Line) -> None:
    # A keyed payment: peer5's receiver hands out credentials, peer1's sender uses them.
    credentials = line.nodes["peer5"].receiver_credentials("invoice-1")
    prepare, fulfillment = make_prepare(credentials, 5_000, soon(), b"for invoice 1")
    response = await line.nodes["peer1"].sender.send_prepare(prepare)
    assert response == ilp.Fulfill(fulfillment, b"")
    assert sha256(response.fulfillment).digest() == prepare.execution_condition
    # And a credential-free test payment to the node address, as the admin API sends.
    result = await line.nodes["peer1"].send_payment("g.peer5", 5_000)
    assert result.fulfilled


async def test_unknown_destination_is_f02_from_the_hop_without_a_route(line: Line) -> None:
    response = await pay(line, "g.nowhere.alice", 1_000)
    assert_reject(
        response, "F02", "g.peer2", "no route found. source=peer1 destination=g.nowhere.alice"
    )
    assert_reject(await pay(line, "g.peer9.bob", 1_000), "F02", "g.peer1", "no route found.")


async def test_amount_over_peer_maximum_is_f08_with_amounts(line: Line) -> None:
    before = balances(line)
    response = await pay(line, "g.peer5", MAX_FROM_PEER1 + 1)
    reject = assert_reject(
        response, "F08", "g.peer2", "packet size too large. maxAmount=1000000 actualAmount=1000001"
    )
    assert ilp.decode_f08_data(reject.data) == ilp.AmountTooLargeData(
        MAX_FROM_PEER1 + 1, MAX_FROM_PEER1
    )
    assert balances(line) == before
    assert type(await pay(line, "g.peer5", MAX_FROM_PEER1)) is ilp.Fulfill


async def test_too_little_time_is_r02(line: Line) -> None:
    already = await line.nodes["peer1"].sender.send_test_payment(
        "g.peer5", 1_000, datetime.now(UTC) - timedelta(seconds=1)
    )
    assert_reject(already, "R02", "g.peer1", "source transfer has already expired.")
    # 3 s: peer1 forwards with 2 s, which leaves peer2 less than its 1 s window after its own.
    too_soon = await pay(line, "g.peer5", 1_000, expires_in=3.0)
    assert_reject(too_soon, "R02", "g.peer2", "source transfer expires too soon")


async def test_receiver_that_never_answers_is_r00(line: Line) -> None:
    before = balances(line)
    started = asyncio.get_running_loop().time()
    response = await pay(line, "g.peer5.slow.bob", 1_000, expires_in=6.5)
    waited = asyncio.get_running_loop().time() - started
    assert_reject(response, "R00", "g.peer5", "packet expired.")
    # peer5 gave `slow` about 1.5 s (6.5 s less 1 s per hop) and answered when it ran out.
    assert 1.0 < waited < 3.0
    assert line.handlers["slow"].prepares[-1].destination == "g.peer5.slow.bob"
    assert balances(line) == before


async def test_wrong_fulfillment_from_downstream_is_f05(line: Line) -> None:
    before = balances(line)
    response = await pay(line, "g.peer5.liar.bob", 1_000)
    assert_reject(response, "F05", "g.peer5", "fulfillment did not match expected value.")
    assert line.handlers["liar"].prepares[-1].destination == "g.peer5.liar.bob"
    assert balances(line) == before  # nobody owes anybody for it


async def test_rejects_from_downstream_are_relayed_unchanged(line: Line) -> None:
    # peer5's receiver refuses a keyed payment made with the wrong secret; peer1 sees its Reject.
    credentials = line.nodes["peer5"].receiver_credentials("x")
    forged = type(credentials)(credentials.destination, b"wrong secret")
    prepare, _ = make_prepare(forged, 1_000, soon())
    response = await line.nodes["peer1"].sender.send_prepare(prepare)
    assert_reject(response, "F05", "g.peer5", "receiver cannot fulfill this condition.")


async def test_peer_credit_limit_is_t04(line: Line) -> None:
    link = line.children["liar"].link
    assert link is not None
    answers = []
    for _ in range(3):  # the child sends test payments to peer5 itself: 1,000 each, 2,500 credit
        prepare, _ = make_test_prepare("g.peer5", 1_000, soon())
        answers.append(ilp.decode(await link.send_ilp(ilp.encode(prepare), 5.0)))
    assert [type(answer) for answer in answers[:2]] == [ilp.Fulfill, ilp.Fulfill]
    assert_reject(answers[2], "T04", "g.peer5", "exceeded maximum balance.")
    assert line.nodes["peer5"].ledger.snapshot("liar").balance == 2_000
    # Once the child settles what it owes, it has credit again.
    await line.nodes["peer5"].ledger.apply_incoming_settlement("liar", 2_000)
    prepare, _ = make_test_prepare("g.peer5", 1_000, soon())
    assert type(ilp.decode(await link.send_ilp(ilp.encode(prepare), 5.0))) is ilp.Fulfill


async def test_peer_protocol_packets_are_answered_locally_never_forwarded(line: Line) -> None:
    link = line.children["liar"].link
    assert link is not None
    seen = len(line.handlers["liar"].prepares)
    control = ilp.Prepare(
        0, soon(), PEER_PROTOCOL_CONDITION, "peer.route.control", b"\x01" + bytes(22)
    )
    answer = ilp.decode(await link.send_ilp(ilp.encode(control), 5.0))
    assert answer == ilp.Fulfill(bytes(32), b"")
    config = ilp.Prepare(0, soon(), PEER_PROTOCOL_CONDITION, "peer.config", b"")
    assert_reject(ilp.decode(await link.send_ilp(ilp.encode(config), 5.0)), "F00", "g.peer5")
    # A node's own sender cannot send to peer.* either: there is no route for it.
    assert_reject(await pay(line, "peer.route.control", 0), "F02", "g.peer1")
    assert len(line.handlers["liar"].prepares) == seen


async def test_next_hop_link_down_is_t01(line: Line) -> None:
    await line.children["liar"].stop()
    await wait_for(lambda: not line.nodes["peer5"].is_connected("liar"))
    response = await pay(line, "g.peer5.liar.bob", 1_000)
    assert_reject(response, "T01", "g.peer5", "no connection to account. account=liar")


async def test_restarted_node_reconnects_and_traffic_resumes(line: Line) -> None:
    results: list[tuple[float, Response]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def traffic() -> None:
        while not stop.is_set():
            results.append((loop.time(), await pay(line, "g.peer5", 100, expires_in=10.0)))
            await asyncio.sleep(0.01)

    sending = asyncio.create_task(traffic())
    try:
        await wait_for(lambda: sum(type(r) is ilp.Fulfill for _, r in results) >= 20)
        old = line.nodes["peer3"]
        old_ledger = old.ledger
        await old.stop()
        # What the stopped node had acknowledged (the ledger object outlives its file handle).
        kept = {a.peer_id: a.balance for a in old_ledger.snapshots()}

        # A packet inside peer3 while it shuts down may get peer3's own T01 (its link to peer4
        # closes first); once it is down, peer2 answers T01 for the missing link.
        def t01_at_peer2(response: Response) -> bool:
            return (
                type(response) is ilp.Reject
                and response.code == "T01"
                and response.triggered_by == "g.peer2"
            )

        await wait_for(lambda: any(t01_at_peer2(r) for _, r in results[-5:]))
        t01 = next(r for _, r in reversed(results) if t01_at_peer2(r))
        assert_reject(t01, "T01", "g.peer2", "no connection to account. account=peer3")
        await asyncio.sleep(0.5)  # down for a while, as a crashed node would be

        restarted = ConnectorNode(line.configs["peer3"])
        line.nodes["peer3"] = restarted
        await restarted.start()
        # Nothing acknowledged was lost: the ledger came back from disk.
        assert {a.peer_id: a.balance for a in restarted.ledger.snapshots()} == kept
        restarted_at = loop.time()
        await wait_for(
            lambda: sum(type(r) is ilp.Fulfill and t > restarted_at for t, r in results) >= 20,
            timeout=15.0,
        )
    finally:
        stop.set()
        await sending


async def test_balances_add_up_across_all_hops_after_1000_packets(line: Line) -> None:
    await wait_for(
        lambda: all(
            node.is_connected(peer.id)
            for node in line.nodes.values()
            for peer in node.config.peers
            if peer.id not in ("slow", "liar")
        )
    )
    before = balances(line)
    rng = random.Random(1000)
    amounts = [rng.randint(1_000, 100_000) for _ in range(1_000)]
    in_flight = asyncio.Semaphore(100)

    async def one(amount: int) -> Response:
        async with in_flight:
            return await pay(line, "g.peer5", amount)

    responses = await asyncio.gather(*(one(amount) for amount in amounts))
    assert [type(r) for r in responses] == [ilp.Fulfill] * len(amounts)

    after = balances(line)
    delta: Mapping[tuple[str, str], int] = {key: after[key] - before.get(key, 0) for key in after}
    sent = sum(amounts)
    after_fee = sum(amount_after_fee(amount, PEER3_FEE_BPS) for amount in amounts)
    # Each upstream node owes its downstream neighbour what it forwarded; both ledgers agree.
    expected = {("peer1", "peer2"): sent, ("peer2", "peer3"): sent}
    expected |= {("peer3", "peer4"): after_fee, ("peer4", "peer5"): after_fee}
    for (upstream, downstream), amount in expected.items():
        assert delta[(upstream, downstream)] == -amount
        assert delta[(downstream, upstream)] == amount
    # peer3 kept exactly its fee; nothing is left held anywhere.
    assert delta[("peer3", "peer2")] + delta[("peer3", "peer4")] == sent - after_fee > 0
    assert all(
        account.pending_incoming == 0
        for node in line.nodes.values()
        for account in node.ledger.snapshots()
    )
