"""RejectService: the outermost incoming service; whatever the chain raised becomes a Reject.

It does not decide codes or messages (that is `connector.errors.to_reject`), and it leaves
Rejects returned by inner services, including those relayed from the next hop, untouched.
"""

from __future__ import annotations

from connector.errors import to_reject
from connector.services.interface import IncomingRequest, IncomingService, Response


class RejectService:
    __slots__ = ("_next", "_own_address")

    def __init__(self, own_address: str, next_service: IncomingService) -> None:
        self._own_address = own_address
        self._next = next_service

    async def handle_request(self, request: IncomingRequest) -> Response:
        try:
            return await self._next.handle_request(request)
        except Exception as exc:  # every failure on the path answers the sender with a Reject
            return to_reject(exc, self._own_address)
