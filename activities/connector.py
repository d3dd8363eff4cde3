"""ConnectorActivities: what the channel workflow tells, and asks, the connector process.

Registered only by the connector process of the node, on its own task queue
(`connector-<nodeId>`), so a worker running elsewhere still reaches the right connector:
readiness and closing reach its channel registry, claims are read from its claim store, and
a cooperative settle is asked of the partner over its BTP link.

A claims read is a call, not something the connector pushes: the keeper reads the channel on
its own timer anyway, so the claims come with that read at no extra history, where a
connector signalling every claim (or every few minutes of activity) to each peer's workflow
would write history for every payment burst whether or not anything is due.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from temporalio import activity

from connector.channels import ChannelRegistry
from connector.claims import Claim
from workflows import ids
from workflows.messages import (
    ChannelClosing,
    CooperativeSettleAnswer,
    CooperativeSettleRequest,
    ReadClaimsInput,
    SettlementReady,
)
from workflows.provisioning.changes import ClaimsRead
from workflows.provisioning.state import SignedClaim, Stage

log = structlog.get_logger(__name__)


class StoredClaimLike(Protocol):
    @property
    def claim(self) -> Claim: ...


class ClaimReader(Protocol):
    """The reads of `connector.claim_store.ClaimStore` the keeper needs."""

    def latest_sent(self, peer_id: str, channel_id: str) -> StoredClaimLike | None: ...

    def best_received(self, peer_id: str, channel_id: str) -> StoredClaimLike | None: ...


class CooperativeSettler(Protocol):
    """Asks the partner to sign a cooperative settle (`connector.cooperative_settle`)."""

    async def request(self, request: CooperativeSettleRequest) -> CooperativeSettleAnswer: ...


class PayoutReconciler(Protocol):
    """Brings the ledger to a settled channel's payout (`connector.payout`)."""

    async def reconcile(self, closing: ChannelClosing) -> None: ...


class ConnectorActivities:
    def __init__(
        self,
        registry: ChannelRegistry,
        claims: ClaimReader | None = None,
        cooperative: CooperativeSettler | None = None,
        payouts: PayoutReconciler | None = None,
    ) -> None:
        self._registry = registry
        # These may be given after construction, once the node runs (connector/node_command.py).
        self.claims = claims
        self.cooperative = cooperative
        self.payouts = payouts

    @activity.defn(name=ids.MARK_SETTLEMENT_READY)
    async def mark_settlement_ready(self, ready: SettlementReady) -> None:
        """Record that the peer's channel is READY.

        Safe to retry: it sets the peer's view to the given channel and deposits, so a
        repeat leaves the same view; only the first one for a channel logs.
        """
        if self._registry.mark_ready(ready):
            log.info(
                "Payment channel ready",
                peerId=ready.peer_id,
                channelId=ready.channel_id,
                token=ready.token,
                ourDeposit=ready.our_deposit,
                theirDeposit=ready.their_deposit,
            )

    @activity.defn(name=ids.MARK_CHANNEL_CLOSING)
    async def mark_channel_closing(self, closing: ChannelClosing) -> None:
        """Record that the peer's channel is closing (settlement stops using it) or settled;
        once settled, the peer's balance is brought to what the payout moved.
        Safe to retry: it sets the view's stage (a view of a newer channel is left alone),
        and a channel's payout is reconciled once."""
        if self._registry.mark_closing(closing.peer_id, closing.channel_id, closing.stage):
            payout = closing.payout
            where = {"peerId": closing.peer_id, "channelId": closing.channel_id}
            if payout is None:
                log.info("CHANNEL_CLOSING", stage=closing.stage, **where)
            else:
                log.info(
                    "CHANNEL_SETTLED",
                    ourPayout=payout.our_amount,
                    theirPayout=payout.their_amount,
                    cooperative=payout.cooperative,
                    **where,
                )
        # Not only on news: a connector restarted after the settle rebuilds its view as
        # SETTLED already, and the payout still has to reach its ledger.
        if closing.stage == Stage.SETTLED and self.payouts is not None:
            await self.payouts.reconcile(closing)

    @activity.defn(name=ids.READ_CHANNEL_CLAIMS)
    async def read_channel_claims(self, request: ReadClaimsInput) -> ClaimsRead:
        """Our latest sent claim and the partner's best (highest nonce) claim on the channel.

        A connector without a claim store has never exchanged a claim: nothing to prove.
        Also whether claims on the channel are held for a cooperative settle we signed so
        long ago that a READY keeper reading it open should lift the hold (connector.channels).
        Read-only: safe to retry.
        """
        expired = self._registry.cooperative_hold_expired(request.peer_id, request.channel_id)
        store = self.claims
        if store is None:
            return ClaimsRead(cooperative_hold_expired=expired)
        sent = store.latest_sent(request.peer_id, request.channel_id)
        received = store.best_received(request.peer_id, request.channel_id)
        return ClaimsRead(
            latest_sent=_signed(sent.claim) if sent else None,
            best_received=_signed(received.claim) if received else None,
            cooperative_hold_expired=expired,
        )

    @activity.defn(name=ids.REQUEST_COOPERATIVE_SETTLE)
    async def request_cooperative_settle(
        self, request: CooperativeSettleRequest
    ) -> CooperativeSettleAnswer:
        """Ask the partner to sign the same final balances. Signing twice is harmless, so a
        retry just asks again; a refusal or silence is an answer (the close goes unilateral)."""
        if self.cooperative is None:
            return CooperativeSettleAnswer(refused="this connector cannot reach the partner")
        return await self.cooperative.request(request)


def _signed(claim: Claim) -> SignedClaim:
    return SignedClaim(
        nonce=claim.nonce,
        transferred_amount=claim.transferred_amount,
        locked_amount=claim.locked_amount,
        locks_root=claim.locks_root,
        signature=claim.signature,
    )
