"""SettlementService: the connector's side of settlement, by claims over the READY channel.

Paying (one task per peer, woken by `settlement_required`, a link coming up, or a READY):

    1. a claim we sent and the peer never acknowledged?  send that same claim again (6.)
    2. nothing owed at the threshold?                    done
    3. the peer has no evmAddress (SKIPPED)?             logged once and done: no channel will
                                                         ever come, so no retry; the balance
                                                         stays owed under the credit limit
    4. no READY channel?                                 signal `retry` to the peer's channel
                                                         workflow (it opens nothing here) and
                                                         wait for READY; the balance keeps
                                                         accumulating under the credit limit
    5. sign nonce + 1 for the cumulative amount, capped by what our deposit covers, and
       store it (durable) before it leaves; nothing left of the deposit: signal `top_up` to
       the peer's workflow (once per used-up deposit, not per attempt) and go on when the
       larger deposit reaches the registry
    6. send it as BTP protocol data `payment-channel-claim`; on the peer's acknowledgement
       credit the balance (the ack and the credit land in one write). No answer, a closed
       link, a refusal: the same claim again later, never a new amount.

Being paid (`handle_claim`, the BTP Message handler): read, check (`connector.claims`: the
partner's signature, our chain and contract, nonce above the last, amount not below it and
payable from the partner's deposit, the channel open on-chain), then store and credit in
one write before acknowledging. A refused claim changes nothing and is answered with a BTP
Error (F01 unreadable, F00 not accepted, T00 try again later). The very claim already
accepted is acknowledged again without a second credit.

No on-chain transaction happens here: claims are signatures; the chain is only read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from temporalio.service import RPCError
from web3.exceptions import Web3Exception

from connector import metrics
from connector.balances import SettlementRequired
from connector.btp.errors import BtpRefused, LinkError
from connector.btp.protocol import BtpErrorCode
from connector.chain_view import ChannelChainView
from connector.channels import ChannelRegistry, ChannelView
from connector.claim_store import ClaimStore, StoredClaim
from connector.claims import (
    CHAIN_DEPENDENT,
    PROTOCOL_NAME,
    Claim,
    ClaimAck,
    ClaimDomain,
    ClaimSigner,
    InvalidClaim,
    Refusal,
    RefusalReason,
    check_against_channel,
    check_claim,
    is_replay,
)
from connector.codec.btp import ContentType, ProtocolData
from connector.node import ConnectorNode, PeerLinkEvent
from worker.run import ChainContext
from workflows.provisioning.state import CLOSING_STAGES, Stage

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SettlementTiming:
    # How long a peer has to acknowledge a claim before the same claim goes again.
    claim_timeout: float = 10.0
    # Backoff between attempts of one claim (no link, no answer, refused, deposit used up).
    retry_initial: float = 0.5
    retry_max: float = 30.0
    # While a peer has no READY channel, how often its workflow is asked again to retry.
    channel_retry_interval: float = 60.0


DEFAULT_TIMING = SettlementTiming()

_CLOSED_FOR_CLAIMS = CLOSING_STAGES | {Stage.SETTLED}
# Chain reads that fail (RPC down) are transient: the peer is told to try again later.
_CHAIN_ERRORS = (OSError, TimeoutError, Web3Exception)


@dataclass(frozen=True)
class SettlementChain:
    """What settlement needs once provisioning has connected: the chain and TokenNetwork we
    settle on, our signer, cached channel reads, and the way to ask a workflow to retry."""

    domain: ClaimDomain
    signer: ClaimSigner
    view: ChannelChainView
    signal_retry: Callable[[str], Awaitable[None]]
    # Asks the peer's running workflow for a top-up now (ChannelProvisioner.top_up).
    signal_top_up: Callable[[str], Awaitable[None]]


def settlement_chain(
    context: ChainContext,
    signal_retry: Callable[[str], Awaitable[None]],
    signal_top_up: Callable[[str], Awaitable[None]],
) -> SettlementChain:
    deployment = context.deployment
    return SettlementChain(
        domain=ClaimDomain(deployment.chain_id, deployment.token_network),
        signer=ClaimSigner(bytes(context.account.key), context.account.address),
        view=ChannelChainView(context.web3, deployment),
        signal_retry=signal_retry,
        signal_top_up=signal_top_up,
    )


class _Step(enum.Enum):
    DONE = "done"  # settled, or nothing due: sleep until woken
    AGAIN = "again"  # go on at once (a READY arrived)
    LATER = "later"  # try the same again after a backoff (or when woken)


class SettlementService:
    """Register it before the node starts (the claim handler answers T00 until `start`),
    `start` it once the node runs (it needs the ledger), `stop` it before the node stops."""

    def __init__(
        self,
        node: ConnectorNode,
        registry: ChannelRegistry,
        chain_ready: Callable[[], Awaitable[SettlementChain]],
        timing: SettlementTiming = DEFAULT_TIMING,
    ) -> None:
        self._node = node
        self._node_id = node.config.node_id
        self._registry = registry
        self._chain_ready = chain_ready
        self._timing = timing
        self._store: ClaimStore | None = None
        self._chain: SettlementChain | None = None
        self._chain_task: asyncio.Task[None] | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._receiving: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._stopped = False
        self._stale_reported: set[str] = set()
        # Peer -> (channel id, our deposit) whose exhaustion its workflow was asked to top up:
        # one signal per used-up deposit, however many payments wait on it.
        self._top_up_asked: dict[str, tuple[str, int]] = {}

    @property
    def store(self) -> ClaimStore:
        if self._store is None:
            raise RuntimeError("settlement is not started")
        return self._store

    def register(self) -> None:
        node = self._node
        node.register_message_handler(PROTOCOL_NAME, self.handle_claim)
        node.events.settlement_required.append(self._settlement_required)
        node.events.peer_connected.append(self._peer_connected)
        self._registry.deposit_listeners.append(self._deposit_changed)

    async def start(self) -> None:
        """Open the claim store in the node's ledger file; settle what is due once the chain
        is known (pending claims first, then every balance at its threshold)."""
        node = self._node
        self._store = ClaimStore.open(node.config.resolved_ledger_path, node.ledger)
        self._chain_task = asyncio.create_task(self._connect())

    async def stop(self) -> None:
        self._stopped = True
        tasks = [task for task in (self._chain_task, *self._tasks.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _connect(self) -> None:
        try:
            self._chain = await self._chain_ready()
        except Exception:
            log.exception("SETTLEMENT_START_FAILED", nodeId=self._node.config.node_id)
            raise
        store, ledger = self.store, self._node.ledger
        due = {peer_id for peer_id in store.peers_with_pending()}
        due.update(event.peer_id for event in ledger.due_settlements())
        due.update(self._wake)  # settlement_required that arrived while connecting
        log.info(
            "SETTLEMENT_STARTED",
            nodeId=self._node.config.node_id,
            address=self._chain.signer.address,
            pendingClaims=len(store.peers_with_pending()),
            due=sorted(due),
        )
        for peer_id in due:
            self._wake_peer(peer_id)

    # --- events ---------------------------------------------------------------------------

    def _settlement_required(self, event: SettlementRequired) -> None:
        self._wake_peer(event.peer_id)

    def _peer_connected(self, event: PeerLinkEvent) -> None:
        # A claim left unacknowledged when the link dropped goes out again on the new link.
        if self._store is not None and self._store.pending_sent(event.peer_id) is not None:
            self._wake_peer(event.peer_id)

    def _deposit_changed(self, view: ChannelView) -> None:
        # The top-up we asked for landed (or any deposit change): pay what waited on it now.
        if view.peer_id in self._top_up_asked:
            self._wake_peer(view.peer_id)

    def _wake_peer(self, peer_id: str) -> None:
        self._wake.setdefault(peer_id, asyncio.Event()).set()
        if self._chain is None or self._stopped:
            return  # _connect wakes it
        task = self._tasks.get(peer_id)
        if task is None or task.done():
            self._tasks[peer_id] = asyncio.create_task(self._pay(peer_id))

    # --- paying ---------------------------------------------------------------------------

    async def _pay(self, peer_id: str) -> None:
        wake = self._wake[peer_id]
        delay = self._timing.retry_initial
        while True:
            await wake.wait()
            wake.clear()
            while True:
                try:
                    step = await self._settle_step(peer_id)
                except Exception:
                    log.exception("SETTLEMENT_STEP_FAILED", peerId=peer_id)
                    step = _Step.LATER
                if step is _Step.DONE:
                    delay = self._timing.retry_initial
                    break
                if step is _Step.LATER:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), delay)
                    wake.clear()
                    delay = min(delay * 2, self._timing.retry_max)

    async def _settle_step(self, peer_id: str) -> _Step:
        chain, store, ledger = self._chain, self.store, self._node.ledger
        assert chain is not None
        view = self._registry.view(peer_id)
        # A claim left unacknowledged on the peer's channel goes first (on any channel while
        # the registry does not know the peer yet, e.g. right after a restart).
        if view is None:
            pending = store.pending_sent(peer_id)
        elif view.channel_id is not None:
            pending = store.pending_sent(peer_id, view.channel_id)
        else:
            pending = None
        if pending is not None:
            return await self._deliver(pending)
        account = ledger.snapshot(peer_id)
        owed = -account.balance
        threshold = account.settlement_threshold
        if threshold is None or owed < threshold:
            ledger.settlement_failed(peer_id)  # re-arm: the next crossing asks again
            return _Step.DONE
        if self._node.config.peer(peer_id).evm_address is None:
            # Not re-armed: the ledger asks no more in this process, so this is said once
            # (again after a restart), and the workflow gets no pointless `retry` signals.
            log.warning(
                "SETTLEMENT_SKIPPED",
                peerId=peer_id,
                owed=str(owed),
                reason="the peer has no evmAddress, so no channel: what we owe stays on the "
                "ledger, bounded by its credit limit",
            )
            return _Step.DONE
        if view is None or not view.is_ready or view.channel_id is None:
            await self._await_channel(peer_id, chain, view.stage if view else None)
            return _Step.AGAIN
        stale = store.pending_sent(peer_id)
        if stale is not None and peer_id not in self._stale_reported:
            # Sent on a channel that is no longer the peer's: its fate is the close's (the
            # peer may have used it on-chain: connector.payout resolves it against the payout
            # when the channel settles); it no longer blocks claims on the new channel.
            self._stale_reported.add(peer_id)
            log.warning(
                "CLAIM_PENDING_ON_OLD_CHANNEL",
                peerId=peer_id,
                channelId=stale.channel_id,
                nonce=str(stale.nonce),
                amount=str(stale.amount),
            )
        claim, amount = await self._next_claim(peer_id, view.channel_id, owed, chain)
        if claim is None:
            return _Step.LATER
        stored = await store.record_sent(peer_id, claim, amount)
        metrics.CLAIMS_SENT.labels(self._node_id, peer_id).inc()
        return await self._deliver(stored)

    async def _await_channel(self, peer_id: str, chain: SettlementChain, stage: str | None) -> None:
        log.info("SETTLEMENT_AWAITING_CHANNEL", peerId=peer_id, stage=stage)
        try:
            await chain.signal_retry(peer_id)
        except RPCError as err:
            log.warning("CHANNEL_RETRY_SIGNAL_FAILED", peerId=peer_id, error=str(err))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._registry.wait_ready(peer_id), self._timing.channel_retry_interval
            )

    async def _next_claim(
        self, peer_id: str, channel_id: str, owed: int, chain: SettlementChain
    ) -> tuple[Claim | None, int]:
        """nonce + 1 for `owed` more, or as much of it as our deposit covers."""
        store = self.store
        last = store.latest_sent(peer_id, channel_id)
        received = store.best_received(peer_id, channel_id)
        sent_so_far = last.transferred_amount if last else 0
        received_back = received.transferred_amount if received else 0
        for fresh in (False, True):
            facts = await chain.view.facts(channel_id, fresh=fresh)
            side = facts.side(chain.signer.address)
            room = side.deposit - side.withdrawn + received_back - sent_so_far
            if facts.is_open and room >= owed:
                break
        if not facts.is_open:
            log.warning("CLAIM_CHANNEL_NOT_OPEN", peerId=peer_id, channelId=channel_id)
            return None, 0
        amount = min(owed, room)
        if amount <= 0:
            log.warning(
                "CLAIM_DEPOSIT_EXHAUSTED",
                peerId=peer_id,
                channelId=channel_id,
                owed=str(owed),
                deposit=str(side.deposit),
                transferred=str(sent_so_far),
            )
            await self._ask_top_up(peer_id, channel_id, side.deposit, chain)
            return None, 0
        self._top_up_asked.pop(peer_id, None)
        claim = chain.signer.sign(
            chain.domain, channel_id, (last.nonce if last else 0) + 1, sent_so_far + amount
        )
        return claim, amount

    async def _ask_top_up(
        self, peer_id: str, channel_id: str, deposit: int, chain: SettlementChain
    ) -> None:
        """Our deposit is used up: the keeper would see it only at its next periodic read, so
        its workflow is told now. Once per (channel, deposit): a failed signal is sent again
        on the next attempt; a top-up that does not come (no funds, top-up disabled) is the
        keeper's to report, not a reason to signal on every payment."""
        exhausted = (channel_id, deposit)
        if self._top_up_asked.get(peer_id) == exhausted:
            return
        try:
            await chain.signal_top_up(peer_id)
        except RPCError as err:
            log.warning("CHANNEL_TOP_UP_SIGNAL_FAILED", peerId=peer_id, error=str(err))
            return
        self._top_up_asked[peer_id] = exhausted
        log.info(
            "CHANNEL_TOP_UP_REQUESTED", peerId=peer_id, channelId=channel_id, deposit=str(deposit)
        )

    async def _deliver(self, stored: StoredClaim) -> _Step:
        peer_id, claim = stored.peer_id, stored.claim
        # After a failed write the claim is still queued in the ledger: on disk before it leaves.
        await self._node.ledger.flush()
        link = self._node.links.get(peer_id)
        if link is None or not link.is_open:
            log.info("CLAIM_WAITING_FOR_LINK", peerId=peer_id, nonce=str(claim.nonce))
            return _Step.LATER
        log.info(
            "CLAIM_SENT",
            peerId=peer_id,
            channelId=claim.channel_id,
            nonce=str(claim.nonce),
            transferredAmount=str(claim.transferred_amount),
            amount=str(stored.amount),
        )
        try:
            reply = await link.send_message(
                (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, claim.to_json()),),
                self._timing.claim_timeout,
            )
        except BtpRefused as exc:
            log.warning(
                "CLAIM_REFUSED_BY_PEER",
                peerId=peer_id,
                nonce=str(claim.nonce),
                code=exc.code,
                message=exc.message,
            )
            return _Step.LATER
        except LinkError as exc:
            log.info("CLAIM_NOT_ANSWERED", peerId=peer_id, nonce=str(claim.nonce), error=str(exc))
            return _Step.LATER
        try:
            ack = ClaimAck.from_json(reply[0].data) if reply else None
        except InvalidClaim:
            ack = None
        if ack is None or not ack.acknowledges(claim):
            log.warning("CLAIM_ACK_INVALID", peerId=peer_id, nonce=str(claim.nonce))
            return _Step.LATER
        if await self.store.record_acknowledged(stored) is None:
            return _Step.AGAIN  # its channel settled meanwhile: the payout decided its fate
        metrics.CLAIMED_AMOUNT.labels(self._node_id, peer_id, "sent").set(claim.transferred_amount)
        log.info(
            "CLAIM_ACKNOWLEDGED",
            peerId=peer_id,
            channelId=claim.channel_id,
            nonce=str(claim.nonce),
            transferredAmount=str(claim.transferred_amount),
            amount=str(stored.amount),
        )
        return _Step.DONE

    # --- being paid -----------------------------------------------------------------------

    async def handle_claim(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        """Check, store + credit, acknowledge; or refuse with a BTP Error, changing nothing."""
        chain, store = self._chain, self._store
        if chain is None or store is None or self._stopped:
            raise BtpRefused(BtpErrorCode.T00_UNREACHABLE, "settlement is not ready; retry later")
        try:
            claim = Claim.from_json(protocol_data[0].data)
        except InvalidClaim as exc:
            raise self._refuse(peer_id, None, Refusal(RefusalReason.MALFORMED, str(exc))) from None
        partner = self._node.config.peer(peer_id).evm_address
        async with self._receiving[peer_id]:
            last = store.best_received(peer_id, claim.channel_id)
            if is_replay(claim, last.claim if last else None):
                await self._node.ledger.flush()  # stored before we acknowledge, even a repeat
                log.info("CLAIM_RECEIVED_AGAIN", peerId=peer_id, nonce=str(claim.nonce))
                return _ack(claim)
            refusal = check_claim(
                claim, domain=chain.domain, partner=partner, last=last.claim if last else None
            ) or self._check_not_closing(peer_id, claim)
            if refusal is None:
                assert partner is not None
                refusal = await self._check_on_chain(peer_id, claim, partner, chain)
            if refusal is not None:
                raise self._refuse(peer_id, claim, refusal)
            amount = claim.transferred_amount - (last.transferred_amount if last else 0)
            await store.record_received(peer_id, claim, amount)
        metrics.CLAIMS_RECEIVED.labels(self._node_id, peer_id).inc()
        metrics.CLAIMED_AMOUNT.labels(self._node_id, peer_id, "received").set(
            claim.transferred_amount
        )
        log.info(
            "CLAIM_RECEIVED",
            peerId=peer_id,
            channelId=claim.channel_id,
            nonce=str(claim.nonce),
            transferredAmount=str(claim.transferred_amount),
            amount=str(amount),
        )
        return _ack(claim)

    def _check_not_closing(self, peer_id: str, claim: Claim) -> Refusal | None:
        """Once we close the channel (or signed its cooperative settle), a later claim would
        credit value the close does not pay: refused, though the chain still says open."""
        view = self._registry.view(peer_id)
        if (
            view is not None
            and view.channel_id is not None
            and view.channel_id.lower() == claim.channel_id
            and view.stage in _CLOSED_FOR_CLAIMS
        ):
            return Refusal(
                RefusalReason.CHANNEL_CLOSING, f"channel {claim.channel_id} is {view.stage}"
            )
        return None

    async def _check_on_chain(
        self, peer_id: str, claim: Claim, partner: str, chain: SettlementChain
    ) -> Refusal | None:
        acknowledged = self.store.latest_acknowledged(peer_id, claim.channel_id)
        our_transferred = acknowledged.transferred_amount if acknowledged else 0
        refusal = None
        for fresh in (False, True):
            try:
                facts = await chain.view.facts(claim.channel_id, fresh=fresh)
            except _CHAIN_ERRORS as exc:
                log.warning("CLAIM_CHAIN_READ_FAILED", peerId=peer_id, error=str(exc))
                raise BtpRefused(
                    BtpErrorCode.T00_UNREACHABLE, "cannot read the channel; retry later"
                ) from None
            refusal = check_against_channel(
                claim,
                facts,
                our_address=chain.signer.address,
                partner=partner,
                our_transferred=our_transferred,
            )
            if refusal is None or refusal.reason not in CHAIN_DEPENDENT:
                break
        return refusal

    def _refuse(self, peer_id: str, claim: Claim | None, refusal: Refusal) -> BtpRefused:
        metrics.CLAIMS_REFUSED.labels(self._node_id, peer_id, refusal.reason.value).inc()
        log.warning(
            "CLAIM_REFUSED",
            peerId=peer_id,
            reason=refusal.reason.value,
            message=refusal.message,
            channelId=claim.channel_id if claim else None,
            nonce=str(claim.nonce) if claim else None,
        )
        return BtpRefused(refusal.btp_code, f"claim refused ({refusal.reason}): {refusal.message}")


def _ack(claim: Claim) -> tuple[ProtocolData, ...]:
    ack = ClaimAck(channel_id=claim.channel_id, nonce=claim.nonce)
    return (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, ack.to_json()),)
