"""The packet path, assembled: the one place the service order is written down.

A Prepare from a peer runs, outermost first:

    PacketMetrics --> Reject --> IncomingValidator --> PeerProtocol --> InFlightLimit
           --> MaxAmount --> IncomingBalance --> Router --> Receiver   (routed to this node)
                                                    \\-> Fee --> OutgoingBalance --> Expiry
                                                           --> FulfillmentValidator
                                                           --> HopMetrics --> Peer (BTP link)

A Prepare this node sends itself (`PacketPath.originate`) skips what only makes sense for a
packet someone else sent us (peer protocols, load shedding, their packet maximum, their
credit, our fee):

    PacketMetrics --> Reject --> IncomingValidator --> Router --> Receiver
                                                           \\-> OutgoingBalance --> ...

Nothing here runs per packet: services are built once; the per-packet work is theirs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog

from connector.config import NodeConfig
from connector.routing import RoutingTable
from connector.services.balance import IncomingBalanceService, Ledger, OutgoingBalanceService
from connector.services.expiry import (
    DEFAULT_MAX_HOLD_TIME,
    DEFAULT_MIN_MESSAGE_WINDOW,
    ExpiryService,
)
from connector.services.fee import FeeService
from connector.services.in_flight import InFlightLimitService
from connector.services.interface import LOCAL, Clock, IncomingService, utc_now
from connector.services.local import ReceiverService
from connector.services.max_amount import MaxAmountService
from connector.services.metrics import HopMetricsService, PacketMetricsService
from connector.services.peer import Link, PeerService
from connector.services.peer_protocol import PeerProtocolService
from connector.services.reject import RejectService
from connector.services.router import RouterService
from connector.services.validator import FulfillmentValidatorService, IncomingValidatorService

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PacketPath:
    # Prepares received from peers (`IncomingRequest.from_peer` is the authenticated peer id).
    incoming: IncomingService
    # Prepares this node originates (`from_peer` is `LOCAL`); see `services.local.Sender`.
    originate: IncomingService
    routing_table: RoutingTable


def routing_table_from_config(config: NodeConfig) -> RoutingTable:
    """Configured static routes, plus this node's own address routed to itself (`LOCAL`)."""
    routes = [(route.prefix, route.peer) for route in config.routes]
    return RoutingTable([(config.ilp_address, LOCAL), *routes])


def receiver_secret_from_config(config: NodeConfig) -> bytes:
    if config.receiver_secret is not None:
        return config.receiver_secret.get_secret_value().encode()
    # Without a configured secret, keyed credentials handed out are valid until the restart.
    log.warning("RECEIVER_SECRET_NOT_CONFIGURED", effect="keyed payments valid until restart")
    return os.urandom(32)


def build_packet_path(
    config: NodeConfig,
    ledger: Ledger,
    links: Mapping[str, Link],
    *,
    clock: Clock = utc_now,
    min_message_window: timedelta = DEFAULT_MIN_MESSAGE_WINDOW,
    max_hold_time: timedelta = DEFAULT_MAX_HOLD_TIME,
) -> PacketPath:
    """Compose the services. `links` is a live mapping peer id → BTP link kept by the node."""
    own_address = config.ilp_address
    table = routing_table_from_config(config)

    # --- outgoing, innermost first -------------------------------------------------------
    # The hop's round trip alone: timed around the link, inside everything this node does.
    to_peer = HopMetricsService(config.node_id, PeerService(links, clock))
    # Inside the expiry: a wrong fulfillment that arrives in time is F05, and one that
    # arrives late is R00 either way.
    validated = FulfillmentValidatorService(to_peer)
    # Expiry is shortened before anything measures the time left, and the R00 timer runs
    # on the shortened expiry, the one the next hop was given.
    timed = ExpiryService(validated, clock, min_message_window, max_hold_time)
    # Outside expiry and validation: we owe the next hop only for a Fulfill we accept.
    owed = OutgoingBalanceService(ledger, timed)
    # Outermost: the amount owed to the next hop, and sent to it, is the amount after our fee.
    forwarded = FeeService(config.fee_basis_points, owed)

    # --- incoming ------------------------------------------------------------------------
    receiver = ReceiverService(own_address, receiver_secret_from_config(config))
    # Credit is held before routing, so a packet that cannot be paid for goes nowhere, and
    # a packet paying this node is owed like any other.
    held = IncomingBalanceService(ledger, RouterService(table, forwarded, receiver))
    # The peer's packet maximum before its credit: an oversized packet never holds credit.
    limited = MaxAmountService({peer.id: peer.max_packet_amount for peer in config.peers}, held)
    # Load shedding before the packet touches credit or is routed: a refused packet costs
    # nothing but its T03. Inside the peer protocols, which are cheap and keep links usable.
    shed = InFlightLimitService(
        limited,
        per_peer=config.max_in_flight_per_peer,
        peer_caps={p.id: p.max_in_flight for p in config.peers if p.max_in_flight is not None},
        total=config.max_in_flight_total,
    )
    # peer.* is answered on the link it came over, before any limit or balance applies.
    peer_protocols = PeerProtocolService(shed)
    # An already-expired Prepare is refused before anything else is done for it.
    answered = RejectService(own_address, IncomingValidatorService(peer_protocols, clock))
    # Outside the Reject service, so every answer is counted with the code it went out with.
    incoming = PacketMetricsService(config.node_id, "peer", answered)

    # --- this node's own packets: no fee, no peer credit, no peer protocols ----------------
    own_routed = RouterService(table, owed, receiver)
    own_answered = RejectService(own_address, IncomingValidatorService(own_routed, clock))
    originate = PacketMetricsService(config.node_id, "local", own_answered)

    return PacketPath(incoming=incoming, originate=originate, routing_table=table)
