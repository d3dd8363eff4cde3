"""Payout reconciliation: once a channel settles, the claim we sent and never saw acknowledged
is settled by what the chain paid, and the peer's balance with it.

The ledger counts a claim when both ends count it: ours when the peer acknowledges it (the
peer stored it first), the peer's when we accept it. A claim we sent whose acknowledgement
never came back (lost with the link, the channel closing first) is not counted; yet the peer
may hold it and close with it, or a cooperative settle may pay it, and then the money moved
while the ledger still says we owe it: the next channel would pay it twice.

What moved to the peer, net, is read off the payout: our deposit less our withdrawals less
what the settlement paid us (exact for a cooperative settle and for `settleChannel`, whose
payouts follow the proofs on-chain). The ledger counted our acknowledged claim less the
peer's best claim. The difference decides:

    0                                the ledger agrees; a claim still waiting is void (it
                                     can never be used now) and stops waiting
    what the waiting claim adds      it was used: acknowledged and credited now
    anything else, cooperative       both ends signed those balances: the ledger follows
                                     them (the peer's own unacknowledged claim paid to us)
    anything else, unilateral        the close went on older proofs than the newest claims
                                     (the partner closed with an old claim of ours, an
                                     update missed the window): that side's loss, and both
                                     ledgers counted the claims already; logged, no change

each written in one transaction with the payout row, which makes it once per channel.

`reconcile` is the pure rule; `PayoutReconciler` reads the chain and writes the claim store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import structlog

from connector.claim_store import ChannelPayout, ClaimStore, StoredClaim
from connector.claims import ChannelSide
from workflows.messages import ChannelClosing

log = structlog.get_logger(__name__)


class Outcome(enum.StrEnum):
    AGREES = "agrees"  # the ledger already counts what moved
    PENDING_USED = "pending_used"  # our unacknowledged claim was paid: credit it now
    COOPERATIVE_BALANCES = "cooperative_balances"  # the ledger follows the signed balances
    UNILATERAL_MISMATCH = "unilateral_mismatch"  # settled on older proofs: logged only


@dataclass(frozen=True, slots=True)
class Reconciliation:
    # Value that moved to the peer on-chain, net of what moved to us (negative: to us).
    paid_to_peer: int
    # Our acknowledged claim's cumulative amount, and the peer's best claim's: both counted.
    acknowledged: int
    received: int
    # Our claim on the channel still waiting for its acknowledgement (not counted).
    pending: StoredClaim | None
    cooperative: bool

    @property
    def credited(self) -> int:
        """What the ledger counted as moved to the peer through the channel, net."""
        return self.acknowledged - self.received

    @property
    def difference(self) -> int:
        """What moved to the peer beyond what the ledger counted (negative: to us)."""
        return self.paid_to_peer - self.credited

    @property
    def outcome(self) -> Outcome:
        difference = self.difference
        if difference == 0:
            return Outcome.AGREES
        pending = self.pending
        if pending is not None and difference == pending.transferred_amount - self.acknowledged:
            return Outcome.PENDING_USED
        if self.cooperative:
            return Outcome.COOPERATIVE_BALANCES
        return Outcome.UNILATERAL_MISMATCH

    @property
    def adjustment(self) -> int:
        """Add to the peer's balance (what it owes us): positive when more moved to it."""
        if self.outcome in (Outcome.PENDING_USED, Outcome.COOPERATIVE_BALANCES):
            return self.difference
        return 0


def reconcile(
    *,
    our_funds: ChannelSide,
    our_payout: int,
    cooperative: bool,
    acknowledged: StoredClaim | None,
    received: StoredClaim | None,
    pending: StoredClaim | None,
) -> Reconciliation:
    """The settled channel's payout against the claims the ledger counted."""
    return Reconciliation(
        paid_to_peer=our_funds.deposit - our_funds.withdrawn - our_payout,
        acknowledged=acknowledged.transferred_amount if acknowledged else 0,
        received=received.transferred_amount if received else 0,
        pending=pending,
        cooperative=cooperative,
    )


class FundingReader(Protocol):
    """`connector.chain_view.ChannelChainView.funding`."""

    async def funding(self, channel_id: str, participant: str) -> ChannelSide: ...


class PayoutReconciler:
    """Told by the connector activity `mark_channel_closing` when a channel settled."""

    def __init__(self, claims: ClaimStore, chain: FundingReader, our_address: str) -> None:
        self._claims = claims
        self._chain = chain
        self._our_address = our_address

    async def reconcile(self, closing: ChannelClosing) -> None:
        """Bring the peer's balance to the payout. Safe to retry: once per channel."""
        payout, claims = closing.payout, self._claims
        peer_id, channel_id = closing.peer_id, closing.channel_id
        if payout is None:
            log.warning("CHANNEL_PAYOUT_UNKNOWN", peerId=peer_id, channelId=channel_id)
            return
        if claims.has_payout(peer_id, channel_id):
            return
        funds = await self._chain.funding(channel_id, self._our_address)
        # The claims are read after the chain, with no await until they are recorded: an
        # acknowledgement arriving meanwhile is either counted here or refused by the store.
        result = reconcile(
            our_funds=funds,
            our_payout=int(payout.our_amount),
            cooperative=payout.cooperative,
            acknowledged=claims.latest_acknowledged(peer_id, channel_id),
            received=claims.best_received(peer_id, channel_id),
            pending=claims.pending_sent(peer_id, channel_id),
        )
        outcome = result.outcome
        recorded = await claims.record_payout(
            ChannelPayout(
                peer_id=peer_id,
                channel_id=channel_id,
                our_payout=int(payout.our_amount),
                their_payout=int(payout.their_amount),
                cooperative=payout.cooperative,
                paid_to_peer=result.paid_to_peer,
                adjustment=result.adjustment,
            ),
            pending_used=outcome is Outcome.PENDING_USED,
        )
        if not recorded:
            return
        pending = result.pending
        fields = {
            "peerId": peer_id,
            "channelId": channel_id,
            "outcome": outcome.value,
            "paidToPeer": str(result.paid_to_peer),
            "credited": str(result.credited),
            "difference": str(result.difference),
            "adjustment": str(result.adjustment),
            "pendingNonce": str(pending.nonce) if pending else None,
        }
        if outcome is Outcome.UNILATERAL_MISMATCH:
            log.warning("CHANNEL_PAYOUT_MISMATCH", **fields)
        else:
            log.info("CHANNEL_PAYOUT_RECONCILED", **fields)
