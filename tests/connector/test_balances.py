"""connector.balances: credit limits (T04), refunds, settlement events, durability, concurrency."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from connector.balances import (
    Account,
    AccountLimits,
    BalanceError,
    BalanceLedger,
    CreditLimitExceeded,
    SettlementRequired,
    UnknownPeer,
    open_ledger,
)
from connector.codec import ilp
from connector.config import NodeConfig, PeerConfig, SettlementConfig
from connector.errors import InsufficientLiquidity, to_reject

LIMITS = {
    "alice": AccountLimits(credit_limit=1_000, settlement_threshold=500),
    "bob": AccountLimits(credit_limit=1_000, settlement_threshold=500),
}


@pytest.fixture
async def ledger_file(tmp_path: Path) -> Path:
    return tmp_path / "node" / "ledger.sqlite3"


def stored_balances(path: Path) -> dict[str, int]:
    """Read the file with a separate connection, as a restarted process would."""
    with sqlite3.connect(path) as connection:
        return {
            peer: int(b) for peer, b in connection.execute("SELECT peer_id, balance FROM balances")
        }


# --- the pure account rules ------------------------------------------------------------------


def test_hold_within_credit_limit_then_commit() -> None:
    account = Account("alice", AccountLimits(credit_limit=100))
    account.hold(60)
    account.hold(40)

    assert account.pending_incoming == 100
    account.commit(60)
    assert (account.balance, account.pending_incoming) == (60, 40)


def test_hold_counts_pending_and_balance_against_the_limit() -> None:
    account = Account("alice", AccountLimits(credit_limit=100), balance=70)
    account.hold(20)

    with pytest.raises(CreditLimitExceeded) as caught:
        account.hold(11)

    assert (caught.value.owed, caught.value.credit_limit, caught.value.amount) == (90, 100, 11)
    assert account.pending_incoming == 20


def test_negative_balance_extends_room_for_incoming() -> None:
    # We owe alice 50: she may send up to limit + 50 before we refuse.
    account = Account("alice", AccountLimits(credit_limit=100), balance=-50)
    account.hold(150)

    with pytest.raises(CreditLimitExceeded):
        account.hold(1)


def test_credit_limit_exceeded_is_a_t04_reject() -> None:
    account = Account("alice", AccountLimits(credit_limit=0))
    with pytest.raises(CreditLimitExceeded) as caught:
        account.hold(1)

    assert isinstance(caught.value, InsufficientLiquidity)
    reject = to_reject(caught.value, "g.us")
    assert reject.code == ilp.ErrorCode("T04")
    assert reject.message == "exceeded maximum balance."


def test_zero_amount_never_exceeds_the_limit() -> None:
    account = Account("alice", AccountLimits(credit_limit=0))
    account.hold(0)

    assert account.pending_incoming == 0


def test_releasing_more_than_held_is_a_bug() -> None:
    account = Account("alice", AccountLimits(credit_limit=10))
    account.hold(5)

    with pytest.raises(BalanceError):
        account.release(6)


def test_settlement_due_once_until_rearmed() -> None:
    account = Account("bob", AccountLimits(credit_limit=0, settlement_threshold=10), balance=-9)
    assert account.settlement_due() is None

    account.balance = -10
    assert account.settlement_due() == SettlementRequired("bob", 10)
    account.balance = -30
    assert account.settlement_due() is None
    account.settlement_requested = False
    assert account.settlement_due() == SettlementRequired("bob", 30)


def test_no_threshold_never_asks_for_settlement() -> None:
    account = Account("bob", AccountLimits(credit_limit=0), balance=-(10**30))

    assert account.settlement_due() is None


# --- the ledger --------------------------------------------------------------------------------


async def test_incoming_packet_fulfilled_then_rejected(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    try:
        ledger.hold_incoming("alice", 300)
        await ledger.commit_incoming("alice", 300)
        ledger.hold_incoming("alice", 200)
        ledger.release_incoming("alice", 200)

        snapshot = ledger.snapshot("alice")
        assert (snapshot.balance, snapshot.pending_incoming) == (300, 0)
        assert stored_balances(ledger_file) == {"alice": 300}
    finally:
        await ledger.close()


async def test_credit_limit_rejects_then_refund_frees_room(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    try:
        ledger.hold_incoming("alice", 800)
        with pytest.raises(CreditLimitExceeded):
            ledger.hold_incoming("alice", 201)
        ledger.release_incoming("alice", 800)  # the 800 was rejected downstream: refunded
        ledger.hold_incoming("alice", 1_000)
    finally:
        await ledger.close()


async def test_outgoing_fulfill_records_debt_and_emits_settlement_at_threshold(
    ledger_file: Path,
) -> None:
    events: list[SettlementRequired] = []
    ledger = BalanceLedger.open(ledger_file, LIMITS, on_settlement_required=events.append)
    try:
        await ledger.record_outgoing("bob", 499)
        assert events == []
        await ledger.record_outgoing("bob", 1)
        assert events == [SettlementRequired("bob", 500)]
        await ledger.record_outgoing("bob", 100)  # settlement already requested: no repeat
        assert events == [SettlementRequired("bob", 500)]
        assert ledger.snapshot("bob").balance == -600
        assert ledger.due_settlements() == [SettlementRequired("bob", 600)]

        await ledger.apply_outgoing_settlement("bob", 600)
        assert ledger.snapshot("bob").balance == 0
        assert ledger.due_settlements() == []
        await ledger.record_outgoing("bob", 500)  # re-armed by the settlement
        assert events[-1] == SettlementRequired("bob", 500)
    finally:
        await ledger.close()


async def test_partial_settlement_still_over_threshold_asks_again(ledger_file: Path) -> None:
    events: list[SettlementRequired] = []
    ledger = BalanceLedger.open(ledger_file, LIMITS, on_settlement_required=events.append)
    try:
        await ledger.record_outgoing("bob", 1_200)
        await ledger.apply_outgoing_settlement("bob", 100)

        assert events == [SettlementRequired("bob", 1_200), SettlementRequired("bob", 1_100)]
    finally:
        await ledger.close()


async def test_failed_settlement_is_requested_again(ledger_file: Path) -> None:
    events: list[SettlementRequired] = []
    ledger = BalanceLedger.open(ledger_file, LIMITS, on_settlement_required=events.append)
    try:
        await ledger.record_outgoing("bob", 700)
        ledger.settlement_failed("bob")

        assert events == [SettlementRequired("bob", 700), SettlementRequired("bob", 700)]
    finally:
        await ledger.close()


async def test_incoming_settlement_frees_credit(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    try:
        ledger.hold_incoming("alice", 1_000)
        await ledger.commit_incoming("alice", 1_000)
        with pytest.raises(CreditLimitExceeded):
            ledger.hold_incoming("alice", 1)

        await ledger.apply_incoming_settlement("alice", 400)

        ledger.hold_incoming("alice", 400)
        assert stored_balances(ledger_file) == {"alice": 600}
    finally:
        await ledger.close()


async def test_unknown_peer_and_negative_amounts_are_errors(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    try:
        with pytest.raises(UnknownPeer):
            ledger.hold_incoming("mallory", 1)
        with pytest.raises(BalanceError):
            await ledger.record_outgoing("bob", -1)
    finally:
        await ledger.close()


async def test_balances_beyond_int64_are_stored_exactly(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    for _ in range(3):
        await ledger.record_outgoing("bob", 2**64 - 1)
    await ledger.close()

    reopened = BalanceLedger.open(ledger_file, LIMITS)
    try:
        assert reopened.snapshot("bob").balance == -3 * (2**64 - 1)
    finally:
        await reopened.close()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_restart_restores_every_committed_balance(
    ledger_file: Path, synchronous: str
) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS, synchronous=synchronous)
    ledger.hold_incoming("alice", 250)
    await ledger.commit_incoming("alice", 250)
    ledger.hold_incoming("alice", 100)  # in flight when we stop: never acknowledged
    await ledger.record_outgoing("bob", 40)
    await ledger.close()

    reopened = BalanceLedger.open(ledger_file, LIMITS, synchronous=synchronous)
    try:
        assert reopened.snapshot("alice").balance == 250
        assert reopened.snapshot("alice").pending_incoming == 0
        assert reopened.snapshot("bob").balance == -40
    finally:
        await reopened.close()


def test_acknowledged_changes_survive_sigkill(tmp_path: Path) -> None:
    """A child commits, prints each acknowledged total, and is SIGKILLed mid-traffic."""
    path = tmp_path / "ledger.sqlite3"
    child = textwrap.dedent(
        f"""
        import asyncio, sys
        from connector.balances import AccountLimits, BalanceLedger

        async def main():
            ledger = BalanceLedger.open({str(path)!r}, {{"alice": AccountLimits(10**18)}})
            total = 0
            while True:
                ledger.hold_incoming("alice", 7)
                await ledger.commit_incoming("alice", 7)
                total += 7
                # Printed only after the commit returned: this total was acknowledged.
                print(total, flush=True)

        asyncio.run(main())
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        acknowledged = 0
        for line in process.stdout:
            if not line.strip().isdigit():
                continue  # a log line
            acknowledged = int(line)
            if acknowledged >= 7 * 300:
                break
        process.kill()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # No close(), no checkpoint: the WAL alone must hold every acknowledged commit.
    assert stored_balances(path)["alice"] >= acknowledged


async def test_peers_dropped_from_config_keep_their_balance_without_credit(
    ledger_file: Path,
) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    await ledger.record_outgoing("bob", 10)
    await ledger.close()

    reopened = BalanceLedger.open(ledger_file, {"alice": LIMITS["alice"]})
    try:
        bob = reopened.snapshot("bob")
        assert (bob.balance, bob.credit_limit) == (-10, 0)
        assert {s.peer_id for s in reopened.snapshots()} == {"alice", "bob"}
    finally:
        await reopened.close()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_concurrent_packets_conserve_every_unit(ledger_file: Path, synchronous: str) -> None:
    """Many tasks forward alice→bob at once, some rejected: totals add up, memory and disk."""
    limits = {
        "alice": AccountLimits(credit_limit=10**9),
        "bob": AccountLimits(credit_limit=10**9, settlement_threshold=10**5),
    }
    events: list[SettlementRequired] = []
    ledger = BalanceLedger.open(
        ledger_file, limits, synchronous=synchronous, on_settlement_required=events.append
    )
    rng = random.Random(7)
    plan = [(rng.randint(1, 1_000), rng.random() < 0.2) for _ in range(2_000)]

    async def forward(amount: int, rejected: bool) -> None:
        ledger.hold_incoming("alice", amount)
        await asyncio.sleep(0)  # the packet travels: other packets interleave here
        if rejected:
            ledger.release_incoming("alice", amount)
            return
        await ledger.record_outgoing("bob", amount)
        await ledger.commit_incoming("alice", amount)

    await asyncio.gather(*(forward(a, r) for a, r in plan))
    expected = sum(a for a, rejected in plan if not rejected)
    try:
        assert ledger.snapshot("alice").balance == expected
        assert ledger.snapshot("alice").pending_incoming == 0
        assert ledger.snapshot("bob").balance == -expected
        assert stored_balances(ledger_file) == {"alice": expected, "bob": -expected}
        assert events == [SettlementRequired("bob", events[0].amount)]
        assert events[0].amount >= 10**5
    finally:
        await ledger.close()


async def test_a_cancelled_waiter_does_not_cancel_the_batch(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    try:
        ledger.hold_incoming("alice", 5)
        first = asyncio.create_task(ledger.commit_incoming("alice", 5))
        second = asyncio.create_task(ledger.record_outgoing("bob", 3))
        await asyncio.sleep(0)
        first.cancel()
        await second  # same batch: still written
        assert stored_balances(ledger_file)["bob"] == -3

        # The cancelled commit never reached upstream as a Fulfill: it is undone, on disk too.
        with pytest.raises(asyncio.CancelledError):
            await first
        await ledger.flush()
        assert ledger.snapshot("alice").balance == 0
        assert stored_balances(ledger_file) == {"alice": 0, "bob": -3}
    finally:
        await ledger.close()


async def test_commit_that_cannot_be_written_is_undone(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    blocker = sqlite3.connect(ledger_file, isolation_level=None, timeout=0)
    try:
        ledger.hold_incoming("alice", 40)
        await ledger.commit_incoming("alice", 40)
        ledger.hold_incoming("alice", 60)
        blocker.execute("BEGIN IMMEDIATE")
        ledger._connection.execute("PRAGMA busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError):
            await ledger.commit_incoming("alice", 60)
        blocker.execute("ROLLBACK")

        snapshot = ledger.snapshot("alice")
        assert (snapshot.balance, snapshot.pending_incoming) == (40, 0)
        await ledger.flush()
        assert stored_balances(ledger_file) == {"alice": 40}
    finally:
        blocker.close()
        await ledger.close()


async def test_write_failure_reaches_the_waiter_and_is_retried(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    blocker = sqlite3.connect(ledger_file, isolation_level=None, timeout=0)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        ledger._connection.execute("PRAGMA busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError):
            await ledger.record_outgoing("bob", 9)
        blocker.execute("ROLLBACK")

        await ledger.flush()  # the failed change is still pending and gets written now
        assert stored_balances(ledger_file) == {"bob": -9}
    finally:
        blocker.close()
        await ledger.close()


async def test_open_ledger_takes_path_limits_and_sync_from_config(tmp_path: Path) -> None:
    config = NodeConfig(
        node_id="n1",
        ilp_address="g.n1",
        btp_server_port=0,
        ledger_path=tmp_path / "n1.sqlite3",
        ledger_sync="full",
        peers=[
            PeerConfig(id="a", auth_token=SecretStr("t"), credit_limit=50),
            PeerConfig(id="b", auth_token=SecretStr("t"), settlement_threshold=7),
        ],
        settlement=SettlementConfig(threshold=99),
    )
    ledger = open_ledger(config)
    try:
        assert ledger.snapshot("a").credit_limit == 50
        assert ledger.snapshot("a").settlement_threshold == 99
        assert ledger.snapshot("b").settlement_threshold == 7
        with sqlite3.connect(tmp_path / "n1.sqlite3") as check:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await ledger.close()
    assert os.path.exists(tmp_path / "n1.sqlite3")


async def test_closed_ledger_refuses_writes(ledger_file: Path) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    await ledger.close()

    with pytest.raises(BalanceError, match="closed"):
        await ledger.record_outgoing("bob", 1)


# --- journal entries: written in the same transaction as the balance --------------------------

_JOURNAL_TABLE = "CREATE TABLE IF NOT EXISTS notes (peer_id TEXT, amount INTEGER)"


def _note(peer_id: str, amount: int) -> tuple[str, tuple[object, ...]]:
    return ("INSERT INTO notes (peer_id, amount) VALUES (?, ?)", (peer_id, amount))


def stored_notes(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as connection:
        return list(connection.execute("SELECT peer_id, amount FROM notes ORDER BY rowid"))


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_settlement_journal_lands_with_its_balance(
    ledger_file: Path, synchronous: str
) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS, synchronous=synchronous)
    with sqlite3.connect(ledger_file) as setup:
        setup.execute(_JOURNAL_TABLE)
    try:
        await ledger.record_outgoing("bob", 700)
        await ledger.apply_outgoing_settlement("bob", 600, [_note("bob", 600)])
        ledger.hold_incoming("alice", 300)
        await ledger.commit_incoming("alice", 300)
        await ledger.apply_incoming_settlement("alice", 200, [_note("alice", -200)])
        await ledger.write_journal([_note("carol", 0)])

        assert stored_balances(ledger_file) == {"bob": -100, "alice": 100}
        assert stored_notes(ledger_file) == [("bob", 600), ("alice", -200), ("carol", 0)]
    finally:
        await ledger.close()


async def test_journal_that_cannot_be_written_is_retried_with_its_balance(
    ledger_file: Path,
) -> None:
    ledger = BalanceLedger.open(ledger_file, LIMITS)
    with sqlite3.connect(ledger_file) as setup:
        setup.execute(_JOURNAL_TABLE)
    blocker = sqlite3.connect(ledger_file, isolation_level=None, timeout=0)
    try:
        await ledger.record_outgoing("bob", 700)
        blocker.execute("BEGIN IMMEDIATE")
        ledger._connection.execute("PRAGMA busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError):
            await ledger.apply_outgoing_settlement("bob", 600, [_note("bob", 600)])
        # Neither is on disk while the write fails ...
        assert stored_balances(ledger_file) == {"bob": -700}
        assert stored_notes(ledger_file) == []
        blocker.execute("ROLLBACK")

        await ledger.flush()  # ... and both land together on the next batch.
        assert stored_balances(ledger_file) == {"bob": -100}
        assert stored_notes(ledger_file) == [("bob", 600)]
    finally:
        blocker.close()
        await ledger.close()
