"""Balance services over the real SQLite ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connector.balances import AccountLimits, BalanceLedger
from connector.errors import InsufficientLiquidity
from connector.services.balance import IncomingBalanceService, OutgoingBalanceService
from connector.services.interface import LOCAL


@pytest.fixture
async def ledger(tmp_path: Path):
    ledger = BalanceLedger.open(
        tmp_path / "ledger.sqlite3",
        {"upstream": AccountLimits(credit_limit=2500), "downstream": AccountLimits(10**9)},
    )
    yield ledger
    await ledger.close()


async def test_fulfilled_packet_is_owed_by_the_sender(ledger, terminal, incoming, fulfill) -> None:
    service = IncomingBalanceService(ledger, terminal(fulfill))
    assert await service.handle_request(incoming(amount=1000)) is fulfill
    snapshot = ledger.snapshot("upstream")
    assert (snapshot.balance, snapshot.pending_incoming) == (1000, 0)


async def test_rejected_or_failed_packet_is_refunded(ledger, terminal, incoming, reject) -> None:
    assert (
        await IncomingBalanceService(ledger, terminal(reject)).handle_request(incoming()) is reject
    )
    with pytest.raises(RuntimeError):
        await IncomingBalanceService(ledger, terminal(RuntimeError())).handle_request(incoming())
    snapshot = ledger.snapshot("upstream")
    assert (snapshot.balance, snapshot.pending_incoming) == (0, 0)


async def test_credit_limit_is_t04_counting_packets_in_flight(ledger, terminal, incoming) -> None:
    waiting = IncomingBalanceService(ledger, terminal(None))
    in_flight = [
        asyncio.create_task(waiting.handle_request(incoming(amount=1000))) for _ in range(2)
    ]
    await asyncio.sleep(0)
    with pytest.raises(InsufficientLiquidity) as raised:
        await waiting.handle_request(incoming(amount=1000))
    assert (raised.value.code, raised.value.message) == ("T04", "exceeded maximum balance.")
    for task in in_flight:
        task.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
    assert ledger.snapshot("upstream").pending_incoming == 0


async def test_own_packets_and_zero_amounts_hold_nothing(
    ledger, terminal, incoming, fulfill
) -> None:
    service = IncomingBalanceService(ledger, terminal(fulfill))
    await service.handle_request(incoming(from_peer=LOCAL, amount=10**6))
    await service.handle_request(incoming(amount=0))
    assert ledger.snapshot("upstream").balance == 0


async def test_fulfilled_outgoing_packet_is_owed_to_the_next_hop(
    ledger, terminal, incoming, fulfill, reject
) -> None:
    request = incoming(amount=1000).to_outgoing("downstream").with_amount(990)
    await OutgoingBalanceService(ledger, terminal(reject)).send_request(request)
    assert ledger.snapshot("downstream").balance == 0
    await OutgoingBalanceService(ledger, terminal(fulfill)).send_request(request)
    assert ledger.snapshot("downstream").balance == -990
