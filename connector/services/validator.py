"""Validators: an expired Prepare goes no further; a Fulfill must match the condition.

`IncomingValidatorService` answers R02 for a Prepare that has already expired when it arrives
(before any balance is held for it). `FulfillmentValidatorService` sits on the outgoing side
and turns a Fulfill whose SHA-256 is not the Prepare's execution condition into F05, so a wrong
fulfillment is never passed upstream nor credited to the peer that sent it (ilp-connector's
"fulfillment did not match expected value.").

They do not shorten expiries or time out slow peers (`expiry.py`), check amounts, or route.
"""

from __future__ import annotations

from hashlib import sha256

import structlog

from connector.codec import ilp
from connector.errors import WrongCondition
from connector.services.expiry import check_not_expired
from connector.services.interface import (
    Clock,
    IncomingRequest,
    IncomingService,
    OutgoingRequest,
    OutgoingService,
    Response,
)

log = structlog.get_logger(__name__)


class IncomingValidatorService:
    __slots__ = ("_clock", "_next")

    def __init__(self, next_service: IncomingService, clock: Clock) -> None:
        self._next = next_service
        self._clock = clock

    async def handle_request(self, request: IncomingRequest) -> Response:
        check_not_expired(request.prepare.expires_at, self._clock())
        return await self._next.handle_request(request)


class FulfillmentValidatorService:
    __slots__ = ("_next",)

    def __init__(self, next_service: OutgoingService) -> None:
        self._next = next_service

    async def send_request(self, request: OutgoingRequest) -> Response:
        response = await self._next.send_request(request)
        if (
            type(response) is ilp.Fulfill
            and sha256(response.fulfillment).digest() != request.prepare.execution_condition
        ):
            log.warning("WRONG_FULFILLMENT", peer=request.to_peer)
            raise WrongCondition("fulfillment did not match expected value.")
        return response
