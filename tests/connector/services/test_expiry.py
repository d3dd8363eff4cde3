"""Expiry per hop: ilp-connector's arithmetic and messages, R02 and R00."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import InsufficientTimeout, TransferTimedOut
from connector.services.expiry import (
    ExpiryService,
    format_timestamp,
    next_hop_expiry,
)

SECOND = timedelta(seconds=1)


def test_format_timestamp_is_javascript_iso() -> None:
    moment = datetime(2026, 11, 24, 3, 5, 59, 857_999, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-11-24T03:05:59.857Z"


def test_expiry_shrinks_by_one_message_window(now) -> None:
    assert next_hop_expiry(now + 10 * SECOND, now) == now + 9 * SECOND


def test_expiry_is_capped_at_max_hold_time(now) -> None:
    assert next_hop_expiry(now + 120 * SECOND, now) == now + 30 * SECOND


def test_too_little_time_is_r02_with_ilp_connectors_message() -> None:
    # The captured "expiry too close (500ms)" scenario, to the millisecond.
    now = datetime(2026, 11, 24, 3, 5, 59, 358_000, tzinfo=UTC)
    source = datetime(2026, 11, 24, 3, 5, 59, 857_000, tzinfo=UTC)
    with pytest.raises(InsufficientTimeout) as raised:
        next_hop_expiry(source, now)
    assert raised.value.message == (
        "source transfer expires too soon to complete payment."
        " actualSourceExpiry=2026-11-24T03:05:59.857Z"
        " requiredSourceExpiry=2026-11-24T03:06:01.358Z"
        " currentTime=2026-11-24T03:05:59.358Z"
    )


def test_exactly_two_windows_is_enough(now) -> None:
    assert next_hop_expiry(now + 2 * SECOND, now) == now + SECOND


def test_already_expired_is_r02_with_ilp_connectors_message() -> None:
    now = datetime(2026, 11, 24, 3, 5, 59, 361_000, tzinfo=UTC)
    source = datetime(2026, 11, 24, 3, 5, 58, 360_000, tzinfo=UTC)
    with pytest.raises(InsufficientTimeout) as raised:
        next_hop_expiry(source, now)
    assert raised.value.message == (
        "source transfer has already expired. sourceExpiry=2026-11-24T03:05:58.360Z"
        " currentTime=2026-11-24T03:05:59.361Z"
    )


async def test_service_forwards_the_shortened_expiry(
    terminal, incoming, fulfill, clock, now
) -> None:
    inner = terminal(fulfill)
    service = ExpiryService(inner, clock)
    assert await service.send_request(incoming().to_outgoing("peer")) is fulfill
    assert inner.seen[0].expires_at == now + 9 * SECOND


async def test_service_r02_never_reaches_the_next_hop(terminal, incoming, fulfill, clock) -> None:
    inner = terminal(fulfill)
    with pytest.raises(InsufficientTimeout):
        await ExpiryService(inner, clock).send_request(
            incoming(expires_in=timedelta(milliseconds=1500)).to_outgoing("peer")
        )
    assert inner.seen == []


async def test_no_answer_before_the_next_hops_expiry_is_r00(terminal, incoming) -> None:
    # A real clock here: the service waits for the shortened expiry to pass.
    now = datetime.now(UTC)
    request = incoming(expires_in=timedelta(milliseconds=1150)).to_outgoing("peer")
    request = request.with_expiry(now + timedelta(milliseconds=1150))
    service = ExpiryService(
        terminal(None),
        lambda: datetime.now(UTC),
        min_message_window=timedelta(milliseconds=100),
    )
    started = asyncio.get_running_loop().time()
    with pytest.raises(TransferTimedOut) as raised:
        await service.send_request(request)
    waited = asyncio.get_running_loop().time() - started
    assert raised.value.message == "packet expired."
    assert 0.9 < waited < 1.3
