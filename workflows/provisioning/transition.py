"""`transition(state, change) -> Transition(state, commands)`: the whole provisioning logic.

Deterministic and pure (raiden's `state_transition`): no I/O, no clock, no randomness, so
the workflow can replay it from history. Unknown or stale changes leave the state as it is
and ask for nothing. Idempotency lives here: a send is only asked for when the last chain
read shows its effect missing (channel absent, deposit below target), so a retried or
replayed step never opens a second channel or deposits twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import singledispatch

from workflows.provisioning.changes import (
    ActionRetry,
    ChainSendFailed,
    ChainSendsMined,
    ChainStateRead,
    Change,
    ReceivePeerConnected,
    TimerFundsRecheck,
)
from workflows.provisioning.commands import (
    ChainReadState,
    ChainSend,
    Command,
    EmitTelemetry,
    LogShortfall,
    NotifySettlementReady,
    SendKind,
    TxIntent,
    WaitForFunds,
)
from workflows.provisioning.state import Channel, ProvisioningState, Shortfall, Stage

# Reverted batches tolerated before FAILED: one is a lost race (the peer opened first),
# two in a row is still plausible, a third means the send will keep reverting.
MAX_REVERTED_SENDS = 3

CHANNEL_CREATION_STARTED = "CHANNEL_CREATION_STARTED"
CHANNEL_CREATION_SUCCESS = "CHANNEL_CREATION_SUCCESS"
CHANNEL_CREATION_FAILED = "CHANNEL_CREATION_FAILED"
CHANNEL_CREATION_SKIPPED = "CHANNEL_CREATION_SKIPPED"

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
    return Transition(sending, (ChainSend(f"send-{sequence}", intents),))


@_handle.register
def _on_sends_mined(change: ChainSendsMined, state: ProvisioningState) -> Transition:
    if state.stage not in (Stage.OPENING, Stage.DEPOSITING):
        return Transition(state)
    if change.reverted:
        # Not yet a failure: a lost open race reverts too. The next read decides.
        state = replace(
            state, reverted_sends=state.reverted_sends + 1, last_error="; ".join(change.reverted)
        )
    return Transition(state, (ChainReadState(),))


@_handle.register
def _on_send_failed(change: ChainSendFailed, state: ProvisioningState) -> Transition:
    if state.stage in (Stage.READY, Stage.SKIPPED):
        return Transition(state)
    return _fail(state, change.reason)


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
