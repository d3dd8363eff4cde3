"""ExpiryService: shortens the expiry per hop and answers R00 when the next hop is too slow.

The next hop gets `min(source expiry - min_message_window, now + max_hold_time)`, which leaves
this node at least `min_message_window` to pass a Fulfill back before the source expires, and
never holds liquidity longer than `max_hold_time`. Less than one window left after shortening
is R02; no answer from downstream before the shortened expiry is R00 ("packet expired.").
Messages and defaults (1 s window, 30 s hold) follow ilp-connector.

It does not check the fulfillment (`validator.py`), touch amounts or balances, or pick the
next hop. The arithmetic is pure (`next_hop_expiry`); the service reads the injected clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from connector.errors import InsufficientTimeout, TransferTimedOut
from connector.services.interface import Clock, OutgoingRequest, OutgoingService, Response

DEFAULT_MIN_MESSAGE_WINDOW = timedelta(milliseconds=1000)
DEFAULT_MAX_HOLD_TIME = timedelta(seconds=30)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 with milliseconds and `Z`, as JavaScript's `Date.toISOString()` writes it."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def check_not_expired(source_expiry: datetime, now: datetime) -> None:
    """R02 for a Prepare whose expiry has already passed when it reaches us."""
    if source_expiry < now:
        raise InsufficientTimeout(
            "source transfer has already expired."
            f" sourceExpiry={format_timestamp(source_expiry)}"
            f" currentTime={format_timestamp(now)}"
        )


def next_hop_expiry(
    source_expiry: datetime,
    now: datetime,
    min_message_window: timedelta = DEFAULT_MIN_MESSAGE_WINDOW,
    max_hold_time: timedelta = DEFAULT_MAX_HOLD_TIME,
) -> datetime:
    """The expiry to forward with, or InsufficientTimeout (R02) when too little time is left."""
    check_not_expired(source_expiry, now)
    destination_expiry = min(source_expiry - min_message_window, now + max_hold_time)
    if destination_expiry - now < min_message_window:
        raise InsufficientTimeout(
            "source transfer expires too soon to complete payment."
            f" actualSourceExpiry={format_timestamp(source_expiry)}"
            f" requiredSourceExpiry={format_timestamp(now + 2 * min_message_window)}"
            f" currentTime={format_timestamp(now)}"
        )
    return destination_expiry


class ExpiryService:
    __slots__ = ("_clock", "_max_hold_time", "_min_message_window", "_next")

    def __init__(
        self,
        next_service: OutgoingService,
        clock: Clock,
        min_message_window: timedelta = DEFAULT_MIN_MESSAGE_WINDOW,
        max_hold_time: timedelta = DEFAULT_MAX_HOLD_TIME,
    ) -> None:
        self._next = next_service
        self._clock = clock
        self._min_message_window = min_message_window
        self._max_hold_time = max_hold_time

    async def send_request(self, request: OutgoingRequest) -> Response:
        now = self._clock()
        expires_at = next_hop_expiry(
            request.expires_at, now, self._min_message_window, self._max_hold_time
        )
        try:
            async with asyncio.timeout((expires_at - now).total_seconds()):
                return await self._next.send_request(request.with_expiry(expires_at))
        except TimeoutError:
            raise TransferTimedOut("packet expired.") from None
