"""Pieces for service tests: packets, a pinned clock, and a terminal service that answers.

`Terminal` is a real (tiny) service implementing both service Protocols: it records what
reached it and answers with a given Fulfill/Reject, raises, or waits forever. Services are
tested against it one at a time; the composed chain is tested in tests/connector/test_packet_path.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from hashlib import sha256

import pytest

from connector.codec import ilp
from connector.services.interface import IncomingRequest, OutgoingRequest, Response

NOW = datetime(2026, 11, 24, 3, 5, 59, 358_000, tzinfo=UTC)
FULFILLMENT = bytes([7]) * 32
CONDITION = sha256(FULFILLMENT).digest()


class Terminal:
    def __init__(self, answer: Response | BaseException | None) -> None:
        self.answer = answer
        self.seen: list[IncomingRequest | OutgoingRequest] = []

    async def _answer(self, request: IncomingRequest | OutgoingRequest) -> Response:
        self.seen.append(request)
        if self.answer is None:
            await asyncio.Event().wait()  # a peer that never answers
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    async def handle_request(self, request: IncomingRequest) -> Response:
        return await self._answer(request)

    async def send_request(self, request: OutgoingRequest) -> Response:
        return await self._answer(request)


def make_prepare(
    amount: int = 1000,
    expires_in: timedelta = timedelta(seconds=10),
    destination: str = "test.downstream.bob",
    condition: bytes = CONDITION,
    data: bytes = b"ping",
) -> ilp.Prepare:
    return ilp.Prepare(amount, NOW + expires_in, condition, destination, data)


def make_incoming(from_peer: str = "upstream", **kwargs: object) -> IncomingRequest:
    prepare = make_prepare(**kwargs)  # type: ignore[arg-type]
    return IncomingRequest(from_peer, prepare, ilp.encode(prepare))


@pytest.fixture
def clock() -> Callable[[], datetime]:
    return lambda: NOW


FULFILL = ilp.Fulfill(FULFILLMENT, b"hello from bob")
REJECT = ilp.Reject("F99", "test.downstream", "app says no", b"abc")


@pytest.fixture
def terminal() -> type[Terminal]:
    return Terminal


@pytest.fixture
def incoming() -> Callable[..., IncomingRequest]:
    return make_incoming


@pytest.fixture
def prepare() -> Callable[..., ilp.Prepare]:
    return make_prepare


@pytest.fixture
def fulfill() -> ilp.Fulfill:
    return FULFILL


@pytest.fixture
def reject() -> ilp.Reject:
    return REJECT


@pytest.fixture
def now() -> datetime:
    return NOW
