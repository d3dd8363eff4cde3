"""Balance services: what each peer owes us moves with every fulfilled packet.

`IncomingBalanceService` holds the Prepare's amount against the sending peer's credit limit
before anything else is done with it (T04 "exceeded maximum balance." when it would exceed),
commits the hold once a Fulfill comes back, and releases it on a Reject or any failure. The
commit is durable before the Fulfill goes upstream (`BalanceLedger.commit_incoming`).
`OutgoingBalanceService` records that we owe the next hop once it fulfils.

Packets of amount 0 and packets this node originates itself hold nothing. These services do
not decide settlements (the ledger emits that event), apply fees, or route.
"""

from __future__ import annotations

from typing import Protocol

from connector.codec import ilp
from connector.services.interface import (
    LOCAL,
    IncomingRequest,
    IncomingService,
    OutgoingRequest,
    OutgoingService,
    Response,
)


class Ledger(Protocol):
    """The part of `connector.balances.BalanceLedger` the packet path uses."""

    def hold_incoming(self, peer_id: str, amount: int) -> None: ...
    def release_incoming(self, peer_id: str, amount: int) -> None: ...
    async def commit_incoming(self, peer_id: str, amount: int) -> None: ...
    async def record_outgoing(self, peer_id: str, amount: int) -> None: ...


class IncomingBalanceService:
    __slots__ = ("_ledger", "_next")

    def __init__(self, ledger: Ledger, next_service: IncomingService) -> None:
        self._ledger = ledger
        self._next = next_service

    async def handle_request(self, request: IncomingRequest) -> Response:
        amount = request.prepare.amount
        peer = request.from_peer
        if amount == 0 or peer == LOCAL:
            return await self._next.handle_request(request)
        ledger = self._ledger
        ledger.hold_incoming(peer, amount)
        try:
            response = await self._next.handle_request(request)
        except BaseException:  # a failure or a cancellation: the hold must not leak
            ledger.release_incoming(peer, amount)
            raise
        if type(response) is ilp.Fulfill:
            await ledger.commit_incoming(peer, amount)
        else:
            ledger.release_incoming(peer, amount)
        return response


class OutgoingBalanceService:
    __slots__ = ("_ledger", "_next")

    def __init__(self, ledger: Ledger, next_service: OutgoingService) -> None:
        self._ledger = ledger
        self._next = next_service

    async def send_request(self, request: OutgoingRequest) -> Response:
        response = await self._next.send_request(request)
        if type(response) is ilp.Fulfill and request.amount:
            await self._ledger.record_outgoing(request.to_peer, request.amount)
        return response
