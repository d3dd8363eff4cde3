"""RouterService: picks the next hop by longest-prefix match and hands the packet on.

A destination that resolves to this node (`LOCAL`: our address, or under it with no more
specific route) goes to the local receiver; any other goes out, as an `OutgoingRequest`, to
the peer it resolves to. F02 when no route matches ("no route found. source=…
destination=…") and when the route leads back to the peer the packet came from. `peer.*`
destinations never resolve.

It does not change amounts (`fee.py`) or expiries (`expiry.py`), touch balances, or check that
the next hop's link is up (`peer.py`).
"""

from __future__ import annotations

from connector.errors import Unreachable
from connector.routing import RoutingTable
from connector.services.interface import (
    LOCAL,
    IncomingRequest,
    IncomingService,
    OutgoingService,
    Response,
)


class RouterService:
    __slots__ = ("_local", "_next", "_table")

    def __init__(
        self, table: RoutingTable, next_service: OutgoingService, local: IncomingService
    ) -> None:
        self._table = table
        self._next = next_service
        self._local = local

    async def handle_request(self, request: IncomingRequest) -> Response:
        destination = request.prepare.destination
        next_hop = self._table.resolve(destination)
        if next_hop is None:
            raise Unreachable(
                f"no route found. source={request.from_peer} destination={destination}"
            )
        if next_hop == LOCAL:
            return await self._local.handle_request(request)
        if next_hop == request.from_peer:
            raise Unreachable(
                "refusing to route payments back to sender."
                f" sourceAccount={request.from_peer} destinationAccount={destination}"
            )
        return await self._next.send_request(request.to_outgoing(next_hop))
