"""connector.claim_store: claims kept in the ledger file, written with the credit they carry,
and found again after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from eth_account import Account

from connector.balances import AccountLimits, BalanceLedger
from connector.claim_store import ChannelPayout, ClaimStore, read_claims
from connector.claims import ClaimDomain, ClaimSigner

LIMITS = {"bob": AccountLimits(credit_limit=10**12, settlement_threshold=1_000)}
DOMAIN = ClaimDomain(31337, "0x" + "ab" * 20)
CHANNEL = "0x" + "c1" * 32
OURS = ClaimSigner(
    Account.from_key("0x" + "11" * 32).key, Account.from_key("0x" + "11" * 32).address
)
THEIRS_KEY = Account.from_key("0x" + "22" * 32)
THEIRS = ClaimSigner(THEIRS_KEY.key, THEIRS_KEY.address)


def stored_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return list(
            connection.execute(
                "SELECT direction, peer_id, nonce, transferred_amount, amount, acknowledged"
                " FROM claims ORDER BY direction, nonce"
            )
        )


def stored_balance(path: Path, peer_id: str) -> int:
    with sqlite3.connect(path) as connection:
        (balance,) = connection.execute(
            "SELECT balance FROM balances WHERE peer_id = ?", (peer_id,)
        ).fetchone()
    return int(balance)


async def opened(path: Path) -> tuple[BalanceLedger, ClaimStore]:
    ledger = BalanceLedger.open(path, LIMITS)
    return ledger, ClaimStore.open(path, ledger)


async def test_sent_claim_is_pending_until_acknowledged_then_credited(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    try:
        await ledger.record_outgoing("bob", 1_500)
        sent = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 1, 1_500), 1_500)
        # On disk before it leaves; no credit yet.
        assert stored_rows(path) == [("sent", "bob", "1", "1500", "1500", 0)]
        assert stored_balance(path, "bob") == -1_500
        assert store.pending_sent("bob") == sent
        assert store.latest_sent("bob", CHANNEL) == sent
        assert store.latest_acknowledged("bob", CHANNEL) is None

        acknowledged = await store.record_acknowledged(sent)
        assert stored_rows(path) == [("sent", "bob", "1", "1500", "1500", 1)]
        assert stored_balance(path, "bob") == 0
        assert store.pending_sent("bob") is None
        assert store.latest_acknowledged("bob", CHANNEL) == acknowledged
    finally:
        await ledger.close()


async def test_a_restart_finds_the_unacknowledged_claim_to_send_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    first = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 1, 1_000), 1_000)
    await store.record_acknowledged(first)
    second_claim = OURS.sign(DOMAIN, CHANNEL, 2, 2_500)
    await store.record_sent("bob", second_claim, 1_500)
    await ledger.close()

    ledger, store = await opened(path)
    try:
        pending = store.pending_sent("bob")
        assert pending is not None and pending.claim == second_claim and pending.amount == 1_500
        assert store.peers_with_pending() == ["bob"]
        assert store.latest_sent("bob", CHANNEL).nonce == 2
        assert store.latest_acknowledged("bob", CHANNEL).nonce == 1
    finally:
        await ledger.close()


async def test_received_claim_is_stored_with_its_credit_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    ledger.hold_incoming("bob", 3_000)
    await ledger.commit_incoming("bob", 3_000)
    first = THEIRS.sign(DOMAIN, CHANNEL, 1, 1_000)
    second = THEIRS.sign(DOMAIN, CHANNEL, 2, 2_500)
    await store.record_received("bob", first, 1_000)
    await store.record_received("bob", second, 1_500)
    assert stored_balance(path, "bob") == 500
    await ledger.close()

    ledger, store = await opened(path)
    try:
        best = store.best_received("bob", CHANNEL.upper().replace("0X", "0x"))
        assert best is not None and best.claim == second and best.acknowledged
        assert ledger.snapshot("bob").balance == 500
        summary = store.summary("bob")
        assert (summary.channel_id, summary.sent, summary.received) == (CHANNEL, None, best)
        assert store.summary("bob", "0x" + "99" * 32).received is None
    finally:
        await ledger.close()


async def test_recording_the_same_claim_twice_keeps_one_row(tmp_path: Path) -> None:
    # A journal entry that repeats must never fail the ledger's batch (it would fail them all).
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    try:
        claim = THEIRS.sign(DOMAIN, CHANNEL, 1, 1_000)
        await store.record_received("bob", claim, 1_000)
        await store.record_received("bob", claim, 0)
        await ledger.record_outgoing("bob", 1)  # the ledger still writes
        assert stored_rows(path) == [("received", "bob", "1", "1000", "1000", 1)]
        assert stored_balance(path, "bob") == -1_001
    finally:
        await ledger.close()


async def test_another_process_reads_the_claims_read_only(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    assert read_claims(path).summary("bob").channel_id is None  # no file yet
    ledger = BalanceLedger.open(path, LIMITS)
    assert read_claims(path).summary("bob").channel_id is None  # no claims table yet
    store = ClaimStore.open(path, ledger)
    try:
        sent = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 1, 1_000), 1_000)
        received = await store.record_received("bob", THEIRS.sign(DOMAIN, CHANNEL, 4, 9), 9)

        summary = read_claims(path).summary("bob")  # while the node runs
        assert (summary.channel_id, summary.sent, summary.received) == (CHANNEL, sent, received)
        assert read_claims(path).pending_sent("bob") == sent
    finally:
        await ledger.close()


async def test_a_claim_pending_on_an_old_channel_does_not_block_the_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    new_channel = "0x" + "c2" * 32
    try:
        old = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 7, 7_000), 1_000)
        with pytest.raises(ValueError, match="pending"):
            await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 8, 8_000), 1_000)
        new = await store.record_sent("bob", OURS.sign(DOMAIN, new_channel, 1, 500), 500)

        assert store.pending_sent("bob", CHANNEL) == old
        assert store.pending_sent("bob", new_channel) == new
        assert store.pending_sent("bob") == new  # the latest, when no channel is named
        await store.record_acknowledged(new)
        assert store.pending_sent("bob") == old
        assert store.peers_with_pending() == ["bob"]
    finally:
        await ledger.close()


def payout(adjustment: int, channel_id: str = CHANNEL) -> ChannelPayout:
    return ChannelPayout("bob", channel_id, 9_000, 1_000, False, 1_000, adjustment)


async def test_a_settled_channel_credits_its_pending_claim_once_and_a_late_ack_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    await ledger.record_outgoing("bob", 3_000)
    first = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 1, 1_000), 1_000)
    await store.record_acknowledged(first)
    pending = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 2, 2_500), 1_500)

    # The peer closed with the pending claim: its 1,500 moved, the ledger takes it now.
    assert await store.record_payout(payout(1_500), pending_used=True)
    assert store.has_payout("bob", CHANNEL.upper().replace("0X", "0x"))
    assert store.pending_sent("bob") is None
    assert store.latest_acknowledged("bob", CHANNEL).nonce == 2
    assert stored_balance(path, "bob") == -3_000 + 1_000 + 1_500
    # A retried notification, and the acknowledgement arriving after all: nothing twice.
    assert not await store.record_payout(payout(1_500), pending_used=True)
    assert await store.record_acknowledged(pending) is None
    assert stored_balance(path, "bob") == -500
    await ledger.close()

    ledger, store = await opened(path)
    try:
        assert stored_rows(path)[-1] == ("sent", "bob", "2", "2500", "1500", 1)
        assert store.has_payout("bob", CHANNEL) and store.peers_with_pending() == []
        assert ledger.snapshot("bob").balance == -500
    finally:
        await ledger.close()


async def test_a_pending_claim_the_settle_did_not_use_is_void_with_the_balance_correction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger, store = await opened(path)
    await ledger.record_outgoing("bob", 3_000)
    first = await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 1, 1_000), 1_000)
    await store.record_acknowledged(first)
    await store.record_sent("bob", OURS.sign(DOMAIN, CHANNEL, 2, 2_500), 1_500)

    # A cooperative settle paid us 400 more than the claims counted; the claim is void.
    assert await store.record_payout(payout(-400), pending_used=False)
    assert store.pending_sent("bob") is None
    assert store.latest_acknowledged("bob", CHANNEL).nonce == 1
    assert store.latest_sent("bob", CHANNEL).void
    assert stored_balance(path, "bob") == -3_000 + 1_000 - 400
    await ledger.close()

    ledger, store = await opened(path)
    try:
        assert stored_rows(path)[-1] == ("sent", "bob", "2", "2500", "1500", 2)
        assert store.pending_sent("bob") is None and store.latest_sent("bob", CHANNEL).void
        assert read_claims(path).pending_sent("bob") is None
        # Another channel's payout is its own record.
        assert not store.has_payout("bob", "0x" + "c2" * 32)
    finally:
        await ledger.close()
