"""FeeService: keeps this connector's fee, in integer basis points, off each forwarded amount.

fee = ceil(amount * bps / 10000), so rounding always favours the connector; the next hop
receives `amount - fee`. A non-zero amount that would leave nothing to forward is R01.
Integers only: amounts are up to 2^64 - 1 and must not pass through floats.

It does not apply exchange rates (one asset per network), and is not in the path of packets
this node sends itself.
"""

from __future__ import annotations

from connector.errors import InsufficientSourceAmount
from connector.services.interface import OutgoingRequest, OutgoingService, Response

BASIS_POINTS = 10_000


def amount_after_fee(amount: int, basis_points: int) -> int:
    """What is forwarded of `amount` after a fee of `basis_points`, rounded for the connector."""
    fee = -(-amount * basis_points // BASIS_POINTS)
    return amount - fee


class FeeService:
    __slots__ = ("_basis_points", "_next")

    def __init__(self, basis_points: int, next_service: OutgoingService) -> None:
        if not 0 <= basis_points <= BASIS_POINTS:
            raise ValueError(f"fee of {basis_points} basis points is not within 0..10000")
        self._basis_points = basis_points
        self._next = next_service

    async def send_request(self, request: OutgoingRequest) -> Response:
        if self._basis_points == 0:
            return await self._next.send_request(request)
        amount = amount_after_fee(request.amount, self._basis_points)
        if amount == 0 and request.amount > 0:
            raise InsufficientSourceAmount(
                f"amount too small to forward after fee. sourceAmount={request.amount}"
                f" feeBasisPoints={self._basis_points}"
            )
        return await self._next.send_request(request.with_amount(amount))
