"""The chaos soak's invariants: pure checks over what was read after a round (no I/O).

`tests/chaos/soak.py` reads the chain, every node's /health, /admin/balances and claim store,
and its own record of the payments it sent; each check here turns that into `Violation`s
(none: the invariant holds).

- `check_channels`: one channel per pair on-chain: pair counter = `ChannelOpened` events,
  one channel more than the closes the soak asked for at most, every channel but the last
  settled, none settled that the soak did not close, a READY end's channel open; and
  each depositing side's deposit `target <= deposit <= target + our latest claim`: exactly
  the target until claims use half of it, then each top-up restores the target remaining,
  so a deposit above `target + claimed` was sent twice. A side that never deposits (an
  extra peer) holds 0.
- `not_ready`: every connected peer is READY (or TOPPING_UP, a READY channel being topped
  up) at both ends, in the node's view (/health) and in its running channel workflow; the
  soak waits for this with a bound.
- `check_claims`: per channel, the payer's claims have nonces 1, 2, … with growing amounts
  and only the latest unacknowledged; the payee accepted only claims the payer signed, each
  once (credited amounts sum to the latest transferred amount: no claim credited twice);
  every claim the payer saw acknowledged is stored by the payee; no claim above what the
  payer can pay on the current channel (its deposit plus the claims it received there). Each end is read twice (`ReadTwice`), so a claim in
  flight between two reads is never taken for a missing one.
- `check_ledger`: for each node and peer, `balance - claims acknowledged to the peer +
  claims received from it - corrections at settlement (connector.payout)` (the packet
  part of the balance) equals what the soak saw
  fulfilled across that link. A payment that was not seen fulfilled while a connector on
  its path was killed may have been committed at one end of a link and not the other (the
  ILP risk of a crash mid-packet); those amounts may explain a difference, each at most
  once (a subset sum), and nothing else may.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

READY_STAGES = frozenset({"READY", "TOPPING_UP"})
# Beyond this many uncertain payments on one link end the subset sums are not enumerated.
MAX_UNCERTAIN = 20


@dataclass(frozen=True)
class Violation:
    invariant: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} @ {self.where}: {self.detail}"


# --- channels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairOnChain:
    """What the chain says of one pair of ends (node or extra peer ids)."""

    ends: tuple[str, str]
    pair_counter: int
    opened_events: int
    channel_id: str | None
    is_open: bool
    # end id -> its deposit on the pair's current channel (0 without a channel)
    deposits: Mapping[str, int]
    # State (OPENED, CLOSED, SETTLED) of each channel the pair ever had, in opening order.
    states: tuple[str, ...] = ()
    # How many times the soak asked to close the pair's channel.
    closes_asked: int = 0


def check_channels(
    pairs: Iterable[PairOnChain],
    *,
    ready_ends: set[tuple[str, str]],
    depositors: set[str],
    target: int,
    latest_sent: Mapping[tuple[str, str], int],
) -> list[Violation]:
    """`ready_ends`: (end, other end) whose channel is READY at `end`; `latest_sent`: (payer,
    payee) -> transferred amount of the payer's latest claim on the pair's channel."""
    found = []
    for pair in pairs:
        where = "-".join(pair.ends)
        if pair.pair_counter > 1 + pair.closes_asked:
            found.append(
                Violation(
                    "one channel per pair",
                    where,
                    f"{pair.pair_counter} channels opened, {pair.closes_asked} closed by the soak",
                )
            )
        if any(state != "SETTLED" for state in pair.states[:-1]):
            found.append(
                Violation("one channel per pair", where, f"channel states {list(pair.states)}")
            )
        settled = sum(state == "SETTLED" for state in pair.states)
        if settled > pair.closes_asked:
            found.append(
                Violation(
                    "one channel per pair",
                    where,
                    f"{settled} channels settled, {pair.closes_asked} closed by the soak",
                )
            )
        if pair.opened_events != pair.pair_counter:
            found.append(
                Violation(
                    "one channel per pair",
                    where,
                    f"pair counter {pair.pair_counter}, {pair.opened_events} ChannelOpened",
                )
            )
        a, b = pair.ends
        for end, other in ((a, b), (b, a)):
            if (end, other) not in ready_ends:
                continue
            if pair.channel_id is None or not pair.is_open:
                found.append(
                    Violation("one channel per pair", where, f"{end} READY without open channel")
                )
                continue
            deposit = pair.deposits.get(end, 0)
            if end not in depositors:
                if deposit != 0:
                    found.append(Violation("deposit", f"{where} ({end})", f"deposited {deposit}"))
                continue
            ceiling = target + latest_sent.get((end, other), 0)
            if not target <= deposit <= ceiling:
                found.append(
                    Violation(
                        "deposit",
                        f"{where} ({end})",
                        f"deposit {deposit}, expected {target}..{ceiling}",
                    )
                )
    return found


@dataclass(frozen=True)
class PeerState:
    connected: bool
    # What the node's /health says, and the Stage of the peer's running channel workflow
    # (None: no running workflow).
    stage: str | None
    workflow_stage: str | None

    @property
    def is_ready(self) -> bool:
        return self.stage in READY_STAGES and self.workflow_stage in READY_STAGES


def not_ready(states: Mapping[str, Mapping[str, PeerState]]) -> list[Violation]:
    """Connected peers not READY both in their node's view and in their workflow: node id ->
    peer id -> state."""
    return [
        Violation(
            "connected peer READY",
            f"{node}->{peer}",
            f"node says {state.stage}, workflow {state.workflow_stage}",
        )
        for node, peers in sorted(states.items())
        for peer, state in sorted(peers.items())
        if state.connected and not state.is_ready
    ]


# --- claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRow:
    direction: Literal["sent", "received"]
    peer_id: str
    channel_id: str
    nonce: int
    transferred: int
    amount: int  # what the claim added to the one before it (what was credited)
    acknowledged: bool


@dataclass(frozen=True)
class ReadTwice:
    """One end's claims, read in a first pass over every end and again in a later pass.

    A claim goes payer -> payee while the ends are read one after the other: comparing one
    end's first read with the other end's later read never takes a claim in flight for a
    missing one (the payee holds nothing the payer had not stored before it, the payer
    sees no acknowledgement the payee had not stored before it)."""

    first: Sequence[ClaimRow]
    then: Sequence[ClaimRow]

    @classmethod
    def once(cls, rows: Sequence[ClaimRow]) -> ReadTwice:
        return cls(rows, rows)


def check_claims(
    payer: str,
    payee: str,
    sent: ReadTwice,
    received: ReadTwice,
    payer_deposits: Mapping[str, int],
    returned: Sequence[ClaimRow] = (),
) -> list[Violation]:
    """`sent`: the payer's claims to the payee; `received`: the payee's claims from the payer;
    `payer_deposits`: channel id -> the payer's deposit on it on-chain, read between the two
    passes (the pair's current channel; a settled one holds nothing any more); `returned`:
    the claims the payer received from the payee, first read: on a channel used both ways a
    payer may pay with what it was paid, so it may claim up to its deposit plus those."""
    found = []
    where = f"{payer}->{payee}"
    sent_by_channel, received_by_channel = _by_channel(sent.then), _by_channel(received.then)
    for channel, rows in sent_by_channel.items():
        here = f"{where} {channel[:10]}"
        nonces = [row.nonce for row in rows]
        if nonces != list(range(1, len(rows) + 1)):
            found.append(Violation("claims", here, f"sent nonces {nonces}"))
        previous = 0
        for index, row in enumerate(rows):
            if row.transferred <= previous or row.amount != row.transferred - previous:
                found.append(
                    Violation(
                        "claims",
                        here,
                        f"sent #{row.nonce}: {row.transferred} (+{row.amount}) after {previous}",
                    )
                )
            if not row.acknowledged and index != len(rows) - 1:
                found.append(Violation("claims", here, f"#{row.nonce} unacknowledged, not last"))
            previous = row.transferred
    paid_back = _by_channel(returned)
    for channel, rows in _by_channel(sent.first).items():
        here = f"{where} {channel[:10]}"
        deposit = payer_deposits.get(channel)
        back = paid_back[channel][-1].transferred if channel in paid_back else 0
        if deposit is not None and rows[-1].transferred > deposit + back:
            found.append(
                Violation(
                    "claims",
                    here,
                    f"claimed {rows[-1].transferred} above the deposit {deposit} + {back} "
                    f"received from {payee}",
                )
            )
        stored = {(row.nonce, row.transferred) for row in received_by_channel.get(channel, [])}
        for row in rows:
            if row.acknowledged and (row.nonce, row.transferred) not in stored:
                found.append(
                    Violation(
                        "claims", here, f"#{row.nonce} acknowledged but not stored by {payee}"
                    )
                )
    for channel, rows in _by_channel(received.first).items():
        signed = {(row.nonce, row.transferred) for row in sent_by_channel.get(channel, [])}
        for row in rows:
            if (row.nonce, row.transferred) not in signed:
                found.append(
                    Violation(
                        "claims",
                        f"{where} {channel[:10]}",
                        f"{payee} accepted #{row.nonce} never sent",
                    )
                )
    for channel, rows in received_by_channel.items():
        here = f"{where} {channel[:10]}"
        previous, last_nonce, credited = 0, 0, 0
        for row in rows:
            if row.nonce <= last_nonce or row.amount != row.transferred - previous:
                found.append(
                    Violation(
                        "no claim accepted twice",
                        here,
                        f"received #{row.nonce}: {row.transferred} credited +{row.amount} "
                        f"after #{last_nonce} at {previous}",
                    )
                )
            previous, last_nonce, credited = row.transferred, row.nonce, credited + row.amount
        if rows and credited != rows[-1].transferred:
            found.append(
                Violation(
                    "no claim accepted twice",
                    here,
                    f"credited {credited} for claims totalling {rows[-1].transferred}",
                )
            )
    return found


def _by_channel(rows: Iterable[ClaimRow]) -> dict[str, list[ClaimRow]]:
    grouped: defaultdict[str, list[ClaimRow]] = defaultdict(list)
    for row in rows:
        grouped[row.channel_id].append(row)
    return {channel: sorted(found, key=lambda r: r.nonce) for channel, found in grouped.items()}


# --- ledgers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """A test payment the soak sent: the links it crosses as (payer, payee), in order."""

    hops: tuple[tuple[str, str], ...]
    amount: int
    fulfilled: bool
    # Not seen fulfilled while a connector on its path was killed: its fate per link is
    # unknown.
    uncertain: bool = False


@dataclass(frozen=True)
class LedgerSnapshot:
    node_id: str
    balances: Mapping[str, int]  # peer id -> balance (positive: the peer owes the node)
    claims: Sequence[ClaimRow] = field(default_factory=tuple)
    # peer id -> what settled channels corrected its balance by (connector.payout)
    adjustments: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerFigures:
    link_ends: int = 0
    # Link ends whose difference some in-flight payments of a killed connector explained.
    explained_by_uncertain: int = 0


def check_ledger(
    ledger: LedgerSnapshot, payments: Sequence[Payment]
) -> tuple[list[Violation], LedgerFigures]:
    found = []
    explained = 0
    node = ledger.node_id
    for peer, balance in sorted(ledger.balances.items()):
        acknowledged = sum(
            row.amount
            for row in ledger.claims
            if row.peer_id == peer and row.direction == "sent" and row.acknowledged
        )
        received = sum(
            row.amount
            for row in ledger.claims
            if row.peer_id == peer and row.direction == "received"
        )
        packets = balance - acknowledged + received - ledger.adjustments.get(peer, 0)
        expected, uncertain = 0, []
        for payment in payments:
            for payer, payee in payment.hops:
                sign = (
                    1
                    if (payer, payee) == (peer, node)
                    else -1
                    if (payer, payee) == (node, peer)
                    else 0
                )
                if not sign:
                    continue
                if payment.fulfilled:
                    expected += sign * payment.amount
                elif payment.uncertain:
                    uncertain.append(sign * payment.amount)
        difference = packets - expected
        if difference == 0:
            continue
        if len(uncertain) <= MAX_UNCERTAIN and difference in subset_sums(uncertain):
            explained += 1
            continue
        found.append(
            Violation(
                "ledger = fulfilled - claims",
                f"{node}[{peer}]",
                f"balance {balance} = packets {packets} + claims acknowledged "
                f"{acknowledged} - received {received}; fulfilled across the link {expected}, "
                f"off by {difference} ({len(uncertain)} uncertain payments)",
            )
        )
    return found, LedgerFigures(len(ledger.balances), explained)


def subset_sums(values: Sequence[int]) -> set[int]:
    sums = {0}
    for value in values:
        sums |= {total + value for total in sums}
    return sums
