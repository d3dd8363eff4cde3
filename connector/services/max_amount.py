"""MaxAmountService: F08 for a Prepare larger than its sending peer's `maxPacketAmount`.

The Reject's data is the RFC 0027 F08 error data (UInt64BE received ‖ UInt64BE maximum) and the
message is ilp-connector's. Peers without a maximum are not limited here.

It does not hold balances or check credit (`balance.py`), and it never looks at the outgoing
peer's limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.errors import AmountTooLarge
from connector.services.interface import IncomingRequest, IncomingService, Response


class MaxAmountService:
    __slots__ = ("_maximums", "_next")

    def __init__(self, maximums: Mapping[str, int | None], next_service: IncomingService) -> None:
        self._maximums = {peer: limit for peer, limit in maximums.items() if limit is not None}
        self._next = next_service

    async def handle_request(self, request: IncomingRequest) -> Response:
        maximum = self._maximums.get(request.from_peer)
        if maximum is not None:
            amount = request.prepare.amount
            if amount > maximum:
                raise AmountTooLarge(
                    f"packet size too large. maxAmount={maximum} actualAmount={amount}",
                    received=amount,
                    maximum=maximum,
                )
        return await self._next.handle_request(request)
