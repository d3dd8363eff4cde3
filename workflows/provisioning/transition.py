"""`transition(state, change) -> Transition(state, commands)`: the whole provisioning and
channel-keeping logic.

Deterministic and pure (raiden's `state_transition`): no I/O, no clock, no randomness, so
the workflow can replay it from history. Unknown or stale changes leave the state as it is
and ask for nothing. Idempotency lives here: a send is only asked for when the last chain
read shows its effect missing (channel absent, deposit below target), so a retried or
replayed step never opens a second channel or deposits twice.

Keeping (after READY) follows the same rule: every decision is taken on a fresh chain read
(`ChainChannelRead`), so a close is sent only while the read shows the channel open, an
update only while the partner's proof on-chain is older than ours, a settle only after the
window, and a settled channel is recorded and ends the workflow however it got settled:

    READY ──top-up due──▶ TOPPING_UP ──mined──▶ READY
    READY ──close / idle──▶ CLOSING ──(cooperative settle)──────────────────▶ SETTLED
                              └──closeChannel──▶ SETTLE_WINDOW ──▶ SETTLING ──▶ SETTLED
    READY ──partner closed──▶ SETTLE_WINDOW (updateNonClosingBalanceProof) ──▶ SETTLING …
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import singledispatch

from workflows.provisioning import keeping
from workflows.provisioning.changes import (
    ActionClose,
    ActionRetry,
    ActionTopUp,
    ChainChannelRead,
    ChainSendFailed,
    ChainSendsMined,
    ChainStateRead,
    Change,
    ChannelPhase,
    OnChainChannel,
    ReceiveCooperativeRefusal,
    ReceiveCooperativeSignatures,
    ReceivePeerConnected,
    TimerFundsRecheck,
    TimerKeep,
)
from workflows.provisioning.commands import (
    ChainReadState,
    ChainSend,
    Command,
    CooperativeTerms,
    EmitTelemetry,
    LogShortfall,
    NotifyChannelClosing,
    NotifySettlementReady,
    ReadChannel,
    RequestCooperativeSettle,
    SendKind,
    TxIntent,
    WaitForFunds,
)
from workflows.provisioning.state import (
    CLOSING_STAGES,
    KEEPING_STAGES,
    Channel,
    CloseRequest,
    ProvisioningState,
    SettleWindow,
    Shortfall,
    Stage,
)

# Reverted batches tolerated before FAILED: one is a lost race (the peer opened first),
# two in a row is still plausible, a third means the send will keep reverting.
MAX_REVERTED_SENDS = 3

CHANNEL_CREATION_STARTED = "CHANNEL_CREATION_STARTED"
CHANNEL_CREATION_SUCCESS = "CHANNEL_CREATION_SUCCESS"
CHANNEL_CREATION_FAILED = "CHANNEL_CREATION_FAILED"
CHANNEL_CREATION_SKIPPED = "CHANNEL_CREATION_SKIPPED"
CHANNEL_TOPPED_UP = "CHANNEL_TOPPED_UP"
CHANNEL_TOP_UP_FAILED = "CHANNEL_TOP_UP_FAILED"
CHANNEL_CLOSING = "CHANNEL_CLOSING"
CHANNEL_CLOSED = "CHANNEL_CLOSED"
CHANNEL_SETTLED = "CHANNEL_SETTLED"
COOPERATIVE_SETTLE_REFUSED = "COOPERATIVE_SETTLE_REFUSED"
COOPERATIVE_SETTLE_ABANDONED = "COOPERATIVE_SETTLE_ABANDONED"

# Stages in which a chain read is the answer being waited for.
_READING = frozenset({Stage.CHECKING_BALANCES, Stage.OPENING, Stage.DEPOSITING})


@dataclass(frozen=True)
class Transition:
    state: ProvisioningState
    commands: tuple[Command, ...] = ()


def transition(state: ProvisioningState, change: Change) -> Transition:
    return _handle(change, state)


@singledispatch
def _handle(change: object, state: ProvisioningState) -> Transition:
    return Transition(state)


@_handle.register
def _on_peer_connected(change: ReceivePeerConnected, state: ProvisioningState) -> Transition:
    if state.stage is Stage.CHECKING_CONFIG:
        return _start(state)
    if state.stage is Stage.SKIPPED and change.peer_address is not None:
        # The operator has added the peer's evmAddress (and restarted the connector).
        return _start(replace(state, peer_address=change.peer_address))
    if state.stage is Stage.READY and state.channel is not None:
        # A reconnect may follow a connector restart: telling it again is idempotent and
        # cheaper than proving it still remembers.
        return Transition(state, (_notify(state.channel),))
    return Transition(state)


@_handle.register
def _on_retry(change: ActionRetry, state: ProvisioningState) -> Transition:
    if state.stage is Stage.CHECKING_CONFIG:
        return _start(state)
    if state.is_waiting_for_operator:
        return _check_balances(replace(state, reverted_sends=0, last_error=None))
    return Transition(state)


@_handle.register
def _on_funds_timer(change: TimerFundsRecheck, state: ProvisioningState) -> Transition:
    if state.stage is Stage.AWAITING_FUNDS:
        return _check_balances(state)
    return Transition(state)


@_handle.register
def _on_state_read(change: ChainStateRead, state: ProvisioningState) -> Transition:
    if state.stage not in _READING:
        return Transition(state)
    channel = change.channel
    if channel is not None and channel.our_deposit >= state.deposit_target:
        ready = replace(
            state,
            stage=Stage.READY,
            channel=channel,
            shortfall=None,
            last_error=None,
            reverted_sends=0,
            last_activity_at=change.read_at
            if change.read_at is not None
            else state.last_activity_at,
        )
        return Transition(
            ready, (_notify(channel), EmitTelemetry(CHANNEL_CREATION_SUCCESS, channel.channel_id))
        )
    if state.reverted_sends >= MAX_REVERTED_SENDS:
        return _fail(replace(state, channel=channel), state.last_error or "sends kept reverting")

    intents = _intents_missing(state, change)
    shortfall = _shortfall(state, change, intents)
    if shortfall is not None:
        waiting = replace(state, stage=Stage.AWAITING_FUNDS, channel=channel, shortfall=shortfall)
        return Transition(waiting, (LogShortfall(shortfall), WaitForFunds()))

    sequence = state.send_sequence + 1
    sending = replace(
        state,
        stage=Stage.OPENING if channel is None else Stage.DEPOSITING,
        channel=channel or Channel(change.next_channel_id),
        shortfall=None,
        send_sequence=sequence,
    )
    # The wait reads the chain again once mined: one activity less per send.
    return Transition(sending, (ChainSend(f"send-{sequence}", intents, read_after=True),))


@_handle.register
def _on_sends_mined(change: ChainSendsMined, state: ProvisioningState) -> Transition:
    if state.stage is Stage.TOPPING_UP:
        return _topped_up(change, state)
    if state.stage in CLOSING_STAGES:
        if change.reverted:
            state = replace(
                state,
                reverted_sends=state.reverted_sends + 1,
                last_error="; ".join(change.reverted),
            )
        # Whatever mined (or reverted: the partner may have closed or settled first), the
        # next step is decided on what the chain now shows.
        return Transition(state, (ReadChannel(),))
    if state.stage not in (Stage.OPENING, Stage.DEPOSITING):
        return Transition(state)
    if change.reverted:
        # Not yet a failure: a lost open race reverts too. The next read decides.
        state = replace(
            state, reverted_sends=state.reverted_sends + 1, last_error="; ".join(change.reverted)
        )
    if change.state is not None:
        # Read by the wait once everything mined: it decides, as a read of its own would.
        return _on_state_read(change.state, state)
    return Transition(state, (ChainReadState(),))


@_handle.register
def _on_send_failed(change: ChainSendFailed, state: ProvisioningState) -> Transition:
    if state.stage in (Stage.READY, Stage.SKIPPED, Stage.SETTLED):
        return Transition(state)
    if state.stage is Stage.TOPPING_UP or state.stage in CLOSING_STAGES:
        # The channel itself is fine: keep it, and let the keeper timer try again.
        kept = replace(
            state,
            stage=Stage.READY if state.stage is Stage.TOPPING_UP else state.stage,
            reverted_sends=state.reverted_sends + 1,
            last_error=change.reason,
        )
        return Transition(kept)
    return _fail(state, change.reason)


# ---------------------------------------------------------------- channel keeping


@_handle.register
def _on_top_up(change: ActionTopUp, state: ProvisioningState) -> Transition:
    if state.stage is not Stage.READY:
        return Transition(state)
    # An explicit request also resumes top-ups that stopped after reverting.
    return Transition(replace(state, reverted_sends=0), (ReadChannel(),))


@_handle.register
def _on_close(change: ActionClose, state: ProvisioningState) -> Transition:
    if state.stage in (Stage.READY, Stage.TOPPING_UP) and state.channel is not None:
        closing = _closing(state, CloseRequest(change.cooperative, change.reason))
        return Transition(closing.state, (*closing.commands, ReadChannel()))
    if state.stage in CLOSING_STAGES:
        # Asked again: resume sends that stopped after reverting, on a fresh read.
        return Transition(replace(state, reverted_sends=0), (ReadChannel(),))
    return Transition(state)


@_handle.register
def _on_keep_timer(change: TimerKeep, state: ProvisioningState) -> Transition:
    if state.stage in KEEPING_STAGES:
        return Transition(state, (ReadChannel(),))
    return Transition(state)


@_handle.register
def _on_channel_read(change: ChainChannelRead, state: ProvisioningState) -> Transition:
    chain = change.chain
    if state.stage not in KEEPING_STAGES or state.channel is None:
        return Transition(state)
    if chain.channel_id.lower() != state.channel.channel_id.lower():
        return Transition(state)
    if change.sends_before is not None and change.sends_before < state.send_sequence:
        # Asked for before our latest send was decided (queued behind a signal): it cannot
        # show that send, and acting on it would send the same thing again.
        return Transition(state)
    match chain.phase:
        case ChannelPhase.SETTLED:
            return _settled(state, chain)
        case ChannelPhase.CLOSED:
            return _closed(state, change)
        case ChannelPhase.NONE:
            if state.stage in CLOSING_STAGES:
                # Nothing on-chain under this id: there is nothing left to close or settle.
                return _settled(state, chain)
            return Transition(
                replace(state, last_error=f"channel {chain.channel_id} is not on-chain")
            )
    if state.stage is Stage.CLOSING:
        return _close_open_channel(state, change)
    if state.stage is Stage.READY:
        return _keep_open(state, change)
    return Transition(state)


@_handle.register
def _on_cooperative_signatures(
    change: ReceiveCooperativeSignatures, state: ProvisioningState
) -> Transition:
    if state.stage is not Stage.CLOSING or state.channel is None:
        return Transition(state)
    state = _answered(state)
    terms = CooperativeTerms(
        our_balance=change.our_balance,
        their_balance=change.their_balance,
        our_signature=change.our_signature,
        their_signature=change.their_signature,
    )
    intent = TxIntent(
        SendKind.COOPERATIVE_SETTLE,
        channel_id=state.channel.channel_id,
        partner=state.peer_address,
        settlement=terms,
    )
    return _send(state, Stage.CLOSING, (intent,))


@_handle.register
def _on_cooperative_refusal(
    change: ReceiveCooperativeRefusal, state: ProvisioningState
) -> Transition:
    if state.stage is not Stage.CLOSING:
        return Transition(state)
    reason = f"cooperative settle refused: {change.reason}"
    return Transition(
        replace(_answered(state), last_error=reason),
        (EmitTelemetry(COOPERATIVE_SETTLE_REFUSED, change.reason), ReadChannel()),
    )


def _keep_open(state: ProvisioningState, read: ChainChannelRead) -> Transition:
    """READY and open on-chain: follow deposits and claim activity; idle close; top-up."""
    chain, claims, now = read.chain, read.claims, read.now
    commands: list[Command] = []
    nonces = keeping.claim_nonces(claims)
    kept = state
    if state.last_activity_at is None or nonces != state.claim_nonces:
        kept = replace(kept, last_activity_at=now, claim_nonces=nonces)
    channel = Channel(state.channel.channel_id, chain.our_deposit, chain.their_deposit)
    if channel != state.channel:
        # A top-up (ours or the partner's) landed: the connector checks claims against it.
        kept = replace(kept, channel=channel)
        commands.append(_notify(channel))
    if keeping.is_idle(kept, now):
        closing = _closing(kept, CloseRequest(cooperative=False, reason="idle"))
        step = _close_open_channel(closing.state, read)
        return Transition(step.state, (*commands, *closing.commands, *step.commands))
    if claims.cooperative_hold_expired:
        # Our connector signed the partner's cooperative settle and stopped claims; the
        # channel is still open long after, so that settle is not coming: claims resume.
        if not commands:
            commands.append(_notify(channel))
        commands.append(EmitTelemetry(COOPERATIVE_SETTLE_ABANDONED, channel.channel_id))
    total = keeping.top_up_total(kept, chain, claims)
    if total is None:
        return Transition(replace(kept, shortfall=None), tuple(commands))
    approve = chain.allowance < total - chain.our_deposit
    eth_missing, token_missing = keeping.top_up_shortfall(chain, total, approve)
    if eth_missing or token_missing:
        shortfall = Shortfall(
            address=state.our_address,
            eth_needed=chain.eth_balance + eth_missing,
            eth_have=chain.eth_balance,
            token_needed=total - chain.our_deposit,
            token_have=chain.token_balance,
        )
        if shortfall != state.shortfall:
            commands.append(LogShortfall(shortfall))
        return Transition(replace(kept, shortfall=shortfall), tuple(commands))
    if kept.reverted_sends >= MAX_REVERTED_SENDS:
        return Transition(kept, tuple(commands))  # until `top_up` asks again
    intents = [TxIntent(SendKind.APPROVE)] if approve else []
    intents.append(
        TxIntent(
            SendKind.SET_TOTAL_DEPOSIT,
            channel_id=channel.channel_id,
            partner=state.peer_address,
            total_deposit=total,
        )
    )
    step = _send(replace(kept, shortfall=None), Stage.TOPPING_UP, tuple(intents))
    return Transition(step.state, (*commands, *step.commands))


def _topped_up(change: ChainSendsMined, state: ProvisioningState) -> Transition:
    if change.reverted:
        reason = "; ".join(change.reverted)
        failed = replace(
            state,
            stage=Stage.READY,
            reverted_sends=state.reverted_sends + 1,
            last_error=reason,
        )
        return Transition(failed, (EmitTelemetry(CHANNEL_TOP_UP_FAILED, reason),))
    ready = replace(state, stage=Stage.READY, reverted_sends=0, last_error=None)
    # The read that follows picks up the new deposit and tells the connector.
    return Transition(ready, (EmitTelemetry(CHANNEL_TOPPED_UP, _channel_id(state)), ReadChannel()))


def _closing(state: ProvisioningState, request: CloseRequest) -> Transition:
    closing = replace(
        state,
        stage=Stage.CLOSING,
        closing=request,
        reverted_sends=0,
        last_error=None,
        shortfall=None,
    )
    how = "cooperative" if request.cooperative else "unilateral"
    channel_id = _channel_id(state)
    return Transition(
        closing,
        (
            # First: the connector stops sending claims on a channel being closed.
            NotifyChannelClosing(channel_id, Stage.CLOSING.value),
            EmitTelemetry(CHANNEL_CLOSING, f"{channel_id} {how} ({request.reason})"),
        ),
    )


def _answered(state: ProvisioningState) -> ProvisioningState:
    request = state.closing
    if request is None or not request.awaiting_partner:
        return state
    return replace(state, closing=replace(request, awaiting_partner=False))


def _close_open_channel(state: ProvisioningState, read: ChainChannelRead) -> Transition:
    """CLOSING and still open on-chain: ask for a cooperative settle once, else close with
    the best claim the partner signed (nothing received: a proof-less close)."""
    request = state.closing or CloseRequest(cooperative=False, reason="operator")
    if request.awaiting_partner:
        return Transition(state)  # the answer decides, not a read queued before it
    if request.cooperative and not request.cooperative_tried:
        terms = keeping.cooperative_terms(read.chain, read.claims)
        if terms is not None:
            asked = replace(request, cooperative_tried=True, awaiting_partner=True)
            return Transition(replace(state, closing=asked), (RequestCooperativeSettle(terms),))
        state = replace(
            state,
            closing=replace(request, cooperative_tried=True),
            last_error="claims do not fit the channel: closing unilaterally",
        )
    if state.reverted_sends >= MAX_REVERTED_SENDS:
        return Transition(state)  # until `close` asks again
    intent = TxIntent(
        SendKind.CLOSE_CHANNEL,
        channel_id=read.chain.channel_id,
        partner=state.peer_address,
        proof=read.claims.best_received,
    )
    return _send(state, Stage.CLOSING, (intent,))


def _closed(state: ProvisioningState, read: ChainChannelRead) -> Transition:
    """Closed on-chain: answer a partner's close with our best received claim while the
    window is open, then settle once it is over."""
    chain = read.chain
    window = SettleWindow(
        settle_block=chain.settle_block,
        closed_by_us=chain.closed_by_us,
        block_number=chain.block_number,
        read_at=read.now,
    )
    commands: list[Command] = []
    if state.stage not in CLOSING_STAGES:
        # The partner closed while we kept the channel: stop claims on it now.
        commands += [
            NotifyChannelClosing(chain.channel_id, Stage.SETTLE_WINDOW.value),
            EmitTelemetry(CHANNEL_CLOSED, f"{chain.channel_id} by partner"),
        ]
    elif state.window is None:
        commands.append(EmitTelemetry(CHANNEL_CLOSED, f"{chain.channel_id} by us"))
    windowed = replace(state, stage=Stage.SETTLE_WINDOW, window=window)
    if state.reverted_sends >= MAX_REVERTED_SENDS:
        return Transition(windowed, tuple(commands))  # until `close` asks again
    received = read.claims.best_received
    # A send lands in a later block: the update must mine by settle_block, the settle after.
    if (
        not chain.closed_by_us
        and received is not None
        and received.nonce > chain.partner_nonce
        and chain.block_number < chain.settle_block
    ):
        intent = TxIntent(
            SendKind.UPDATE_NON_CLOSING,
            channel_id=chain.channel_id,
            partner=state.peer_address,
            proof=received,
        )
        step = _send(windowed, Stage.SETTLE_WINDOW, (intent,))
        return Transition(step.state, (*commands, *step.commands))
    if chain.block_number >= keeping.settle_from_block(chain.settle_block, chain.closed_by_us):
        intent = TxIntent(SendKind.SETTLE_CHANNEL, channel_id=chain.channel_id)
        step = _send(windowed, Stage.SETTLING, (intent,))
        return Transition(step.state, (*commands, *step.commands))
    return Transition(windowed, tuple(commands))


def _settled(state: ProvisioningState, chain: OnChainChannel) -> Transition:
    settled = replace(
        state, stage=Stage.SETTLED, payout=chain.payout, last_error=None, shortfall=None
    )
    payout = chain.payout
    detail = (
        f"{chain.channel_id} ours={payout.our_amount} theirs={payout.their_amount}"
        f"{' cooperative' if payout.cooperative else ''}"
        if payout
        else f"{chain.channel_id} (no settlement found)"
    )
    return Transition(
        settled,
        (
            NotifyChannelClosing(chain.channel_id, Stage.SETTLED.value, payout),
            EmitTelemetry(CHANNEL_SETTLED, detail),
        ),
    )


def _send(state: ProvisioningState, stage: Stage, intents: tuple[TxIntent, ...]) -> Transition:
    sequence = state.send_sequence + 1
    sending = replace(state, stage=stage, send_sequence=sequence)
    return Transition(sending, (ChainSend(f"send-{sequence}", intents),))


def _channel_id(state: ProvisioningState) -> str:
    return state.channel.channel_id if state.channel else ""


def _start(state: ProvisioningState) -> Transition:
    if state.peer_address is None:
        skipped = replace(state, stage=Stage.SKIPPED)
        return Transition(
            skipped, (EmitTelemetry(CHANNEL_CREATION_SKIPPED, "peer has no evmAddress"),)
        )
    started = _check_balances(state)
    return Transition(started.state, (EmitTelemetry(CHANNEL_CREATION_STARTED), *started.commands))


def _check_balances(state: ProvisioningState) -> Transition:
    return Transition(replace(state, stage=Stage.CHECKING_BALANCES), (ChainReadState(),))


def _fail(state: ProvisioningState, reason: str) -> Transition:
    failed = replace(
        state, stage=Stage.FAILED, last_error=reason, failures=(*state.failures[-4:], reason)
    )
    return Transition(failed, (EmitTelemetry(CHANNEL_CREATION_FAILED, reason),))


def _notify(channel: Channel) -> NotifySettlementReady:
    return NotifySettlementReady(channel.channel_id, channel.our_deposit, channel.their_deposit)


def _intents_missing(state: ProvisioningState, read: ChainStateRead) -> tuple[TxIntent, ...]:
    """Only the sends whose effect the chain does not show yet, in the order they must mine."""
    deposited = read.channel.our_deposit if read.channel else 0
    intents: list[TxIntent] = []
    if read.allowance < state.deposit_target - deposited:
        intents.append(TxIntent(SendKind.APPROVE))
    if read.channel is None:
        intents.append(TxIntent(SendKind.OPEN_CHANNEL, partner=state.peer_address))
    channel_id = read.channel.channel_id if read.channel else read.next_channel_id
    intents.append(
        TxIntent(
            SendKind.SET_TOTAL_DEPOSIT,
            channel_id=channel_id,
            partner=state.peer_address,
            total_deposit=state.deposit_target,
        )
    )
    return tuple(intents)


def _shortfall(
    state: ProvisioningState, read: ChainStateRead, intents: tuple[TxIntent, ...]
) -> Shortfall | None:
    limits = {
        SendKind.APPROVE: read.gas_limits.approve,
        SendKind.OPEN_CHANNEL: read.gas_limits.open_channel,
        SendKind.SET_TOTAL_DEPOSIT: read.gas_limits.set_total_deposit,
    }
    eth_needed = sum(limits[intent.kind] for intent in intents) * read.fee_per_gas
    token_needed = state.deposit_target - (read.channel.our_deposit if read.channel else 0)
    if read.eth_balance >= eth_needed and read.token_balance >= token_needed:
        return None
    return Shortfall(
        address=state.our_address,
        eth_needed=eth_needed,
        eth_have=read.eth_balance,
        token_needed=token_needed,
        token_have=read.token_balance,
    )
