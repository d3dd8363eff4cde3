"""ClaimStore: every claim this node sent or received, per peer and channel, kept durably.

The rows live in the ledger's SQLite file (table `claims`) and are written through the
ledger's own batches (`BalanceLedger` journal entries), which makes the settlement rules
exact across crashes:

    record_sent(peer, claim, amount)     the claim is on disk before it leaves; no credit yet
    record_acknowledged(sent)            the acknowledgement and the credit of `amount` to the
                                         peer's balance land in one transaction
    record_received(peer, claim, amount) the claim and the credit of `amount` land in one
                                         transaction, before the acknowledgement goes out
    record_payout(peer, channel, ...)    the channel settled: the ledger is brought to what
                                         moved on-chain (connector.payout) and a claim still
                                         waiting for its acknowledgement is resolved (used
                                         on-chain: acknowledged and credited; not: void), with
                                         the payout, in one transaction, once per channel

so a restarted node never credits a claim twice, never holds a credited claim it did not
record, and finds any claim it sent without an acknowledgement (`pending_sent`), to send the
same claim again. Memory is authoritative while running (as in the ledger); the file is read
once, by `open`.

Reads for other parts of the node (channel keeping closes with `best_received`; /health):
`best_received`, `latest_sent`, `latest_acknowledged`, `summary` (`ClaimIndex`). Another
process (`paychan channels`) reads the same file with `read_claims`, read-only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import structlog

from connector.balances import BalanceLedger, JournalEntry
from connector.claims import Claim

log = structlog.get_logger(__name__)

Direction = Literal["sent", "received"]

# The `acknowledged` column of a sent claim.
_WAITING, _ACKNOWLEDGED, _VOID = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    direction          TEXT NOT NULL,  -- 'sent' (we signed it) or 'received' (the peer did)
    peer_id            TEXT NOT NULL,
    channel_id         TEXT NOT NULL,
    nonce              TEXT NOT NULL,  -- decimal: uint256
    transferred_amount TEXT NOT NULL,  -- decimal, cumulative over the channel
    amount             TEXT NOT NULL,  -- decimal: what this claim adds to the previous one
    claim              TEXT NOT NULL,  -- the claim's JSON, as sent or received
    acknowledged       INTEGER NOT NULL,  -- 0 waiting, 1 acknowledged (credited),
                                          -- 2 void: its channel settled without it
    recorded_at        REAL NOT NULL,
    acknowledged_at    REAL,
    PRIMARY KEY (direction, peer_id, channel_id, nonce)
) WITHOUT ROWID
"""
_PAYOUTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_payouts (
    peer_id      TEXT NOT NULL,
    channel_id   TEXT NOT NULL,
    our_payout   TEXT NOT NULL,  -- decimal: what the settle paid us
    their_payout TEXT NOT NULL,  -- decimal: what it paid the peer
    cooperative  INTEGER NOT NULL,
    paid_to_peer TEXT NOT NULL,  -- decimal, signed: value that moved to the peer, net
    adjustment   TEXT NOT NULL,  -- decimal, signed: what the ledger was corrected by
    recorded_at  REAL NOT NULL,
    PRIMARY KEY (peer_id, channel_id)
) WITHOUT ROWID
"""
# Neither statement can fail on a repeat, so a journal entry can never poison a ledger batch.
_INSERT = (
    "INSERT INTO claims (direction, peer_id, channel_id, nonce, transferred_amount, amount,"
    " claim, acknowledged, recorded_at, acknowledged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
# A sent claim acknowledged (_ACKNOWLEDGED) or void (_VOID).
_RESOLVE_SENT = (
    "UPDATE claims SET acknowledged = ?, acknowledged_at = ?"
    " WHERE direction = 'sent' AND peer_id = ? AND channel_id = ? AND nonce = ?"
)
_INSERT_PAYOUT = (
    "INSERT INTO channel_payouts (peer_id, channel_id, our_payout, their_payout, cooperative,"
    " paid_to_peer, adjustment, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class StoredClaim:
    direction: Direction
    peer_id: str
    claim: Claim
    # What this claim adds to the previous one on its channel: the amount credited for it.
    amount: int
    acknowledged: bool
    recorded_at: float
    # A sent claim its channel settled without (never acknowledged, not used on-chain).
    void: bool = False

    @property
    def channel_id(self) -> str:
        return self.claim.channel_id

    @property
    def nonce(self) -> int:
        return self.claim.nonce

    @property
    def transferred_amount(self) -> int:
        return self.claim.transferred_amount


@dataclass(frozen=True, slots=True)
class ClaimSummary:
    """The latest claims with one peer on one channel (what /health shows)."""

    channel_id: str | None
    sent: StoredClaim | None
    received: StoredClaim | None


@dataclass(frozen=True, slots=True)
class ChannelPayout:
    """A settled channel as the ledger took it: the settle event's payout, the value that
    moved to the peer net of what it paid us (negative: to us), and the correction the
    ledger needed to agree with it (connector.payout)."""

    peer_id: str
    channel_id: str
    our_payout: int
    their_payout: int
    cooperative: bool
    paid_to_peer: int
    adjustment: int


_Key = tuple[str, str]  # (peer id, channel id)


class ClaimIndex:
    """The latest claims per peer and channel, in memory; no I/O."""

    def __init__(self, rows: list[StoredClaim], payouts: Iterable[_Key] = ()) -> None:
        """`payouts`: the (peer, channel) pairs whose settlement is reconciled."""
        self._sent: dict[_Key, StoredClaim] = {}
        self._acknowledged: dict[_Key, StoredClaim] = {}
        self._received: dict[_Key, StoredClaim] = {}
        self._pending: dict[_Key, StoredClaim] = {}
        self._latest_channel: dict[str, str] = {}
        self._payouts: set[_Key] = {(peer, _normal(channel)) for peer, channel in payouts}
        for stored in sorted(rows, key=lambda row: (row.recorded_at, row.nonce)):
            self._remember(stored)

    # --- reads ---------------------------------------------------------------------------

    def best_received(self, peer_id: str, channel_id: str) -> StoredClaim | None:
        """The partner's claim with the highest nonce on the channel (what a close submits)."""
        return self._received.get((peer_id, _normal(channel_id)))

    def latest_sent(self, peer_id: str, channel_id: str) -> StoredClaim | None:
        """Our claim with the highest nonce on the channel, acknowledged or not."""
        return self._sent.get((peer_id, _normal(channel_id)))

    def latest_acknowledged(self, peer_id: str, channel_id: str) -> StoredClaim | None:
        """Our latest claim on the channel that the peer acknowledged (and we credited)."""
        return self._acknowledged.get((peer_id, _normal(channel_id)))

    def pending_sent(self, peer_id: str, channel_id: str | None = None) -> StoredClaim | None:
        """The claim we sent the peer on the channel (on any channel: the latest) and have no
        acknowledgement for: the one to send again."""
        if channel_id is not None:
            return self._pending.get((peer_id, _normal(channel_id)))
        waiting = [claim for (peer, _), claim in self._pending.items() if peer == peer_id]
        return max(waiting, key=lambda claim: claim.recorded_at, default=None)

    def has_payout(self, peer_id: str, channel_id: str) -> bool:
        """The channel's settlement has been reconciled with the ledger (`record_payout`)."""
        return (peer_id, _normal(channel_id)) in self._payouts

    def peers_with_pending(self) -> list[str]:
        return sorted({peer_id for peer_id, _ in self._pending})

    def summary(self, peer_id: str, channel_id: str | None = None) -> ClaimSummary:
        """Latest claims on `channel_id`, or on the channel the peer's last claim was on."""
        channel = _normal(channel_id) if channel_id else self._latest_channel.get(peer_id)
        if channel is None:
            return ClaimSummary(None, None, None)
        return ClaimSummary(
            channel, self._sent.get((peer_id, channel)), self._received.get((peer_id, channel))
        )

    def _remember(self, stored: StoredClaim) -> None:
        key = (stored.peer_id, stored.channel_id)
        self._latest_channel[stored.peer_id] = stored.channel_id
        if stored.direction == "received":
            _keep_highest(self._received, key, stored)
            return
        _keep_highest(self._sent, key, stored)
        if stored.acknowledged or stored.void:
            if stored.acknowledged:
                _keep_highest(self._acknowledged, key, stored)
            pending = self._pending.get(key)
            if pending is not None and pending.claim == stored.claim:
                del self._pending[key]
        else:
            self._pending[key] = stored


class ClaimStore(ClaimIndex):
    """The node's claims: the index, and writes that go through the ledger's batches."""

    def __init__(
        self, ledger: BalanceLedger, rows: list[StoredClaim], payouts: Iterable[_Key] = ()
    ) -> None:
        super().__init__(rows, payouts)
        self._ledger = ledger

    @classmethod
    def open(cls, path: str | Path, ledger: BalanceLedger) -> ClaimStore:
        """Create the tables in the ledger file if needed and load what they hold."""
        connection = sqlite3.connect(path, timeout=10.0)
        try:
            with connection:
                connection.execute(_SCHEMA)
                connection.execute(_PAYOUTS_SCHEMA)
            rows = _read_rows(connection)
            payouts = connection.execute("SELECT peer_id, channel_id FROM channel_payouts")
            settled = list(payouts)
        finally:
            connection.close()
        store = cls(ledger, rows, settled)
        log.info(
            "CLAIM_STORE_OPENED",
            path=str(path),
            claims=len(rows),
            pending=len(store.peers_with_pending()),
        )
        return store

    # --- writes (durable on return) ------------------------------------------------------------

    async def record_sent(self, peer_id: str, claim: Claim, amount: int) -> StoredClaim:
        """Keep a claim we are about to send; it is the peer's pending claim until acked."""
        if (peer_id, claim.channel_id) in self._pending:
            raise ValueError(f"{peer_id} has a pending claim on the channel; send that one")
        stored = StoredClaim("sent", peer_id, claim, amount, False, time.time())
        self._remember(stored)
        await self._ledger.write_journal([_insert(stored)])
        return stored

    async def record_acknowledged(self, sent: StoredClaim) -> StoredClaim | None:
        """The peer acknowledged `sent`: we owe it `sent.amount` less, in the same write.
        None, and no credit, when `sent` is no longer waiting: its channel settled meanwhile
        and `record_payout` already resolved it against what moved on-chain."""
        pending = self._pending.get((sent.peer_id, sent.channel_id))
        if pending is None or pending.claim != sent.claim:
            log.warning(
                "CLAIM_ACK_AFTER_SETTLE",
                peerId=sent.peer_id,
                channelId=sent.channel_id,
                nonce=str(sent.nonce),
            )
            return None
        acknowledged = replace(sent, acknowledged=True)
        self._remember(acknowledged)
        await self._ledger.apply_outgoing_settlement(
            sent.peer_id,
            sent.amount,
            [_resolve_sent(sent, _ACKNOWLEDGED, time.time())],
        )
        return acknowledged

    async def record_received(self, peer_id: str, claim: Claim, amount: int) -> StoredClaim:
        """Keep an accepted claim and credit `amount` to the peer's balance, in one write."""
        stored = StoredClaim("received", peer_id, claim, amount, True, time.time())
        self._remember(stored)
        await self._ledger.apply_incoming_settlement(peer_id, amount, [_insert(stored)])
        return stored

    async def record_payout(self, payout: ChannelPayout, pending_used: bool) -> bool:
        """The channel settled: correct the peer's balance by `payout.adjustment` (positive:
        more moved to the peer than its balance counted), and resolve the claim still waiting
        on the channel, if any: acknowledged when `pending_used`, else void. One write with
        the payout row; False (nothing written) when the channel was already recorded."""
        peer_id, channel_id = payout.peer_id, _normal(payout.channel_id)
        key = (peer_id, channel_id)
        if key in self._payouts:
            return False
        self._payouts.add(key)
        now = time.time()
        journal: list[JournalEntry] = [
            (
                _INSERT_PAYOUT,
                (
                    peer_id,
                    channel_id,
                    str(payout.our_payout),
                    str(payout.their_payout),
                    int(payout.cooperative),
                    str(payout.paid_to_peer),
                    str(payout.adjustment),
                    now,
                ),
            )
        ]
        pending = self._pending.get(key)
        if pending is not None:
            resolved = replace(pending, acknowledged=pending_used, void=not pending_used)
            self._remember(resolved)
            journal.append(_resolve_sent(pending, _ACKNOWLEDGED if pending_used else _VOID, now))
        if payout.adjustment > 0:
            await self._ledger.apply_outgoing_settlement(peer_id, payout.adjustment, journal)
        elif payout.adjustment < 0:
            await self._ledger.apply_incoming_settlement(peer_id, -payout.adjustment, journal)
        else:
            await self._ledger.write_journal(journal)
        return True


def read_claims(path: str | Path) -> ClaimIndex:
    """The claims in a node's ledger file, read-only, as another process sees them (empty
    when the file or its table does not exist yet)."""
    try:
        connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.OperationalError:
        return ClaimIndex([])
    try:
        return ClaimIndex(_read_rows(connection))
    except sqlite3.OperationalError:  # no claims table: settlement never ran on this file
        return ClaimIndex([])
    finally:
        connection.close()


def _read_rows(connection: sqlite3.Connection) -> list[StoredClaim]:
    return [
        StoredClaim(
            direction=direction,
            peer_id=peer_id,
            claim=Claim.model_validate_json(claim),
            amount=int(amount),
            acknowledged=acknowledged == _ACKNOWLEDGED,
            recorded_at=recorded_at,
            void=acknowledged == _VOID,
        )
        for direction, peer_id, claim, amount, acknowledged, recorded_at in connection.execute(
            "SELECT direction, peer_id, claim, amount, acknowledged, recorded_at FROM claims"
        )
    ]


def _keep_highest(claims: dict[_Key, StoredClaim], key: _Key, stored: StoredClaim) -> None:
    current = claims.get(key)
    if current is None or stored.nonce >= current.nonce:
        claims[key] = stored


def _resolve_sent(sent: StoredClaim, state: int, at: float) -> JournalEntry:
    return (_RESOLVE_SENT, (state, at, sent.peer_id, sent.channel_id, str(sent.nonce)))


def _insert(stored: StoredClaim) -> JournalEntry:
    return (
        _INSERT,
        (
            stored.direction,
            stored.peer_id,
            stored.channel_id,
            str(stored.nonce),
            str(stored.transferred_amount),
            str(stored.amount),
            stored.claim.to_json().decode(),
            _ACKNOWLEDGED if stored.acknowledged else _WAITING,
            stored.recorded_at,
            stored.recorded_at if stored.acknowledged else None,
        ),
    )


def _normal(channel_id: str) -> str:
    return "0x" + channel_id.removeprefix("0x").lower()
