from __future__ import annotations

import asyncio

import pytest

from connector.codec import ilp
from connector.errors import Unreachable
from connector.services.reject import RejectService


async def test_errors_raised_inside_become_rejects_from_this_node(terminal, incoming) -> None:
    service = RejectService("g.me", terminal(Unreachable("no route")))
    assert await service.handle_request(incoming()) == ilp.Reject("F02", "g.me", "no route", b"")


async def test_unexpected_exceptions_are_t00(terminal, incoming) -> None:
    service = RejectService("g.me", terminal(RuntimeError("bug")))
    reject = await service.handle_request(incoming())
    assert (reject.code, reject.triggered_by) == ("T00", "g.me")


async def test_answers_pass_through_untouched(terminal, incoming, fulfill, reject) -> None:
    for answer in (fulfill, reject):
        assert await RejectService("g.me", terminal(answer)).handle_request(incoming()) is answer


async def test_cancellation_is_not_turned_into_a_reject(terminal, incoming) -> None:
    service = RejectService("g.me", terminal(asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        await service.handle_request(incoming())
