from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import InsufficientSourceAmount
from connector.services.fee import FeeService, amount_after_fee


@pytest.mark.parametrize(
    ("amount", "bps", "forwarded"),
    [
        (1000, 0, 1000),
        (1000, 10, 999),  # 0.1% of 1000 = 1
        (1001, 10, 999),  # 1.001 rounds up to 2 in our favour
        (10_000, 25, 9_975),
        (1, 10_000, 0),
        (2**64 - 1, 1, 2**64 - 1 - -(-(2**64 - 1) // 10_000)),
    ],
)
def test_fee_in_basis_points_rounds_for_the_connector(
    amount: int, bps: int, forwarded: int
) -> None:
    assert amount_after_fee(amount, bps) == forwarded


@given(st.integers(0, 2**64 - 1), st.integers(0, 10_000))
def test_fee_is_exact_integer_ceiling(amount: int, bps: int) -> None:
    forwarded = amount_after_fee(amount, bps)
    assert 0 <= forwarded <= amount
    assert amount - forwarded == math.ceil(Fraction(amount * bps, 10_000))


async def test_service_forwards_the_amount_after_fee(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    assert (
        await FeeService(10, inner).send_request(incoming(amount=1001).to_outgoing("d")) is fulfill
    )
    assert inner.seen[0].amount == 999
    assert inner.seen[0].prepare.amount == 1001


async def test_nothing_left_to_forward_is_r01(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    with pytest.raises(InsufficientSourceAmount):
        await FeeService(10, inner).send_request(incoming(amount=1).to_outgoing("d"))
    assert inner.seen == []


async def test_zero_amount_packets_pass(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    await FeeService(10, inner).send_request(incoming(amount=0).to_outgoing("d"))
    assert inner.seen[0].amount == 0


def test_fee_over_100_percent_is_refused(terminal, fulfill) -> None:
    with pytest.raises(ValueError):
        FeeService(10_001, terminal(fulfill))
