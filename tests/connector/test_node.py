"""ConnectorNode: link events on every link-up, admin/health over HTTP, BTP messages."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from connector.btp.errors import BtpRefused
from connector.codec.btp import ContentType, ProtocolData
from connector.config import NodeConfig
from connector.devstack import free_port
from connector.node import ConnectorNode, PeerLinkEvent

pytestmark = pytest.mark.timeout(60)


def configs(tmp_path: Path) -> tuple[NodeConfig, NodeConfig]:
    b_port = free_port()
    a = NodeConfig.model_validate(
        {
            "nodeId": "a",
            "ilpAddress": "g.a",
            "btpServerPort": 0,
            "ledgerPath": str(tmp_path / "a.sqlite3"),
            "admin": {"token": "admin-token-of-node-a"},
            "peers": [{"id": "b", "url": f"ws://127.0.0.1:{b_port}", "authToken": "a-b"}],
            "routes": [{"prefix": "g.b", "peer": "b"}],
        }
    )
    b = NodeConfig.model_validate(
        {
            "nodeId": "b",
            "ilpAddress": "g.b",
            "btpServerPort": b_port,
            "ledgerPath": str(tmp_path / "b.sqlite3"),
            "peers": [{"id": "a", "authToken": "a-b"}],
            "routes": [{"prefix": "g.a", "peer": "a"}],
        }
    )
    return a, b


async def wait_for(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def http(method: str, url: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


async def test_peer_connected_fires_on_every_link_up_both_sides(tmp_path: Path) -> None:
    a_config, b_config = configs(tmp_path)
    a, b = ConnectorNode(a_config), ConnectorNode(b_config)
    seen: list[tuple[str, str, str]] = []

    def recorder(node: str, kind: str):
        def record(event: PeerLinkEvent) -> None:
            seen.append((node, kind, f"{event.peer_id}/{event.direction}"))

        return record

    for name, node in (("a", a), ("b", b)):
        node.events.peer_connected.append(recorder(name, "up"))
        node.events.peer_disconnected.append(recorder(name, "down"))
    try:
        await b.start()
        await a.start()
        await wait_for(lambda: len(seen) == 2)
        assert sorted(seen) == [("a", "up", "b/outbound"), ("b", "up", "a/inbound")]

        # b goes away and comes back on the same port: a's client reconnects by itself.
        await b.stop()
        await wait_for(lambda: ("a", "down", "b/outbound") in seen)
        b = ConnectorNode(b_config)
        b.events.peer_connected.append(recorder("b", "up"))
        await b.start()
        await wait_for(lambda: seen.count(("a", "up", "b/outbound")) == 2, timeout=15.0)
        await wait_for(lambda: seen.count(("b", "up", "a/inbound")) == 2)
    finally:
        await a.stop()
        await b.stop()


async def test_failing_listener_does_not_stop_the_others(tmp_path: Path) -> None:
    a_config, b_config = configs(tmp_path)
    a, b = ConnectorNode(a_config), ConnectorNode(b_config)
    called: list[str] = []

    def broken(event: PeerLinkEvent) -> None:
        raise RuntimeError("listener bug")

    async def slow(event: PeerLinkEvent) -> None:
        await asyncio.sleep(0)
        called.append(event.peer_id)

    a.events.peer_connected.extend([broken, slow])
    try:
        await b.start()
        await a.start()
        await wait_for(lambda: called == ["b"])
    finally:
        await a.stop()
        await b.stop()


async def test_admin_and_health_over_http(tmp_path: Path) -> None:
    a_config, b_config = configs(tmp_path)
    async with ConnectorNode(b_config), ConnectorNode(a_config) as a:
        await wait_for(lambda: a.is_connected("b"))
        token = "admin-token-of-node-a"
        result = await asyncio.to_thread(
            http,
            "POST",
            a.admin_url + "/admin/payments",
            token,
            {"destination": "g.b", "amount": "1234"},
        )
        assert result["fulfilled"] is True
        balances = await asyncio.to_thread(http, "GET", a.admin_url + "/admin/balances", token)
        assert balances == [
            {
                "peerId": "b",
                "balance": "-1234",
                "pendingIncoming": "0",
                "creditLimit": str(a_config.peers[0].credit_limit),
                "settlementThreshold": None,
            }
        ]
        routes = await asyncio.to_thread(http, "GET", a.admin_url + "/admin/routes", token)
        assert {"prefix": "g.b", "peer": "b"} in routes
        peers = await asyncio.to_thread(http, "GET", a.admin_url + "/admin/peers", token)
        assert [(p["id"], p["connected"], p["direction"]) for p in peers] == [
            ("b", True, "outbound")
        ]
        health = await asyncio.to_thread(http, "GET", a.health_url + "/health")
        assert (health["status"], health["peersConnected"], health["totalPeers"]) == (
            "healthy",
            1,
            1,
        )
        rejected = await asyncio.to_thread(
            http,
            "POST",
            a.admin_url + "/admin/payments",
            token,
            {"destination": "g.c", "amount": "1"},
        )
        assert (rejected["fulfilled"], rejected["code"], rejected["triggeredBy"]) == (
            False,
            "F02",
            "g.a",
        )


async def test_btp_messages_go_to_the_registered_handler(tmp_path: Path) -> None:
    a_config, b_config = configs(tmp_path)
    async with ConnectorNode(b_config) as b, ConnectorNode(a_config) as a:
        await wait_for(lambda: a.is_connected("b") and b.is_connected("a"))

        async def echo(peer_id: str, data: tuple[ProtocolData, ...]) -> tuple[ProtocolData, ...]:
            return (ProtocolData("echo", ContentType.TEXT_PLAIN_UTF8, peer_id.encode()),)

        b.register_message_handler("payment-channel-claim", echo)
        claim = (ProtocolData("payment-channel-claim", ContentType.APPLICATION_JSON, b"{}"),)
        answer = await a.links["b"].send_message(claim, 5.0)
        assert answer[0].data == b"a"
        with pytest.raises(BtpRefused):
            await a.links["b"].send_message((ProtocolData("other", 0, b""),), 5.0)
