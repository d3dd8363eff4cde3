"""Health and admin HTTP servers (aiohttp), each on its own host and port.

Health (`health` config, loopback by default; 0.0.0.0 inside containers):

    GET /health         200, JSON report: status, uptime, nodeId, version, peersConnected,
                        totalPeers, channelsOpen, totalChannels, and per peer its state
    GET /health/live    200 while the process serves requests
    GET /health/ready   200 when the BTP server listens and every outbound peer is
                        connected, else 503 (same JSON body as /health)
    GET /metrics        Prometheus text exposition (see connector/metrics.py)

Admin (`admin` config, 127.0.0.1 by default), every request needs
`Authorization: Bearer <token>` (constant-time compare, 401 otherwise):

    GET  /admin/peers     GET /admin/routes     GET /admin/balances
    POST /admin/payments  {"destination": "g.peer5", "amount": "1000"} → PaymentResult

The node supplies the data through two small Protocols, `HealthSource` and `AdminSource`;
this module only serves them. Amounts are decimal strings in JSON (uint64 and balances do
not fit a JavaScript number). aiohttp's access log is off and nothing here logs headers, so
the admin token never reaches a log.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

import structlog
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from connector import metrics
from connector.config import UINT64_MAX, AdminConfig, HealthConfig, IlpAddress

log = structlog.get_logger(__name__)

# An integer amount, written to JSON as a decimal string.
Amount = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]


class _Document(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, from_attributes=True
    )

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# --- health ----------------------------------------------------------------------------------


class PeerHealth(_Document):
    connected: bool
    relation: Literal["peer", "parent", "child"] = "peer"
    # outbound: we dial it (readiness waits for it); inbound: it dials us.
    direction: Literal["outbound", "inbound"]
    # Filled by channel provisioning; None until a channel exists for the peer.
    stage: str | None = None
    channel_id: str | None = None
    token: str | None = None
    our_deposit: Amount | None = None
    their_deposit: Amount | None = None
    # Filled by settlement (connector/settlement.py): the latest claims on the peer's channel,
    # amounts cumulative over the channel; None until a claim went that way.
    sent_claim_nonce: Amount | None = None
    sent_claim_amount: Amount | None = None
    sent_claim_acknowledged: bool | None = None
    received_claim_nonce: Amount | None = None
    received_claim_amount: Amount | None = None


class HealthSnapshot(_Document):
    """What the node knows about itself right now."""

    node_id: str
    btp_listening: bool
    peers: dict[str, PeerHealth] = Field(default_factory=dict)
    channels_open: int = 0
    total_channels: int = 0


class HealthReport(_Document):
    """The `/health` body."""

    status: Literal["healthy", "degraded", "starting"]
    ready: bool
    uptime: float  # seconds
    timestamp: str
    node_id: str
    version: str
    peers_connected: int
    total_peers: int
    channels_open: int
    total_channels: int
    peers: dict[str, PeerHealth]


class HealthSource(Protocol):
    def health_snapshot(self) -> HealthSnapshot: ...


def package_version() -> str:
    try:
        return importlib.metadata.version("paychan")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def is_ready(snapshot: HealthSnapshot) -> bool:
    return snapshot.btp_listening and all(
        peer.connected for peer in snapshot.peers.values() if peer.direction == "outbound"
    )


def health_report(
    snapshot: HealthSnapshot, uptime: float, version: str, now: datetime
) -> HealthReport:
    ready = is_ready(snapshot)
    status = "starting" if not snapshot.btp_listening else "healthy" if ready else "degraded"
    return HealthReport(
        status=status,
        ready=ready,
        uptime=round(uptime, 3),
        timestamp=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        node_id=snapshot.node_id,
        version=version,
        peers_connected=sum(peer.connected for peer in snapshot.peers.values()),
        total_peers=len(snapshot.peers),
        channels_open=snapshot.channels_open,
        total_channels=snapshot.total_channels,
        peers=snapshot.peers,
    )


def build_health_app(
    source: HealthSource, *, monotonic: Callable[[], float] = time.monotonic
) -> web.Application:
    started = monotonic()
    version = package_version()

    def report() -> HealthReport:
        now = datetime.now(UTC)
        return health_report(source.health_snapshot(), monotonic() - started, version, now)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(report().to_json())

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def ready(request: web.Request) -> web.Response:
        body = report()
        return web.json_response(body.to_json(), status=200 if body.ready else 503)

    async def prometheus(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", prometheus)
    return app


# --- admin -----------------------------------------------------------------------------------


class PeerInfo(_Document):
    id: str
    relation: Literal["peer", "parent", "child"]
    direction: Literal["outbound", "inbound"]
    connected: bool
    url: str | None = None
    evm_address: str | None = None


class RouteInfo(_Document):
    prefix: str
    peer: str


class BalanceInfo(_Document):
    """One account; `connector.balances.AccountSnapshot` converts with `model_validate`."""

    peer_id: str
    balance: Amount  # positive: the peer owes us
    pending_incoming: Amount
    credit_limit: Amount
    settlement_threshold: Amount | None = None


class PaymentRequest(_Document):
    model_config = ConfigDict(extra="forbid")

    destination: IlpAddress
    amount: int = Field(ge=0, le=UINT64_MAX)


class PaymentResult(_Document):
    fulfilled: bool
    fulfillment: str | None = None  # hex
    code: str | None = None  # the Reject's ILP error code
    message: str | None = None
    triggered_by: str | None = None


class AdminSource(Protocol):
    def peers(self) -> list[PeerInfo]: ...

    def routes(self) -> list[RouteInfo]: ...

    def balances(self) -> list[BalanceInfo]: ...

    async def send_payment(self, destination: str, amount: int) -> PaymentResult: ...


def is_authorized(header: str | None, token: SecretStr) -> bool:
    """A `Bearer <token>` header matching `token`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    expected = token.get_secret_value().encode()
    # compare_digest even on a bad scheme, so timing does not tell which part was wrong.
    matches = hmac.compare_digest(given.strip().encode(), expected)
    return scheme.lower() == "bearer" and matches


def build_admin_app(source: AdminSource, token: SecretStr) -> web.Application:
    @web.middleware
    async def require_token(request: web.Request, handler: Callable) -> web.StreamResponse:
        if not is_authorized(request.headers.get("Authorization"), token):
            log.warning("ADMIN_UNAUTHORIZED", method=request.method, path=request.path)
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="paychan-admin"'},
            )
        return await handler(request)

    def listing(items: list[_Document]) -> web.Response:
        return web.json_response([item.to_json() for item in items])

    async def peers(request: web.Request) -> web.Response:
        return listing(source.peers())

    async def routes(request: web.Request) -> web.Response:
        return listing(source.routes())

    async def balances(request: web.Request) -> web.Response:
        return listing(source.balances())

    async def payments(request: web.Request) -> web.Response:
        try:
            payment = PaymentRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            return web.json_response(
                {"error": f"{where}: {first['msg']}" if where else first["msg"]}, status=400
            )
        log.info("ADMIN_PAYMENT", destination=payment.destination, amount=payment.amount)
        try:
            result = await source.send_payment(payment.destination, payment.amount)
        except Exception as exc:
            # A rejected payment is a result; reaching this is a fault in the sender.
            log.error("ADMIN_PAYMENT_FAILED", error=repr(exc), exc_info=exc)
            return web.json_response({"error": "payment could not be sent"}, status=500)
        return web.json_response(result.to_json())

    app = web.Application(middlewares=[require_token])
    app.router.add_get("/admin/peers", peers)
    app.router.add_get("/admin/routes", routes)
    app.router.add_get("/admin/balances", balances)
    app.router.add_post("/admin/payments", payments)
    return app


# --- serving ---------------------------------------------------------------------------------


class HttpServer:
    """One aiohttp application on one host and port; port 0 takes a free one."""

    def __init__(self, app: web.Application, host: str, port: int, *, name: str) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._name = name
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._name} server is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        # access_log=None: request lines are not worth a log line each, and headers never are.
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        log.info("HTTP_SERVER_STARTED", server=self._name, host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("HTTP_SERVER_STOPPED", server=self._name)

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def health_server(config: HealthConfig, source: HealthSource) -> HttpServer:
    return HttpServer(build_health_app(source), config.host, config.port, name="health")


def admin_server(config: AdminConfig, source: AdminSource) -> HttpServer:
    return HttpServer(build_admin_app(source, config.token), config.host, config.port, name="admin")
