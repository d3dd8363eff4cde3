"""PacketMetricsService and HopMetricsService: count and time packets for `/metrics`.

PacketMetricsService wraps the outermost incoming service: every answered Prepare is counted
by result and reject code. HopMetricsService wraps the BTP peer service: it times the round
trip to the next hop, per peer. Label children are bound once per service (codes on first
sight), so a packet costs a type check and an increment, and a forwarded one two clock
reads, a dict lookup and one histogram observation more.

They do not log, change a packet, or turn exceptions into Rejects (the Reject service inside
does; an exception here is one that the incoming path lets escape, and is not counted).
"""

from __future__ import annotations

from time import perf_counter

from prometheus_client import Counter, Histogram

from connector import metrics
from connector.codec import ilp
from connector.services.interface import (
    IncomingRequest,
    IncomingService,
    OutgoingRequest,
    OutgoingService,
    Response,
)


class PacketMetricsService:
    __slots__ = ("_codes", "_fulfilled", "_labels", "_next")

    def __init__(self, node_id: str, origin: str, next_service: IncomingService) -> None:
        self._next = next_service
        self._labels = (node_id, origin)
        self._fulfilled = metrics.PACKETS.labels(node_id, origin, "fulfilled", "")
        self._codes: dict[str, Counter] = {}

    async def handle_request(self, request: IncomingRequest) -> Response:
        response = await self._next.handle_request(request)
        if type(response) is ilp.Fulfill:
            self._fulfilled.inc()
        else:
            self._rejected(response.code).inc()
        return response

    def _rejected(self, code: str) -> Counter:
        counter = self._codes.get(code)
        if counter is None:
            label = metrics.reject_code_label(code)
            counter = metrics.PACKETS.labels(*self._labels, "rejected", label)
            if label == code:  # unknown codes share `other` and are not remembered one by one
                self._codes[code] = counter
        return counter


class HopMetricsService:
    __slots__ = ("_next", "_node_id", "_peers")

    def __init__(self, node_id: str, next_service: OutgoingService) -> None:
        self._next = next_service
        self._node_id = node_id
        self._peers: dict[str, Histogram] = {}

    async def send_request(self, request: OutgoingRequest) -> Response:
        started = perf_counter()
        try:
            return await self._next.send_request(request)
        finally:
            # Raised failures (no link, timeout) are hops too: they took this long to fail.
            self._hop(request.to_peer).observe(perf_counter() - started)

    def _hop(self, peer_id: str) -> Histogram:
        histogram = self._peers.get(peer_id)
        if histogram is None:
            histogram = self._peers[peer_id] = metrics.HOP_SECONDS.labels(self._node_id, peer_id)
        return histogram
