"""Interop with the interledgerjs implementations (npm, pinned in package.json).

    paychan A (g.pa) ──BTP, A dials──▶ ilp-connector (g.js) ──BTP, js dials──▶ paychan B (g.pb)
                                                                   ▲
                                            ilp-plugin-btp client ─┘ (dials B)

The real ilp-connector@23.0.2 runs as a node subprocess (tests/interop/ilp_connector.js;
one-to-one backend, spread 0, route broadcast on, static routes). Packets cross it in both
directions, and an ilp-plugin-btp@1.5.0 client (tests/interop/plugin_client.js, packets
built with ilp-packet@3.1.3) sends through paychan B and ilp-connector to A's receiver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.codec import ilp
from connector.config import NodeConfig
from connector.devstack import free_port
from connector.node import ConnectorNode
from connector.services.local import make_prepare

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass
class Network:
    a: ConnectorNode
    b: ConnectorNode
    js: asyncio.subprocess.Process
    b_port: int


def node_config(node_id: str, data_dir: Path, peers: list[dict], routes: list[dict]) -> NodeConfig:
    return NodeConfig.model_validate(
        {
            "nodeId": node_id,
            "ilpAddress": f"g.{node_id}",
            "btpServerPort": free_port(),
            "ledgerPath": str(data_dir / node_id / "ledger.sqlite3"),
            "receiverSecret": f"receiver-secret-of-{node_id}",
            "peers": peers,
            "routes": routes,
        }
    )


async def start_ilp_connector(spec: dict, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log:  # ilp-connector's own log, for when a test fails
        process = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "ilp_connector.js"),
            json.dumps(spec),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line.startswith(b"READY"), line
    return process


async def wait_for(predicate, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    data = tmp_path_factory.mktemp("interop")
    js_port = free_port()
    a = ConnectorNode(
        node_config(
            "pa",
            data,
            peers=[{"id": "js", "url": f"ws://127.0.0.1:{js_port}", "authToken": "pa-to-js"}],
            routes=[
                {"prefix": "g.pb", "peer": "js"},
                {"prefix": "g.js", "peer": "js"},
                # ilp-connector has no route for it (F02 from g.js)
                {"prefix": "g.elsewhere", "peer": "js"},
            ],
        )
    )
    b = ConnectorNode(
        node_config(
            "pb",
            data,
            peers=[
                {"id": "js", "authToken": "js-to-pb"},
                {"id": "client", "authToken": "client-to-pb", "relation": "child"},
            ],
            routes=[{"prefix": "g.pa", "peer": "js"}, {"prefix": "g.js", "peer": "js"}],
        )
    )
    js = None
    try:
        await b.start()
        spec = {
            "ilpAddress": "g.js",
            "accounts": {
                "pa": {"listen": js_port, "token": "pa-to-js"},
                "pb": {"connect": f"ws://127.0.0.1:{b.btp_port}", "token": "js-to-pb"},
            },
            "routes": [
                {"targetPrefix": "g.pa", "peerId": "pa"},
                {"targetPrefix": "g.pb", "peerId": "pb"},
            ],
            "initialConnectTimeout": 3000,
        }
        # ilp-connector waits (up to initialConnectTimeout) for A to dial in: start A meanwhile.
        js_task = asyncio.create_task(start_ilp_connector(spec, data / "ilp-connector.log"))
        await a.start()
        js = await js_task
        await wait_for(lambda: a.is_connected("js") and b.is_connected("js"))
        yield Network(a, b, js, b.btp_port)
    finally:
        await a.stop()
        await b.stop()
        if js is not None and js.returncode is None:
            js.terminate()
            await js.wait()


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=30)


async def test_paychan_to_paychan_through_ilp_connector(network: Network) -> None:
    credentials = network.b.receiver_credentials("from-a")
    prepare, fulfillment = make_prepare(credentials, 12_345, soon(), b"hello via js")
    response = await network.a.sender.send_prepare(prepare)
    assert response == ilp.Fulfill(fulfillment, b"")
    # Both paychan ledgers saw it: A owes ilp-connector, ilp-connector owes B.
    assert network.a.ledger.snapshot("js").balance <= -12_345
    assert network.b.ledger.snapshot("js").balance >= 12_345


async def test_and_back_the_other_way(network: Network) -> None:
    result = await network.b.send_payment("g.pa", 777)
    assert result.fulfilled, result
    prepare, fulfillment = make_prepare(network.a.receiver_credentials("from-b"), 1, soon())
    assert await network.b.sender.send_prepare(prepare) == ilp.Fulfill(fulfillment, b"")


async def test_ilp_connector_rejects_reach_paychan_unchanged(network: Network) -> None:
    # A sends g.elsewhere to ilp-connector, which has no route for it: its F02 comes back
    # through A with ilp-connector's address and message.
    response = await network.a.sender.send_test_payment("g.elsewhere.bob", 1, soon())
    assert type(response) is ilp.Reject, response
    assert (response.code, response.triggered_by) == ("F02", "g.js"), response
    assert response.message == "no route found. source=pa destination=g.elsewhere.bob"


async def test_ilp_plugin_btp_client_through_paychan(network: Network) -> None:
    credentials = network.a.receiver_credentials("from-plugin")
    spec = {
        "server": f"ws://127.0.0.1:{network.b_port}",
        "token": "client-to-pb",
        "packets": [
            # through paychan B and ilp-connector to paychan A's receiver
            {
                "destination": credentials.destination,
                "amount": "5000",
                "sharedSecret": credentials.shared_secret.hex(),
            },
            {"destination": "g.pa", "amount": "1000", "sharedSecret": None},
            # to paychan B's own receiver
            {"destination": "g.pb", "amount": "1000", "sharedSecret": None},
            # nowhere: paychan B answers F02
            {"destination": "g.nowhere.bob", "amount": "1000", "sharedSecret": None},
        ],
    }
    client = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "plugin_client.js"),
        json.dumps(spec),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(client.communicate(), timeout=60)
    assert client.returncode == 0, err.decode()
    answers = [json.loads(line) for line in out.decode().splitlines()]
    fulfilled = {"type": "ilp_fulfill", "fulfillmentMatchesCondition": True}
    assert answers[:3] == [fulfilled, fulfilled, fulfilled]
    assert answers[3]["type"] == "ilp_reject"
    assert (answers[3]["code"], answers[3]["triggeredBy"]) == ("F02", "g.pb")
    assert answers[3]["message"] == "no route found. source=client destination=g.nowhere.bob"
    # The child owes B for what it sent through it (the F02 was refunded).
    assert network.b.ledger.snapshot("client").balance == 7_000
