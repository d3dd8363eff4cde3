"""What a service on the packet path is, and the requests that flow through it.

A packet from a peer enters as an `IncomingRequest` (who sent it, the decoded Prepare, and the
bytes as received). Once a next hop is chosen it becomes an `OutgoingRequest` carrying the amount
and expiry that will go on the wire; only those two fields ever change on the way out, so the
peer service patches them into the received bytes instead of re-encoding the packet.

    incoming:  RejectService --> ... --> RouterService  (IncomingService)
    outgoing:  RouterService --> ... --> PeerService    (OutgoingService)

Every service answers with a Fulfill or a Reject value; failures it detects itself are raised
as `connector.errors.IlpError` and turned into a Reject once, by the outermost service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from connector.codec import ilp

Response = ilp.Fulfill | ilp.Reject

# Services that need the time are given a clock, so tests can pin it.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# This node, where a peer id would go: the `from_peer` of packets it originates itself (its
# sender) and the next hop of packets addressed to it. Never a configured peer id: those are
# letters, digits, '_', '~' and '-' only.
LOCAL = "<local>"


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """A Prepare on its way to `to_peer`, with the amount and expiry it will leave with."""

    from_peer: str
    to_peer: str
    # The Prepare as it arrived (condition, destination, data and the *source* amount/expiry).
    prepare: ilp.Prepare
    raw: bytes
    amount: int
    expires_at: datetime

    def with_amount(self, amount: int) -> OutgoingRequest:
        return OutgoingRequest(
            self.from_peer, self.to_peer, self.prepare, self.raw, amount, self.expires_at
        )

    def with_expiry(self, expires_at: datetime) -> OutgoingRequest:
        return OutgoingRequest(
            self.from_peer, self.to_peer, self.prepare, self.raw, self.amount, expires_at
        )


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A Prepare received from `from_peer` over its authenticated link."""

    from_peer: str
    prepare: ilp.Prepare
    # The encoded Prepare as received; forwarded with only amount and expiry patched.
    raw: bytes

    def to_outgoing(self, to_peer: str) -> OutgoingRequest:
        prepare = self.prepare
        return OutgoingRequest(
            self.from_peer, to_peer, prepare, self.raw, prepare.amount, prepare.expires_at
        )


class IncomingService(Protocol):
    async def handle_request(self, request: IncomingRequest) -> Response: ...


class OutgoingService(Protocol):
    async def send_request(self, request: OutgoingRequest) -> Response: ...
