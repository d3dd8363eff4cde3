"""ConnectorNode: one running connector; wires config, ledger, BTP links, packet path and HTTP.

    start():  ledger → packet path → BTP server (inbound peers) → one BTP client per peer
              with a `url` → health and admin HTTP servers
    stop():   the reverse: HTTP, clients, server (links closed, requests in progress
              cancelled and refunded), then the ledger, flushed to disk and closed.

The node is the `PeerHandler` of every link (a Prepare in → Fulfill/Reject out), the
`HealthSource` and the `AdminSource`. It keeps the live map peer id → open link the packet
path sends on.

`events` is where other parts of the system hook in: `peer_connected` listeners run on every
authenticated link-up, inbound or outbound, first connect or reconnect (channel provisioning
plugs in here); `peer_disconnected` on every link-down; `settlement_required` when the ledger
says we owe a peer its threshold. Listeners run inline on the event loop and must not block:
start a task for slow work. A failing listener is logged and does not affect the others.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import structlog

from connector import metrics
from connector.balances import BalanceLedger, SettlementRequired, open_ledger
from connector.btp.client import BtpClient
from connector.btp.connection import BtpLink
from connector.btp.errors import BtpRefused
from connector.btp.server import BtpServer
from connector.channels import ChannelRegistry
from connector.claim_store import ClaimStore
from connector.codec import ilp
from connector.codec.btp import ProtocolData
from connector.codec.errors import CodecError
from connector.config import NodeConfig, PeerConfig
from connector.errors import to_reject
from connector.http import (
    BalanceInfo,
    HealthSnapshot,
    HttpServer,
    PaymentResult,
    PeerHealth,
    PeerInfo,
    RouteInfo,
    admin_server,
    health_server,
)
from connector.packet_path import PacketPath, build_packet_path, receiver_secret_from_config
from connector.services.interface import IncomingRequest, Response
from connector.services.local import ReceiverCredentials, Sender, receiver_credentials

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_E = TypeVar("_E")
Direction = Literal["inbound", "outbound"]
TEST_PAYMENT_EXPIRY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class PeerLinkEvent:
    """A peer's authenticated BTP link came up or went down."""

    peer: PeerConfig
    direction: Direction

    @property
    def peer_id(self) -> str:
        return self.peer.id


PeerListener = Callable[[PeerLinkEvent], Awaitable[None] | None]
SettlementListener = Callable[[SettlementRequired], Awaitable[None] | None]
# Serves a BTP Message whose primary protocol data has the registered name.
MessageHandler = Callable[[str, tuple[ProtocolData, ...]], Awaitable[tuple[ProtocolData, ...]]]


@dataclass
class NodeEvents:
    peer_connected: list[PeerListener] = field(default_factory=list)
    peer_disconnected: list[PeerListener] = field(default_factory=list)
    settlement_required: list[SettlementListener] = field(default_factory=list)


class ConnectorNode:
    def __init__(self, config: NodeConfig, channels: ChannelRegistry | None = None) -> None:
        self.config = config
        # Filled by provisioning (connector/provisioning.py) when settlement is enabled.
        self.channels = channels
        # Filled by settlement (connector/settlement.py): the claims /health reports.
        self.claims: ClaimStore | None = None
        self.events = NodeEvents()
        self._peers = {peer.id: peer for peer in config.peers}
        self._links: dict[str, BtpLink] = {}
        self._message_handlers: dict[str, MessageHandler] = {}
        self._ledger: BalanceLedger | None = None
        self._path: PacketPath | None = None
        self._sender: Sender | None = None
        self._server: BtpServer | None = None
        self._clients: list[BtpClient] = []
        self._http: list[HttpServer] = []
        self._health: HttpServer | None = None
        self._admin: HttpServer | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        try:
            self._ledger = open_ledger(config, on_settlement_required=self._settlement_required)
            self._path = build_packet_path(config, self._ledger, self._links)
            self._sender = Sender(self._path.originate)
            inbound = {
                peer.id: peer.auth_token.get_secret_value()
                for peer in config.peers
                if not peer.is_outbound
            }
            self._server = BtpServer(
                config.btp_server_host,
                config.btp_server_port,
                inbound,
                self,
                on_link_up=self._link_up,
                on_link_down=self._link_down,
            )
            await self._server.start()
            for peer in config.peers:
                if peer.url is None:
                    continue
                client = BtpClient(
                    peer.url,
                    peer.id,
                    config.node_id,
                    peer.auth_token.get_secret_value(),
                    self,
                    on_link_up=self._link_up,
                    on_link_down=self._link_down,
                )
                self._clients.append(client)
                await client.start()
            self._health = health_server(config.health, self)
            await self._health.start()
            self._http.append(self._health)
            # Balances, deposits and stages are read from the node when /metrics is scraped.
            metrics.NODES.attach(self)
            if config.admin is not None:
                self._admin = admin_server(config.admin, self)
                await self._admin.start()
                self._http.append(self._admin)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "NODE_STARTED",
            node_id=config.node_id,
            ilp_address=config.ilp_address,
            btp_port=self._server.port,
            peers=len(config.peers),
        )

    async def stop(self) -> None:
        """Close everything that start() opened; safe to call more than once."""
        metrics.NODES.detach(self)
        for server in reversed(self._http):
            await server.stop()
        self._http.clear()
        clients, self._clients = self._clients, []
        await asyncio.gather(*(client.stop() for client in clients))
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._listener_tasks:
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            await ledger.close()
            log.info("NODE_STOPPED", node_id=self.config.node_id)

    async def __aenter__(self) -> ConnectorNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- what the node exposes --------------------------------------------------------------

    @property
    def ilp_address(self) -> str:
        return self.config.ilp_address

    @property
    def btp_port(self) -> int:
        return self._running(self._server).port

    @property
    def health_url(self) -> str:
        return self._running(self._health).url

    @property
    def admin_url(self) -> str:
        return self._running(self._admin).url

    @property
    def ledger(self) -> BalanceLedger:
        return self._running(self._ledger)

    @property
    def sender(self) -> Sender:
        return self._running(self._sender)

    @property
    def links(self) -> dict[str, BtpLink]:
        """Open links by peer id (a copy)."""
        return dict(self._links)

    def is_connected(self, peer_id: str) -> bool:
        link = self._links.get(peer_id)
        return link is not None and link.is_open

    def receiver_credentials(self, tag: str) -> ReceiverCredentials:
        """Credentials for a keyed payment to this node's receiver (hand them to a sender)."""
        if self.config.receiver_secret is None:
            raise RuntimeError("no receiverSecret configured: keyed credentials would not last")
        return receiver_credentials(
            self.config.ilp_address, receiver_secret_from_config(self.config), tag
        )

    def register_message_handler(self, protocol_name: str, handler: MessageHandler) -> None:
        """Serve BTP Messages whose first protocol data entry is `protocol_name`."""
        self._message_handlers[protocol_name] = handler

    @staticmethod
    def _running(value: _T | None) -> _T:
        if value is None:
            raise RuntimeError("the node is not running")
        return value

    # --- PeerHandler --------------------------------------------------------------------------

    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        path = self._path
        if path is None:
            raise RuntimeError("the node is not running")
        try:
            prepare = ilp.decode_prepare(packet)
        except CodecError as exc:
            return ilp.encode(to_reject(exc, self.config.ilp_address))
        response = await path.incoming.handle_request(IncomingRequest(peer_id, prepare, packet))
        return ilp.encode(response)

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        name = protocol_data[0].protocol_name if protocol_data else ""
        handler = self._message_handlers.get(name)
        if handler is None:
            raise BtpRefused("F00", f"no handler for protocol data {name!r}")
        return await handler(peer_id, protocol_data)

    # --- link and ledger events -----------------------------------------------------------------

    def _link_up(self, link: BtpLink) -> None:
        peer = self._peers.get(link.peer_id)
        if peer is None:  # the server authenticates configured peers only
            log.error("UNKNOWN_PEER_LINK", peer_id=link.peer_id)
            return
        self._links[peer.id] = link
        self._notify(self.events.peer_connected, PeerLinkEvent(peer, _direction(link)))

    def _link_down(self, link: BtpLink) -> None:
        peer = self._peers.get(link.peer_id)
        if peer is None:
            return
        if self._links.get(peer.id) is link:
            del self._links[peer.id]
        self._notify(self.events.peer_disconnected, PeerLinkEvent(peer, _direction(link)))

    def _settlement_required(self, event: SettlementRequired) -> None:
        log.info("SETTLEMENT_REQUIRED", peer_id=event.peer_id, amount=event.amount)
        self._notify(self.events.settlement_required, event)

    def _notify(self, listeners: list[Callable[[_E], Awaitable[None] | None]], event: _E) -> None:
        for listener in listeners:
            try:
                result = listener(event)
            except Exception:
                log.exception("NODE_LISTENER_FAILED", listener=repr(listener))
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Future[None]) -> None:
        self._listener_tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            log.error("NODE_LISTENER_FAILED", error=repr(task.exception()))

    # --- HealthSource ---------------------------------------------------------------------------

    def health_snapshot(self) -> HealthSnapshot:
        views = {view.peer_id: view for view in self.channels.views()} if self.channels else {}
        peers = {}
        for peer in self.config.peers:
            view = views.get(peer.id)
            peers[peer.id] = PeerHealth(
                connected=self.is_connected(peer.id),
                relation=peer.relation,
                direction="outbound" if peer.is_outbound else "inbound",
                stage=view.stage if view else None,
                channel_id=view.channel_id if view else None,
                token=view.token if view else None,
                our_deposit=view.our_deposit if view and view.channel_id else None,
                their_deposit=view.their_deposit if view and view.channel_id else None,
                **self._claim_health(peer.id, view.channel_id if view else None),
            )
        return HealthSnapshot(
            node_id=self.config.node_id,
            btp_listening=self._server is not None,
            peers=peers,
            channels_open=sum(1 for view in views.values() if view.is_ready),
            total_channels=sum(1 for view in views.values() if view.channel_id is not None),
        )

    def _claim_health(self, peer_id: str, channel_id: str | None) -> dict[str, object]:
        if self.claims is None:
            return {}
        summary = self.claims.summary(peer_id, channel_id)
        sent, received = summary.sent, summary.received
        return {
            "sent_claim_nonce": sent.nonce if sent else None,
            "sent_claim_amount": sent.transferred_amount if sent else None,
            "sent_claim_acknowledged": sent.acknowledged if sent else None,
            "received_claim_nonce": received.nonce if received else None,
            "received_claim_amount": received.transferred_amount if received else None,
        }

    # --- AdminSource ----------------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        return [
            PeerInfo(
                id=peer.id,
                relation=peer.relation,
                direction="outbound" if peer.is_outbound else "inbound",
                connected=self.is_connected(peer.id),
                url=peer.url,
                evm_address=peer.evm_address,
            )
            for peer in self.config.peers
        ]

    def routes(self) -> list[RouteInfo]:
        table = self._running(self._path).routing_table
        return [RouteInfo(prefix=prefix, peer=peer) for prefix, peer in table.entries().items()]

    def balances(self) -> list[BalanceInfo]:
        return [BalanceInfo.model_validate(s) for s in self._running(self._ledger).snapshots()]

    async def send_payment(self, destination: str, amount: int) -> PaymentResult:
        """A test payment (see `services.local`) to the node at `destination`."""
        expires_at = datetime.now(UTC) + TEST_PAYMENT_EXPIRY
        response = await self.sender.send_test_payment(destination, amount, expires_at)
        return payment_result(response)


def payment_result(response: Response) -> PaymentResult:
    if type(response) is ilp.Fulfill:
        return PaymentResult(fulfilled=True, fulfillment=response.fulfillment.hex())
    return PaymentResult(
        fulfilled=False,
        code=response.code,
        message=response.message,
        triggered_by=response.triggered_by,
    )


def _direction(link: BtpLink) -> Direction:
    return "outbound" if link.direction == "outbound" else "inbound"
