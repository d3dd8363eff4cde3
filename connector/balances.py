"""Per-peer balances: credit limits on incoming packets, debts on outgoing ones, kept durably.

A peer's balance is what that peer owes us, net, in base units of the settlement asset:

    incoming Prepare from A, amount x   hold_incoming(A, x)        A's pending += x
                                          (CreditLimitExceeded, T04, when balance + pending
                                           + x would exceed A's credit limit)
      ... answered with a Fulfill      await commit_incoming(A, x) pending -= x, balance += x
      ... answered with a Reject       release_incoming(A, x)      pending -= x (refund)
    outgoing Prepare to B fulfilled    await record_outgoing(B, y) balance -= y: we owe B
    our settlement to B acknowledged   await apply_outgoing_settlement(B, z)   balance += z
    B's settlement to us received      await apply_incoming_settlement(B, z)   balance -= z

A settlement may carry `journal` statements (the claim store's rows, connector/claim_store.py):
they are written in the same SQLite transaction as the balance they explain, so after a crash
the file holds both or neither — a claim is never credited twice nor recorded uncredited.
`write_journal` writes statements alone, with the same durability.

When what we owe a peer (-balance) reaches its settlement threshold, the listener gets one
`SettlementRequired(peer_id, amount)`; no second event for that peer until a settlement is
applied or `settlement_failed(peer_id)` re-arms it.

Memory is authoritative and every change happens in the event loop thread without an `await`
between check and update, so concurrent packets never lose an update. Committed balances are
written to SQLite (WAL mode) as absolute values, in one transaction per event-loop turn: every
`await` on a committing method returns only once that change is on disk, so a Fulfill passed
upstream after it is never forgotten by a restarted node. Holds are not written: an unanswered
Prepare was never acknowledged, and it is simply gone after a restart.

Durability (`synchronous`): with WAL, "normal" makes a commit durable against a process crash
(SIGKILL, OOM, restart): the WAL write reaches the OS before the commit returns; only power or
kernel loss can drop the last transactions before a checkpoint. "full" adds an fsync of the WAL
per commit, surviving power loss too; it runs in a writer thread so the fsync never blocks the
event loop. Figures for both are in BENCHMARKS.md ("Ledger").

This module does not decide which peer a packet goes to, compute fees, or talk to the chain.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from connector.config import NodeConfig
from connector.errors import InsufficientLiquidity

log = structlog.get_logger(__name__)

Synchronous = Literal["normal", "full"]
SCHEMA_VERSION = 1


class BalanceError(Exception):
    """A misuse of the ledger (unknown peer, negative amount): a bug, not a packet outcome."""


class UnknownPeer(BalanceError, KeyError):
    pass


class CreditLimitExceeded(InsufficientLiquidity):
    """T04: the peer already owes us as much as we extend it credit for."""

    def __init__(self, peer_id: str, amount: int, owed: int, credit_limit: int) -> None:
        # The message ilp-connector's balance middleware sends; the numbers stay with us.
        super().__init__("exceeded maximum balance.")
        self.peer_id = peer_id
        self.amount = amount
        self.owed = owed
        self.credit_limit = credit_limit


@dataclass(frozen=True, slots=True)
class AccountLimits:
    credit_limit: int
    # What we may owe the peer before asking for a settlement; None: never ask.
    settlement_threshold: int | None = None


@dataclass(frozen=True, slots=True)
class SettlementRequired:
    """We owe `peer_id` at least its threshold; `amount` settles the balance to zero."""

    peer_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    peer_id: str
    balance: int
    pending_incoming: int
    credit_limit: int
    settlement_threshold: int | None


class Account:
    """One peer's numbers and the pure rules over them; no I/O."""

    __slots__ = ("balance", "limits", "peer_id", "pending_incoming", "settlement_requested")

    def __init__(self, peer_id: str, limits: AccountLimits, balance: int = 0) -> None:
        self.peer_id = peer_id
        self.limits = limits
        self.balance = balance
        self.pending_incoming = 0
        self.settlement_requested = False

    def hold(self, amount: int) -> None:
        owed = self.balance + self.pending_incoming
        if owed + amount > self.limits.credit_limit:
            raise CreditLimitExceeded(self.peer_id, amount, owed, self.limits.credit_limit)
        self.pending_incoming += amount

    def release(self, amount: int) -> None:
        if amount > self.pending_incoming:
            raise BalanceError(f"release of {amount} exceeds {self.peer_id}'s holds")
        self.pending_incoming -= amount

    def commit(self, amount: int) -> None:
        self.release(amount)
        self.balance += amount

    def settlement_due(self) -> SettlementRequired | None:
        """The event to emit now, if the debt reached the threshold and none is outstanding."""
        threshold = self.limits.settlement_threshold
        if self.settlement_requested or threshold is None or -self.balance < threshold:
            return None
        self.settlement_requested = True
        return SettlementRequired(self.peer_id, -self.balance)

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(
            self.peer_id,
            self.balance,
            self.pending_incoming,
            self.limits.credit_limit,
            self.limits.settlement_threshold,
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS balances (
    peer_id    TEXT PRIMARY KEY,
    balance    TEXT NOT NULL,  -- decimal: sums of uint64 amounts outgrow SQLite's int64
    updated_at REAL NOT NULL
) WITHOUT ROWID
"""
_UPSERT = (
    "INSERT INTO balances (peer_id, balance, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (peer_id) DO UPDATE SET balance = excluded.balance,"
    " updated_at = excluded.updated_at"
)

_Row = tuple[str, str, float]
# One SQL statement and its parameters, written in the batch transaction of a balance change.
JournalEntry = tuple[str, tuple[object, ...]]
SettlementListener = Callable[[SettlementRequired], object]


def limits_from_config(config: NodeConfig) -> dict[str, AccountLimits]:
    return {
        peer.id: AccountLimits(peer.credit_limit, config.settlement_threshold_for(peer.id))
        for peer in config.peers
    }


class BalanceLedger:
    """The node's accounts, in memory, written through to one SQLite file.

    Build it with `open` inside the running event loop; `close` it on shutdown (it writes what
    is still pending). The listener is called synchronously and must not block: hand the event
    to a queue or a task.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        accounts: dict[str, Account],
        *,
        synchronous: Synchronous,
        on_settlement_required: SettlementListener | None,
    ) -> None:
        self._connection = connection
        self._accounts = accounts
        self._listener = on_settlement_required
        # "full" fsyncs per commit: keep that wait off the event loop.
        self._writer = (
            ThreadPoolExecutor(1, thread_name_prefix="ledger") if synchronous == "full" else None
        )
        self._dirty: set[str] = set()
        self._journal: list[JournalEntry] = []
        self._next_flush: asyncio.Future[None] | None = None
        self._writing = False
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        limits: Mapping[str, AccountLimits],
        *,
        synchronous: Synchronous = "normal",
        on_settlement_required: SettlementListener | None = None,
    ) -> BalanceLedger:
        """Open (or create) the ledger file and restore every balance it holds.

        Peers found in the file but no longer configured keep their balance (visible in
        `snapshots`) with no credit.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            connection.close()
            raise BalanceError(f"{path}: ledger schema {version}, expected {SCHEMA_VERSION}")
        connection.execute(_SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        accounts = {peer: Account(peer, peer_limits) for peer, peer_limits in limits.items()}
        for peer_id, balance in connection.execute("SELECT peer_id, balance FROM balances"):
            account = accounts.get(peer_id) or Account(peer_id, AccountLimits(credit_limit=0))
            account.balance = int(balance)
            accounts[peer_id] = account
        log.info("LEDGER_OPENED", path=str(path), accounts=len(accounts), synchronous=synchronous)
        return cls(
            connection,
            accounts,
            synchronous=synchronous,
            on_settlement_required=on_settlement_required,
        )

    # --- the packet path -------------------------------------------------------------------

    def hold_incoming(self, peer_id: str, amount: int) -> None:
        """Reserve credit for a Prepare from `peer_id`, or raise CreditLimitExceeded (T04)."""
        self._account(peer_id).hold(_amount(amount))

    def release_incoming(self, peer_id: str, amount: int) -> None:
        """The held Prepare was rejected: give the credit back. Nothing to write."""
        self._account(peer_id).release(_amount(amount))

    async def commit_incoming(self, peer_id: str, amount: int) -> None:
        """The held Prepare was fulfilled: `peer_id` owes us `amount`. Durable on return."""
        account = self._account(peer_id)
        account.commit(_amount(amount))
        try:
            await self._persist(peer_id)
        except BaseException:
            # Not durable (write failed, or the task was cancelled): the Fulfill will not go
            # upstream, so the peer owes nothing for it. The next batch writes the undone value.
            account.balance -= amount
            if not self._closed:
                self._schedule(peer_id)
            raise

    async def record_outgoing(self, peer_id: str, amount: int) -> None:
        """`peer_id` fulfilled our Prepare: we owe it `amount`. Durable on return."""
        account = self._account(peer_id)
        account.balance -= _amount(amount)
        self._emit_if_due(account)
        await self._persist(peer_id)

    # --- settlement --------------------------------------------------------------------------

    async def apply_outgoing_settlement(
        self, peer_id: str, amount: int, journal: Sequence[JournalEntry] = ()
    ) -> None:
        """`peer_id` acknowledged our payment of `amount`: we owe it that much less.
        `journal` is written in the same transaction as the new balance."""
        account = self._account(peer_id)
        account.balance += _amount(amount)
        account.settlement_requested = False
        self._emit_if_due(account)
        await self._persist(peer_id, journal)

    async def apply_incoming_settlement(
        self, peer_id: str, amount: int, journal: Sequence[JournalEntry] = ()
    ) -> None:
        """We received `amount` from `peer_id`: it owes us that much less, freeing credit.
        `journal` is written in the same transaction as the new balance."""
        account = self._account(peer_id)
        account.balance -= _amount(amount)
        self._emit_if_due(account)
        await self._persist(peer_id, journal)

    async def write_journal(self, journal: Sequence[JournalEntry]) -> None:
        """Write `journal` with the next batch, no balance change. Durable on return."""
        await self._persist(None, journal)

    def settlement_failed(self, peer_id: str) -> None:
        """The requested settlement did not happen: ask again if still due."""
        account = self._account(peer_id)
        account.settlement_requested = False
        self._emit_if_due(account)

    def due_settlements(self) -> list[SettlementRequired]:
        """Every peer whose debt is at or over its threshold (e.g. right after a restart)."""
        return [
            SettlementRequired(a.peer_id, -a.balance)
            for a in self._accounts.values()
            if a.limits.settlement_threshold is not None
            and -a.balance >= a.limits.settlement_threshold
        ]

    # --- reading -------------------------------------------------------------------------------

    def snapshot(self, peer_id: str) -> AccountSnapshot:
        return self._account(peer_id).snapshot()

    def snapshots(self) -> list[AccountSnapshot]:
        return [account.snapshot() for account in self._accounts.values()]

    # --- persistence -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every change made so far is on disk."""
        if self._dirty or self._journal or self._writing:
            await self._persist(None)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        self._connection.close()
        log.info("LEDGER_CLOSED")

    def _account(self, peer_id: str) -> Account:
        try:
            return self._accounts[peer_id]
        except KeyError:
            raise UnknownPeer(peer_id) from None

    def _emit_if_due(self, account: Account) -> None:
        event = account.settlement_due()
        if event is not None and self._listener is not None:
            self._listener(event)

    async def _persist(self, peer_id: str | None, journal: Sequence[JournalEntry] = ()) -> None:
        """Join the next write batch and wait for it. One transaction per loop turn."""
        # shield: a cancelled packet task must not cancel the batch other packets wait for.
        await asyncio.shield(self._schedule(peer_id, journal))

    def _schedule(
        self, peer_id: str | None, journal: Sequence[JournalEntry] = ()
    ) -> asyncio.Future[None]:
        if self._closed:
            raise BalanceError("ledger is closed")
        if peer_id is not None:
            self._dirty.add(peer_id)
        self._journal.extend(journal)
        if self._next_flush is None:
            loop = asyncio.get_running_loop()
            self._next_flush = loop.create_future()
            if not self._writing:
                loop.call_soon(self._write_batch)
        return self._next_flush

    def _write_batch(self) -> None:
        done, self._next_flush = self._next_flush, None
        assert done is not None
        now = time.time()
        rows = [(peer, str(self._accounts[peer].balance), now) for peer in self._dirty]
        self._dirty.clear()
        journal, self._journal = self._journal, []
        if self._writer is None:
            try:
                self._write_rows(rows, journal)
            except Exception as exc:
                self._batch_failed(done, rows, journal, exc)
            else:
                done.set_result(None)
            return
        self._writing = True
        written = asyncio.get_running_loop().run_in_executor(
            self._writer, self._write_rows, rows, journal
        )
        written.add_done_callback(functools.partial(self._batch_written, done, rows, journal))

    def _batch_written(
        self,
        done: asyncio.Future[None],
        rows: list[_Row],
        journal: list[JournalEntry],
        written: asyncio.Future[None],
    ) -> None:
        self._writing = False
        failure = written.exception()
        if failure is None:
            done.set_result(None)
        else:
            self._batch_failed(done, rows, journal, failure)
        # Changes made while the writer thread was busy form the next batch.
        if self._next_flush is not None:
            asyncio.get_running_loop().call_soon(self._write_batch)

    def _batch_failed(
        self,
        done: asyncio.Future[None],
        rows: list[_Row],
        journal: list[JournalEntry],
        exc: BaseException,
    ) -> None:
        # Memory still holds the numbers: mark them dirty so the next batch writes them again,
        # with the journal entries that explain them, ahead of any newer ones.
        self._dirty.update(peer for peer, _, _ in rows)
        self._journal[:0] = journal
        log.error("LEDGER_WRITE_FAILED", error=repr(exc), peers=len(rows))
        done.set_exception(exc)

    def _write_rows(self, rows: list[_Row], journal: list[JournalEntry]) -> None:
        connection = self._connection
        connection.execute("BEGIN")
        try:
            connection.executemany(_UPSERT, rows)
            for statement, parameters in journal:
                connection.execute(statement, parameters)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def _amount(amount: int) -> int:
    if amount < 0:
        raise BalanceError(f"amount must not be negative, got {amount}")
    return amount


def open_ledger(
    config: NodeConfig, *, on_settlement_required: SettlementListener | None = None
) -> BalanceLedger:
    """The ledger for a node, at its configured path, with limits from its peers."""
    return BalanceLedger.open(
        config.resolved_ledger_path,
        limits_from_config(config),
        synchronous=config.ledger_sync,
        on_settlement_required=on_settlement_required,
    )
