"""Provisioning transitions as tables: (state, change) -> (stage, commands). Pure, no I/O.

Each change is also applied twice where a replay or a duplicate delivery is possible, to
show that the second application asks for no further chain send.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from workflows.provisioning.changes import (
    ActionRetry,
    ChainSendFailed,
    ChainSendsMined,
    ChainStateRead,
    GasLimits,
    ReceivePeerConnected,
    TimerFundsRecheck,
)
from workflows.provisioning.commands import (
    ChainReadState,
    ChainSend,
    EmitTelemetry,
    LogShortfall,
    NotifySettlementReady,
    SendKind,
    WaitForFunds,
)
from workflows.provisioning.state import Channel, ProvisioningState, Stage
from workflows.provisioning.transition import MAX_REVERTED_SENDS, transition

OURS = "0x" + "11" * 20
PEER = "0x" + "22" * 20
TARGET = 10 * 10**18
NEXT_ID = "0x" + "ab" * 32
LIMITS = GasLimits(approve=60_000, open_channel=150_000, set_total_deposit=80_000)
FEE = 2 * 10**9


def fresh(peer: str | None = PEER) -> ProvisioningState:
    return ProvisioningState(our_address=OURS, peer_address=peer, deposit_target=TARGET)


def read(
    *,
    eth: int = 10**18,
    token: int = 100 * 10**18,
    allowance: int = 0,
    channel: Channel | None = None,
    read_at: float | None = None,
) -> ChainStateRead:
    return ChainStateRead(
        eth_balance=eth,
        token_balance=token,
        allowance=allowance,
        channel=channel,
        next_channel_id=NEXT_ID,
        fee_per_gas=FEE,
        gas_limits=LIMITS,
        read_at=read_at,
    )


def kinds(commands: tuple) -> list[type]:
    return [type(command) for command in commands]


def test_peer_without_evm_address_is_skipped_once() -> None:
    step = transition(fresh(peer=None), ReceivePeerConnected())
    assert step.state.stage is Stage.SKIPPED
    assert kinds(step.commands) == [EmitTelemetry]
    again = transition(step.state, ReceivePeerConnected())
    assert again.state.stage is Stage.SKIPPED and again.commands == ()


def test_skipped_peer_connecting_with_an_evm_address_now_provisions() -> None:
    skipped = transition(fresh(peer=None), ReceivePeerConnected()).state
    step = transition(skipped, ReceivePeerConnected(peer_address=PEER))
    assert step.state.stage is Stage.CHECKING_BALANCES and step.state.peer_address == PEER
    assert kinds(step.commands) == [EmitTelemetry, ChainReadState]


def test_connect_starts_with_telemetry_and_a_chain_read() -> None:
    step = transition(fresh(), ReceivePeerConnected())
    assert step.state.stage is Stage.CHECKING_BALANCES
    assert step.commands[0] == EmitTelemetry("CHANNEL_CREATION_STARTED")
    assert step.commands[1] == ChainReadState()
    # A second connect while checking asks for nothing more.
    assert transition(step.state, ReceivePeerConnected()).commands == ()


def test_no_channel_sends_approve_open_and_deposit_into_the_predicted_id() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    step = transition(checking, read())
    assert step.state.stage is Stage.OPENING
    (send,) = step.commands
    assert isinstance(send, ChainSend)
    assert [i.kind for i in send.intents] == [
        SendKind.APPROVE,
        SendKind.OPEN_CHANNEL,
        SendKind.SET_TOTAL_DEPOSIT,
    ]
    assert send.intents[2].channel_id == NEXT_ID
    assert send.intents[2].total_deposit == TARGET
    # Each batch gets a fresh deterministic request id for the sequencer to dedupe by.
    assert step.state.send_sequence == 1
    # The receipt wait reads the pair again once mined: no read of its own afterwards.
    assert send.read_after


def test_mined_with_the_read_after_it_decides_at_once() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    opening = transition(checking, read()).state
    channel = Channel(channel_id=NEXT_ID, our_deposit=TARGET, their_deposit=0)
    step = transition(opening, ChainSendsMined(state=read(channel=channel, read_at=1_000.0)))
    assert step.state.stage is Stage.READY
    assert step.commands == (
        NotifySettlementReady(NEXT_ID, TARGET, 0),
        EmitTelemetry("CHANNEL_CREATION_SUCCESS", NEXT_ID),
    )
    # READY starts the keeper's idle clock at the read, so the keeper need not read at once.
    assert step.state.last_activity_at == 1_000.0
    # The same receipts again (a replayed or duplicated result) send nothing.
    assert transition(step.state, ChainSendsMined(state=read(channel=channel))).commands == ()


def test_mined_with_the_read_after_it_sends_what_is_still_missing() -> None:
    # The open reverted (the peer opened first) and our deposit went into its channel short
    # of the target: the read inside the wait asks for the rest, counting the revert.
    checking = transition(fresh(), ReceivePeerConnected()).state
    opening = transition(checking, read()).state
    partial = Channel(channel_id=NEXT_ID, our_deposit=TARGET // 2, their_deposit=TARGET)
    mined = ChainSendsMined(
        reverted=("open_channel: ChannelAlreadyOpen",),
        state=read(allowance=2**256 - 1, channel=partial),
    )
    step = transition(opening, mined)
    assert step.state.stage is Stage.DEPOSITING
    assert step.state.reverted_sends == 1
    (send,) = step.commands
    assert isinstance(send, ChainSend) and send.read_after
    assert [(i.kind, i.total_deposit) for i in send.intents] == [
        (SendKind.SET_TOTAL_DEPOSIT, TARGET)
    ]
    assert step.state.send_sequence == opening.send_sequence + 1


def test_ready_on_a_read_without_its_time_leaves_the_idle_clock_to_the_keeper() -> None:
    # Histories recorded before reads carried the workflow clock replay as they ran: the
    # keeper's first read starts the idle clock.
    checking = transition(fresh(), ReceivePeerConnected()).state
    channel = Channel(channel_id=NEXT_ID, our_deposit=TARGET, their_deposit=0)
    step = transition(checking, read(channel=channel))
    assert step.state.stage is Stage.READY and step.state.last_activity_at is None


def test_existing_channel_with_enough_allowance_only_deposits() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    channel = Channel(channel_id="0x" + "cd" * 32, our_deposit=TARGET // 2, their_deposit=7)
    step = transition(checking, read(allowance=TARGET, channel=channel))
    assert step.state.stage is Stage.DEPOSITING
    (send,) = step.commands
    assert [i.kind for i in send.intents] == [SendKind.SET_TOTAL_DEPOSIT]
    assert send.intents[0].channel_id == channel.channel_id


def test_deposit_already_at_target_is_ready_without_any_send() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    channel = Channel(channel_id=NEXT_ID, our_deposit=TARGET, their_deposit=TARGET)
    step = transition(checking, read(channel=channel))
    assert step.state.stage is Stage.READY
    assert not any(isinstance(c, ChainSend) for c in step.commands)
    assert step.commands[0] == NotifySettlementReady(NEXT_ID, TARGET, TARGET)
    assert step.commands[1] == EmitTelemetry("CHANNEL_CREATION_SUCCESS", NEXT_ID)
    # Ready is sticky: the same read again changes nothing.
    assert transition(step.state, read(channel=channel)).commands == ()


@pytest.mark.parametrize(
    ("eth", "token", "eth_missing", "token_missing"),
    [
        (0, 100 * 10**18, (60_000 + 150_000 + 80_000) * FEE, 0),
        (10**18, 10**18, 0, TARGET - 10**18),
    ],
)
def test_short_of_funds_waits_with_the_exact_shortfall(
    eth: int, token: int, eth_missing: int, token_missing: int
) -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    step = transition(checking, read(eth=eth, token=token))
    assert step.state.stage is Stage.AWAITING_FUNDS
    assert kinds(step.commands) == [LogShortfall, WaitForFunds]
    shortfall = step.state.shortfall
    assert shortfall is not None and shortfall.address == OURS
    assert (shortfall.eth_missing, shortfall.token_missing) == (eth_missing, token_missing)


@pytest.mark.parametrize("wake", [ActionRetry(), TimerFundsRecheck()])
def test_awaiting_funds_rechecks_on_timer_or_retry(wake: object) -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    waiting = transition(checking, read(eth=0)).state
    step = transition(waiting, wake)
    assert step.state.stage is Stage.CHECKING_BALANCES
    assert step.commands == (ChainReadState(),)


def test_timer_outside_awaiting_funds_is_ignored() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    assert transition(checking, TimerFundsRecheck()).commands == ()


def test_lost_open_race_adopts_the_winners_channel() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    opening = transition(checking, read()).state
    mined = transition(opening, ChainSendsMined(reverted=("open_channel: ChannelAlreadyOpen",)))
    assert mined.commands == (ChainReadState(),)
    assert mined.state.reverted_sends == 1
    # The winner's channel has the predicted id and our pipelined deposit went into it.
    adopted = Channel(channel_id=NEXT_ID, our_deposit=TARGET, their_deposit=TARGET)
    step = transition(mined.state, read(allowance=2**256 - 1, channel=adopted))
    assert step.state.stage is Stage.READY
    assert step.state.reverted_sends == 0


def test_sends_that_keep_reverting_fail_visibly_and_retry_resumes() -> None:
    state = transition(fresh(), ReceivePeerConnected()).state
    for _ in range(MAX_REVERTED_SENDS):
        state = transition(state, read()).state
        state = transition(state, ChainSendsMined(reverted=("open_channel: Boom",))).state
    step = transition(state, read())
    assert step.state.stage is Stage.FAILED
    assert step.state.last_error == "open_channel: Boom"
    assert step.commands == (EmitTelemetry("CHANNEL_CREATION_FAILED", "open_channel: Boom"),)
    resumed = transition(step.state, ActionRetry())
    assert resumed.state.stage is Stage.CHECKING_BALANCES
    assert resumed.state.reverted_sends == 0 and resumed.state.last_error is None


def test_non_retryable_send_failure_fails_and_is_ignored_once_ready() -> None:
    checking = transition(fresh(), ReceivePeerConnected()).state
    opening = transition(checking, read()).state
    failed = transition(opening, ChainSendFailed("InvalidSettleTimeout"))
    assert failed.state.stage is Stage.FAILED
    ready = replace(failed.state, stage=Stage.READY)
    assert transition(ready, ChainSendFailed("late")).state.stage is Stage.READY


def test_reconnect_when_ready_notifies_the_connector_again() -> None:
    channel = Channel(channel_id=NEXT_ID, our_deposit=TARGET, their_deposit=0)
    ready = replace(fresh(), stage=Stage.READY, channel=channel)
    step = transition(ready, ReceivePeerConnected())
    assert step.commands == (NotifySettlementReady(NEXT_ID, TARGET, 0),)
    assert step.state == ready


def test_stale_read_after_ready_or_failed_is_ignored() -> None:
    ready = replace(fresh(), stage=Stage.READY, channel=Channel(NEXT_ID, TARGET, 0))
    assert transition(ready, read()).state == ready
    failed = replace(fresh(), stage=Stage.FAILED, last_error="x")
    assert transition(failed, read()).state == failed
