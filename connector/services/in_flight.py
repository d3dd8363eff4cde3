"""InFlightLimitService: T03 for a Prepare beyond the packets a node holds in flight.

Load shedding. A node that takes every Prepare it is sent falls behind under overload: its
event loop runs seconds late, so a Fulfill can sit unread on the socket while the R00 timer
of the same packet fires, and the node rejects upstream what its downstream neighbour has
already counted as paid (BENCHMARKS.md "Reliability — load"). Refusing what is over a cap
at once, with T03 Connector Busy (RFC 0027: "rejecting requests due to overloading. Try
again later."), keeps the work a node holds, and so how late its loop runs, bounded.

Two caps, both counts of Prepares received and not yet answered:

- per peer the Prepare came from (`per_peer`, or the peer's own in `peer_caps`): one peer
  sending too much is refused, the others are not;
- for the node (`total`, optional): many peers each under their cap cannot together hold
  more than the node can answer in time.

A slot is taken before the packet holds credit or is routed, and given back however the
packet ends (Fulfill, Reject, an exception, a cancellation), so nothing leaks. A refused
packet costs a dict lookup and a raise.

It does not look at amounts, balances, expiries or the next hop, and retries nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.errors import ConnectorBusy
from connector.services.interface import IncomingRequest, IncomingService, Response


class InFlightLimitService:
    __slots__ = ("_caps", "_in_flight", "_next", "_per_peer", "_total", "_total_cap")

    def __init__(
        self,
        next_service: IncomingService,
        *,
        per_peer: int,
        peer_caps: Mapping[str, int] | None = None,
        total: int | None = None,
    ) -> None:
        """`peer_caps` overrides `per_peer` for the peers it names; `total` None: no cap
        for the node as a whole."""
        self._next = next_service
        self._per_peer = per_peer
        self._caps = dict(peer_caps or {})
        self._total_cap = total
        # Only peers with packets in flight have an entry.
        self._in_flight: dict[str, int] = {}
        self._total = 0

    def in_flight(self, peer_id: str | None = None) -> int:
        """Packets in flight from `peer_id`, or from every peer."""
        if peer_id is None:
            return self._total
        return self._in_flight.get(peer_id, 0)

    async def handle_request(self, request: IncomingRequest) -> Response:
        peer = request.from_peer
        in_flight = self._in_flight.get(peer, 0)
        cap = self._caps.get(peer, self._per_peer)
        if in_flight >= cap:
            raise ConnectorBusy(f"too many packets in flight from this peer. limit={cap}")
        total_cap = self._total_cap
        if total_cap is not None and self._total >= total_cap:
            raise ConnectorBusy(f"too many packets in flight. limit={total_cap}")
        self._in_flight[peer] = in_flight + 1
        self._total += 1
        try:
            return await self._next.handle_request(request)
        finally:
            self._total -= 1
            remaining = self._in_flight[peer] - 1
            if remaining:
                self._in_flight[peer] = remaining
            else:
                del self._in_flight[peer]
