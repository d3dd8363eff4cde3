"""PeerProtocolService: answers `peer.*` packets (CCP, ILDCP) on the link they came over.

`peer.*` addresses are link-local: such a Prepare is answered here and never forwarded. Route
broadcasts (`peer.route.control`, `peer.route.update`, as ilp-connector sends them) are
acknowledged with the peer-protocol fulfillment (32 zero bytes) and otherwise ignored: this
node routes by its static table. A `peer.*` Prepare without the peer-protocol condition is F01
(as ilp-connector answers); ILDCP (`peer.config`) and any other peer protocol is F00.

It does not route, hold balances (peer-protocol packets carry amount 0), or learn routes.
"""

from __future__ import annotations

from hashlib import sha256

from connector.codec import ilp
from connector.errors import BadRequest, InvalidPacket
from connector.routing import is_peer_protocol
from connector.services.interface import IncomingRequest, IncomingService, Response

PEER_PROTOCOL_FULFILLMENT = bytes(32)
PEER_PROTOCOL_CONDITION = sha256(PEER_PROTOCOL_FULFILLMENT).digest()


class PeerProtocolService:
    __slots__ = ("_next",)

    def __init__(self, next_service: IncomingService) -> None:
        self._next = next_service

    async def handle_request(self, request: IncomingRequest) -> Response:
        prepare = request.prepare
        destination = prepare.destination
        if not is_peer_protocol(destination):
            return await self._next.handle_request(request)
        if prepare.execution_condition != PEER_PROTOCOL_CONDITION:
            raise InvalidPacket("condition must be peer protocol condition.")
        if destination.startswith("peer.route."):
            return ilp.Fulfill(PEER_PROTOCOL_FULFILLMENT, b"")
        raise BadRequest(f"peer protocol not served by this node. destination={destination}")
