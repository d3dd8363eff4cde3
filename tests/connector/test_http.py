"""connector.http: real aiohttp servers on free loopback ports, driven by in-test sources.

The sources here are small implementations of `HealthSource` / `AdminSource`: the HTTP layer
is the unit under test, the node's own implementation is tested with the node.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from pydantic import SecretStr

from connector.balances import AccountSnapshot
from connector.config import AdminConfig, HealthConfig
from connector.http import (
    BalanceInfo,
    HealthSnapshot,
    HttpServer,
    PaymentResult,
    PeerHealth,
    PeerInfo,
    RouteInfo,
    admin_server,
    build_health_app,
    health_server,
    is_authorized,
    package_version,
)

TOKEN = "admin-token-abcdef0123456789"


@dataclass
class NodeView:
    """Mutable node state, as the tests flip it."""

    btp_listening: bool = True
    peers: dict[str, PeerHealth] = field(default_factory=dict)
    payments: list[tuple[str, int]] = field(default_factory=list)

    def health_snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(
            node_id="peer2",
            btp_listening=self.btp_listening,
            peers=self.peers,
            channels_open=1,
            total_channels=2,
        )

    def peers_info(self) -> list[PeerInfo]:
        return [
            PeerInfo(id=i, relation=p.relation, direction=p.direction, connected=p.connected)
            for i, p in self.peers.items()
        ]

    def routes(self) -> list[RouteInfo]:
        return [RouteInfo(prefix="g.peer3", peer="peer3")]

    def balances(self) -> list[BalanceInfo]:
        account = AccountSnapshot("peer3", -(2**70), 5, 10**12, 1_000_000)
        return [BalanceInfo.model_validate(account)]

    async def send_payment(self, destination: str, amount: int) -> PaymentResult:
        self.payments.append((destination, amount))
        if destination.startswith("g.peer5"):
            return PaymentResult(fulfilled=True, fulfillment="ab" * 32)
        if destination == "g.crash":
            raise RuntimeError("sender broke")
        return PaymentResult(
            fulfilled=False, code="F02", message="no route found.", triggered_by="g.peer2"
        )


class AdminView:
    """The AdminSource over a NodeView (whose `peers` attribute is health data)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    def peers(self) -> list[PeerInfo]:
        return self._view.peers_info()

    def routes(self) -> list[RouteInfo]:
        return self._view.routes()

    def balances(self) -> list[BalanceInfo]:
        return self._view.balances()

    async def send_payment(self, destination: str, amount: int) -> PaymentResult:
        return await self._view.send_payment(destination, amount)


def two_peers() -> dict[str, PeerHealth]:
    return {
        "peer1": PeerHealth(connected=True, direction="inbound"),
        "peer3": PeerHealth(connected=False, direction="outbound", relation="parent"),
    }


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def view() -> NodeView:
    return NodeView(peers=two_peers())


@pytest.fixture
async def health(view: NodeView) -> AsyncIterator[HttpServer]:
    async with health_server(HealthConfig(port=0), view) as server:
        yield server


@pytest.fixture
async def admin(view: NodeView) -> AsyncIterator[HttpServer]:
    config = AdminConfig(port=0, token=SecretStr(TOKEN))
    async with admin_server(config, AdminView(view)) as server:
        yield server


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- health ------------------------------------------------------------------------------------


async def test_health_reports_node_and_peers(
    health: HttpServer, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{health.url}/health") as response:
        assert response.status == 200
        body = await response.json()

    assert body["nodeId"] == "peer2"
    assert body["version"] == package_version() != "0+unknown"
    assert body["status"] == "degraded"
    assert body["ready"] is False
    assert (body["peersConnected"], body["totalPeers"]) == (1, 2)
    assert (body["channelsOpen"], body["totalChannels"]) == (1, 2)
    assert 0 <= body["uptime"] < 60
    assert body["timestamp"].endswith("Z")
    assert body["peers"]["peer3"] == {
        "connected": False,
        "relation": "parent",
        "direction": "outbound",
        "stage": None,
        "channelId": None,
        "token": None,
        "ourDeposit": None,
        "theirDeposit": None,
        "sentClaimNonce": None,
        "sentClaimAmount": None,
        "sentClaimAcknowledged": None,
        "receivedClaimNonce": None,
        "receivedClaimAmount": None,
    }


async def test_channel_fields_are_served_with_deposits_as_strings(
    view: NodeView, health: HttpServer, client: aiohttp.ClientSession
) -> None:
    view.peers["peer1"] = PeerHealth(
        connected=True,
        direction="inbound",
        stage="READY",
        channel_id="0x" + "11" * 32,
        token="M2M",
        our_deposit=10**24,
        their_deposit=0,
    )
    async with client.get(f"{health.url}/health") as response:
        peer1 = (await response.json())["peers"]["peer1"]

    assert peer1["stage"] == "READY"
    assert peer1["ourDeposit"] == str(10**24)
    assert peer1["theirDeposit"] == "0"


async def test_live_is_always_200(
    view: NodeView, health: HttpServer, client: aiohttp.ClientSession
) -> None:
    view.btp_listening = False
    async with client.get(f"{health.url}/health/live") as response:
        assert response.status == 200


async def test_ready_waits_for_btp_server_and_outbound_peers(
    view: NodeView, health: HttpServer, client: aiohttp.ClientSession
) -> None:
    async def ready_status() -> tuple[int, str]:
        async with client.get(f"{health.url}/health/ready") as response:
            return response.status, (await response.json())["status"]

    assert await ready_status() == (503, "degraded")  # peer3 (outbound) is down

    view.peers["peer3"] = PeerHealth(connected=True, direction="outbound")
    assert await ready_status() == (200, "healthy")

    # An inbound peer that has not dialled in yet does not make us unready.
    view.peers["peer1"] = PeerHealth(connected=False, direction="inbound")
    assert await ready_status() == (200, "healthy")

    view.btp_listening = False
    assert await ready_status() == (503, "starting")


async def test_uptime_counts_from_app_start(client: aiohttp.ClientSession) -> None:
    clock = iter([100.0, 142.5])
    app = build_health_app(NodeView(), monotonic=lambda: next(clock))
    async with HttpServer(app, "127.0.0.1", 0, name="health") as server:
        async with client.get(f"{server.url}/health") as response:
            assert (await response.json())["uptime"] == 42.5


async def test_server_binds_the_requested_port_and_releases_it(
    client: aiohttp.ClientSession,
) -> None:
    first = health_server(HealthConfig(port=0), NodeView())
    await first.start()
    port = first.port
    await first.stop()

    again = health_server(HealthConfig(port=port), NodeView())
    async with again:
        assert again.port == port
        async with client.get(f"http://127.0.0.1:{port}/health/live") as response:
            assert response.status == 200
    with pytest.raises(RuntimeError, match="not started"):
        _ = HttpServer(build_health_app(NodeView()), "127.0.0.1", 0, name="x").port


# --- admin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0000000000000"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
        {"X-Token": TOKEN},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/peers"),
        ("GET", "/admin/routes"),
        ("GET", "/admin/balances"),
        ("POST", "/admin/payments"),
    ],
)
async def test_admin_requires_the_bearer_token(
    admin: HttpServer,
    client: aiohttp.ClientSession,
    view: NodeView,
    headers: dict[str, str],
    method: str,
    path: str,
) -> None:
    body = {"destination": "g.peer5", "amount": "1"}
    async with client.request(method, f"{admin.url}{path}", headers=headers, json=body) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await response.json() == {"error": "unauthorized"}
    assert view.payments == []


async def test_admin_lists_peers_routes_and_balances(
    admin: HttpServer, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{admin.url}/admin/peers", headers=bearer()) as response:
        assert response.status == 200
        peers = await response.json()
    async with client.get(f"{admin.url}/admin/routes", headers=bearer()) as response:
        routes = await response.json()
    async with client.get(f"{admin.url}/admin/balances", headers=bearer()) as response:
        balances = await response.json()

    assert [p["id"] for p in peers] == ["peer1", "peer3"]
    assert peers[1]["direction"] == "outbound"
    assert routes == [{"prefix": "g.peer3", "peer": "peer3"}]
    assert balances == [
        {
            "peerId": "peer3",
            "balance": str(-(2**70)),
            "pendingIncoming": "5",
            "creditLimit": str(10**12),
            "settlementThreshold": "1000000",
        }
    ]


async def test_admin_payment_fulfilled_and_rejected(
    admin: HttpServer, client: aiohttp.ClientSession, view: NodeView
) -> None:
    url = f"{admin.url}/admin/payments"
    async with client.post(
        url, headers=bearer(), json={"destination": "g.peer5", "amount": "1000"}
    ) as r:
        assert r.status == 200
        fulfilled = await r.json()
    async with client.post(
        url, headers=bearer(), json={"destination": "g.nowhere", "amount": 5}
    ) as r:
        rejected = await r.json()

    assert fulfilled["fulfilled"] is True and fulfilled["fulfillment"] == "ab" * 32
    assert rejected == {
        "fulfilled": False,
        "fulfillment": None,
        "code": "F02",
        "message": "no route found.",
        "triggeredBy": "g.peer2",
    }
    assert view.payments == [("g.peer5", 1000), ("g.nowhere", 5)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"destination": "nope", "amount": 1}, "destination: not a valid ILP address"),
        (
            {"destination": "g.peer5", "amount": -1},
            "amount: Input should be greater than or equal to 0",
        ),
        (
            {"destination": "g.peer5", "amount": str(2**64)},
            "amount: Input should be less than or equal to",
        ),
        ({"destination": "g.peer5"}, "amount: Field required"),
        (
            {"destination": "g.peer5", "amount": 1, "extra": 1},
            "extra: Extra inputs are not permitted",
        ),
    ],
)
async def test_admin_payment_bad_request_is_400(
    admin: HttpServer,
    client: aiohttp.ClientSession,
    view: NodeView,
    body: dict,
    expected: str,
) -> None:
    async with client.post(f"{admin.url}/admin/payments", headers=bearer(), json=body) as response:
        assert response.status == 400
        assert (await response.json())["error"].startswith(expected)
    assert view.payments == []


async def test_admin_payment_with_invalid_json_is_400(
    admin: HttpServer, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{admin.url}/admin/payments", headers=bearer(), data=b"{") as response:
        assert response.status == 400


async def test_sender_fault_is_a_500_without_details(
    admin: HttpServer, client: aiohttp.ClientSession
) -> None:
    body = {"destination": "g.crash", "amount": 1}
    async with client.post(f"{admin.url}/admin/payments", headers=bearer(), json=body) as response:
        assert response.status == 500
        assert await response.json() == {"error": "payment could not be sent"}


async def test_token_never_reaches_the_logs(
    admin: HttpServer,
    client: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Bearer wrong-token-that-is-also-secret"
    async with client.get(f"{admin.url}/admin/peers", headers={"Authorization": wrong}) as r:
        assert r.status == 401
    async with client.get(f"{admin.url}/admin/peers", headers=bearer()) as r:
        assert r.status == 200
    body = {"destination": "g.peer5", "amount": 7}
    async with client.post(f"{admin.url}/admin/payments", headers=bearer(), json=body) as r:
        assert r.status == 200

    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "ADMIN_UNAUTHORIZED" in logged  # the logs were captured at all
    assert TOKEN not in logged
    assert "wrong-token-that-is-also-secret" not in logged


def test_is_authorized() -> None:
    token = SecretStr(TOKEN)

    assert is_authorized(f"Bearer {TOKEN}", token)
    assert is_authorized(f"bearer {TOKEN}", token)
    assert not is_authorized(None, token)
    assert not is_authorized(TOKEN, token)
    assert not is_authorized(f"Token {TOKEN}", token)
    assert not is_authorized(f"Bearer {TOKEN[:-1]}", token)
