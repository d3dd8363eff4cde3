"""Channel keeping as tables: (state, change) -> (stage, commands), and the keeping rules.
Pure, no I/O.

Every read-driven step is applied twice where a replayed or repeated read is possible, to
show that the second one asks for no second send once the chain shows the effect.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from workflows.provisioning import keeping
from workflows.provisioning.changes import (
    ActionClose,
    ActionRetry,
    ActionTopUp,
    ChainChannelRead,
    ChainSendFailed,
    ChainSendsMined,
    ChannelPhase,
    ClaimsRead,
    GasLimits,
    OnChainChannel,
    ReceiveCooperativeRefusal,
    ReceiveCooperativeSignatures,
    ReceivePeerConnected,
    TimerKeep,
)
from workflows.provisioning.commands import (
    ChainSend,
    CooperativeTerms,
    EmitTelemetry,
    LogShortfall,
    NotifyChannelClosing,
    NotifySettlementReady,
    ReadChannel,
    RequestCooperativeSettle,
    SendKind,
)
from workflows.provisioning.state import (
    Channel,
    CloseRequest,
    KeepingRules,
    Payout,
    ProvisioningState,
    SettleWindow,
    SignedClaim,
    Stage,
)
from workflows.provisioning.transition import MAX_REVERTED_SENDS, transition

OURS = "0x" + "11" * 20
PEER = "0x" + "22" * 20
CHANNEL_ID = "0x" + "ab" * 32
TARGET = 100
HOUR = 3600.0
DAY = 24 * HOUR
T0 = 1_700_000_000.0
RULES = KeepingRules(
    top_up_below=50, idle_close_seconds=DAY, check_every_seconds=HOUR, seconds_per_block=2.0
)
LIMITS = GasLimits(approve=60_000, open_channel=150_000, set_total_deposit=80_000)


def ready(**changes: object) -> ProvisioningState:
    state = ProvisioningState(
        our_address=OURS,
        peer_address=PEER,
        deposit_target=TARGET,
        stage=Stage.READY,
        channel=Channel(CHANNEL_ID, TARGET, TARGET),
        rules=RULES,
        last_activity_at=T0,
    )
    return replace(state, **changes)


def claim(nonce: int, amount: int) -> SignedClaim:
    return SignedClaim(nonce=nonce, transferred_amount=amount, signature="0x" + "5a" * 65)


def onchain(
    phase: ChannelPhase = ChannelPhase.OPENED, *, block: int = 1_000, **fields: object
) -> OnChainChannel:
    base = OnChainChannel(
        channel_id=CHANNEL_ID,
        phase=phase,
        block_number=block,
        our_deposit=TARGET,
        their_deposit=TARGET,
        token_balance=10_000,
        eth_balance=10**18,
        allowance=2**256 - 1,
        fee_per_gas=10**9,
        gas_limits=LIMITS,
    )
    return replace(base, **fields)


def read(
    chain: OnChainChannel | None = None,
    *,
    now: float = T0 + 60,
    sent: SignedClaim | None = None,
    received: SignedClaim | None = None,
) -> ChainChannelRead:
    return ChainChannelRead(now, chain or onchain(), ClaimsRead(sent, received))


def sends(commands: tuple) -> list[ChainSend]:
    return [command for command in commands if isinstance(command, ChainSend)]


def only_send(commands: tuple) -> ChainSend:
    (send,) = sends(commands)
    return send


# ---------------------------------------------------------------- top-up


def test_remaining_above_threshold_asks_for_nothing() -> None:
    step = transition(ready(), read(sent=claim(3, 40)))
    assert step.state.stage is Stage.READY
    assert step.commands == ()


def test_remaining_below_threshold_tops_up_to_restore_the_target() -> None:
    # Deposit 100, our latest claim transferred 60: 40 remain, below 50. Restoring 100
    # remaining needs 60 more: total 160.
    step = transition(ready(), read(sent=claim(5, 60)))
    assert step.state.stage is Stage.TOPPING_UP
    send = only_send(step.commands)
    (intent,) = send.intents
    assert intent.kind is SendKind.SET_TOTAL_DEPOSIT
    assert (intent.channel_id, intent.partner, intent.total_deposit) == (CHANNEL_ID, PEER, 160)
    assert send.request_id == f"send-{step.state.send_sequence}"


def test_top_up_mined_returns_to_ready_and_the_next_read_tells_the_connector() -> None:
    topping = transition(ready(), read(sent=claim(5, 60))).state
    mined = transition(topping, ChainSendsMined())
    assert mined.state.stage is Stage.READY
    assert mined.commands == (EmitTelemetry("CHANNEL_TOPPED_UP", CHANNEL_ID), ReadChannel())
    after = transition(mined.state, read(onchain(our_deposit=160), sent=claim(5, 60)))
    assert after.state.channel == Channel(CHANNEL_ID, 160, TARGET)
    assert after.commands == (NotifySettlementReady(CHANNEL_ID, 160, TARGET),)
    # The same read again: deposits known, 100 remain, nothing to send or tell.
    assert transition(after.state, read(onchain(our_deposit=160), sent=claim(5, 60))).commands == ()


def test_top_up_without_allowance_approves_first() -> None:
    step = transition(ready(), read(onchain(allowance=0), sent=claim(5, 60)))
    kinds = [intent.kind for intent in only_send(step.commands).intents]
    assert kinds == [SendKind.APPROVE, SendKind.SET_TOTAL_DEPOSIT]


def test_top_up_short_of_tokens_logs_the_shortfall_once_and_stays_ready() -> None:
    chain = onchain(token_balance=10)
    step = transition(ready(), read(chain, sent=claim(5, 60)))
    assert step.state.stage is Stage.READY
    assert [type(c) for c in step.commands] == [LogShortfall]
    assert step.state.shortfall is not None and step.state.shortfall.token_missing == 50
    assert transition(step.state, read(chain, sent=claim(5, 60))).commands == ()
    # Funds arrive: the next check tops up.
    funded = transition(step.state, read(sent=claim(5, 60)))
    assert funded.state.stage is Stage.TOPPING_UP and funded.state.shortfall is None


def test_reverting_top_ups_stop_until_top_up_is_signalled() -> None:
    state = ready()
    for _ in range(MAX_REVERTED_SENDS):
        state = transition(state, read(sent=claim(5, 60))).state
        assert state.stage is Stage.TOPPING_UP
        reverted = transition(state, ChainSendsMined(reverted=("set_total_deposit: Boom",)))
        state = reverted.state
        assert state.stage is Stage.READY
        assert reverted.commands == (
            EmitTelemetry("CHANNEL_TOP_UP_FAILED", "set_total_deposit: Boom"),
        )
    assert sends(transition(state, read(sent=claim(5, 60))).commands) == []
    resumed = transition(state, ActionTopUp())
    assert resumed.commands == (ReadChannel(),)
    assert transition(resumed.state, read(sent=claim(5, 60))).state.stage is Stage.TOPPING_UP


def test_refused_top_up_keeps_the_channel_ready() -> None:
    topping = transition(ready(), read(sent=claim(5, 60))).state
    step = transition(topping, ChainSendFailed("insufficient funds"))
    assert step.state.stage is Stage.READY and step.state.last_error == "insufficient funds"


@pytest.mark.parametrize("signal", [ActionTopUp(), TimerKeep()])
def test_top_up_signal_and_keeper_timer_read_the_channel(signal: object) -> None:
    assert transition(ready(), signal).commands == (ReadChannel(),)


def test_top_up_disabled_by_a_zero_threshold() -> None:
    state = ready(rules=replace(RULES, top_up_below=0))
    assert transition(state, read(sent=claim(5, 99))).commands == ()


# ---------------------------------------------------------------- idle close


def test_claims_moving_reset_the_idle_clock() -> None:
    step = transition(ready(), read(now=T0 + DAY - 1, sent=claim(1, 1)))
    assert step.state.last_activity_at == T0 + DAY - 1
    assert step.state.claim_nonces == (1, 0)
    # Same nonces a day later: idle.
    later = transition(step.state, read(now=T0 + 2 * DAY, sent=claim(1, 1)))
    assert later.state.stage is Stage.CLOSING


def test_idle_for_the_period_closes_unilaterally_with_the_best_received_claim() -> None:
    best = claim(7, 30)
    step = transition(ready(), read(now=T0 + DAY, received=best))
    # The received nonce is new activity at T0 + DAY, so the channel is not idle yet.
    assert step.state.stage is Stage.READY
    idle = transition(step.state, read(now=T0 + 2 * DAY, received=best))
    assert idle.state.stage is Stage.CLOSING
    assert idle.state.closing == CloseRequest(cooperative=False, reason="idle")
    assert idle.commands[0] == NotifyChannelClosing(CHANNEL_ID, "CLOSING")
    (intent,) = only_send(idle.commands).intents
    assert intent.kind is SendKind.CLOSE_CHANNEL and intent.proof == best


def test_first_read_after_ready_starts_the_idle_clock() -> None:
    state = ready(last_activity_at=None)
    assert keeping.next_check_in(state, T0) == 0.0
    step = transition(state, read(now=T0 + 5))
    assert step.state.last_activity_at == T0 + 5
    assert keeping.next_check_in(step.state, T0 + 5) == HOUR


def test_keeper_wakes_exactly_at_the_idle_deadline() -> None:
    state = ready(last_activity_at=T0)
    assert keeping.next_check_in(state, T0 + DAY - 600) == 600
    assert keeping.next_check_in(state, T0 + DAY + 5) == 0.0
    no_idle = ready(rules=replace(RULES, idle_close_seconds=0))
    assert keeping.next_check_in(no_idle, T0 + 10 * DAY) == HOUR


# ---------------------------------------------------------------- unilateral close


def test_operator_close_notifies_the_connector_then_reads() -> None:
    step = transition(ready(), ActionClose(cooperative=False))
    assert step.state.stage is Stage.CLOSING
    assert step.commands[0] == NotifyChannelClosing(CHANNEL_ID, "CLOSING")
    assert isinstance(step.commands[1], EmitTelemetry)
    assert step.commands[-1] == ReadChannel()
    # The top-up signal no longer does anything once closing.
    assert transition(step.state, ActionTopUp()).commands == ()


def test_close_sends_close_channel_once_then_waits_out_the_window() -> None:
    closing = transition(ready(), ActionClose()).state
    best = claim(4, 25)
    step = transition(closing, read(received=best))
    (intent,) = only_send(step.commands).intents
    assert (intent.kind, intent.proof) == (SendKind.CLOSE_CHANNEL, best)
    mined = transition(step.state, ChainSendsMined())
    assert mined.commands == (ReadChannel(),)
    closed = onchain(ChannelPhase.CLOSED, block=1_001, closed_by_us=True, settle_block=1_041)
    window = transition(mined.state, read(closed, now=T0 + 100, received=best))
    assert window.state.stage is Stage.SETTLE_WINDOW
    assert window.state.window == SettleWindow(1_041, True, 1_001, T0 + 100)
    assert sends(window.commands) == []
    # 40 blocks of 2 s to go.
    assert keeping.next_check_in(window.state, T0 + 100) == 80.0
    # Re-read in the window: still nothing to send.
    assert sends(transition(window.state, read(closed, received=best)).commands) == []


def test_close_without_any_received_claim_is_proofless() -> None:
    closing = transition(ready(), ActionClose()).state
    (intent,) = only_send(transition(closing, read()).commands).intents
    assert intent.kind is SendKind.CLOSE_CHANNEL and intent.proof is None


def test_after_the_window_settles_then_records_the_payout_and_ends() -> None:
    state = ready(
        stage=Stage.SETTLE_WINDOW,
        closing=CloseRequest(False, "operator"),
        window=SettleWindow(1_041, True, 1_001, T0),
    )
    over = onchain(ChannelPhase.CLOSED, block=1_041, closed_by_us=True, settle_block=1_041)
    step = transition(state, read(over))
    assert step.state.stage is Stage.SETTLING
    assert [i.kind for i in only_send(step.commands).intents] == [SendKind.SETTLE_CHANNEL]
    payout = Payout(our_amount=125, their_amount=75, cooperative=False)
    settled = transition(
        transition(step.state, ChainSendsMined()).state,
        read(onchain(ChannelPhase.SETTLED, our_deposit=0, their_deposit=0, payout=payout)),
    )
    assert settled.state.stage is Stage.SETTLED and settled.state.payout == payout
    assert settled.commands[0] == NotifyChannelClosing(CHANNEL_ID, "SETTLED", payout)
    assert keeping.next_check_in(settled.state, T0) is None
    # Terminal: nothing moves it any more.
    for change in (TimerKeep(), ActionClose(), ActionRetry(), ReceivePeerConnected()):
        assert transition(settled.state, change).commands == ()


def test_settle_that_reverts_is_retried_on_the_next_read_then_stops() -> None:
    state = ready(stage=Stage.SETTLING, window=SettleWindow(10, True, 10, T0))
    over = onchain(ChannelPhase.CLOSED, block=11, closed_by_us=True, settle_block=10)
    for _ in range(MAX_REVERTED_SENDS):
        state = transition(state, read(over)).state
        state = transition(state, ChainSendsMined(reverted=("settle_channel: X",))).state
    assert sends(transition(state, read(over)).commands) == []
    again = transition(state, ActionClose())
    assert again.commands == (ReadChannel(),)
    assert sends(transition(again.state, read(over)).commands) != []


def test_settled_by_someone_else_is_recorded_from_any_keeping_stage() -> None:
    payout = Payout(our_amount=90, their_amount=110, cooperative=False)
    for stage in (Stage.READY, Stage.CLOSING, Stage.SETTLE_WINDOW, Stage.SETTLING):
        step = transition(ready(stage=stage), read(onchain(ChannelPhase.SETTLED, payout=payout)))
        assert step.state.stage is Stage.SETTLED and step.state.payout == payout


# ---------------------------------------------------------------- partner closed


def test_partner_close_is_answered_by_an_update_with_our_best_claim() -> None:
    best = claim(9, 70)
    closed = onchain(
        ChannelPhase.CLOSED, block=500, closed_by_us=False, settle_block=540, partner_nonce=0
    )
    step = transition(ready(), read(closed, received=best))
    assert step.state.stage is Stage.SETTLE_WINDOW
    assert step.commands[0] == NotifyChannelClosing(CHANNEL_ID, "SETTLE_WINDOW")
    (intent,) = only_send(step.commands).intents
    assert (intent.kind, intent.proof) == (SendKind.UPDATE_NON_CLOSING, best)
    # Mined: the chain now holds nonce 9 for the partner; the re-read sends nothing more.
    mined = transition(step.state, ChainSendsMined())
    updated = replace(closed, partner_nonce=9, block_number=501)
    after = transition(mined.state, read(updated, received=best))
    assert after.state.stage is Stage.SETTLE_WINDOW and sends(after.commands) == []


def test_partner_close_with_our_best_claim_already_on_chain_needs_no_update() -> None:
    closed = onchain(ChannelPhase.CLOSED, closed_by_us=False, settle_block=2_000, partner_nonce=9)
    assert sends(transition(ready(), read(closed, received=claim(9, 70))).commands) == []


def test_no_update_once_the_window_is_over_and_the_closer_settles_first() -> None:
    closed = onchain(
        ChannelPhase.CLOSED, block=540, closed_by_us=False, settle_block=540, partner_nonce=0
    )
    step = transition(ready(), read(closed, received=claim(9, 70)))
    # Too late to update; the closer may settle now, we give it a few blocks first.
    assert sends(step.commands) == []
    assert keeping.blocks_left(step.state) == keeping.NON_CLOSER_GRACE_BLOCKS
    later = replace(closed, block_number=540 + keeping.NON_CLOSER_GRACE_BLOCKS)
    step = transition(step.state, read(later, received=claim(9, 70)))
    assert [i.kind for i in only_send(step.commands).intents] == [SendKind.SETTLE_CHANNEL]


def test_partner_close_during_our_close_is_adopted() -> None:
    closing = transition(ready(), ActionClose()).state
    closed = onchain(ChannelPhase.CLOSED, block=10, closed_by_us=False, settle_block=50)
    step = transition(closing, read(closed, received=claim(2, 5)))
    assert step.state.stage is Stage.SETTLE_WINDOW
    assert only_send(step.commands).intents[0].kind is SendKind.UPDATE_NON_CLOSING


# ---------------------------------------------------------------- cooperative settle


def test_cooperative_close_asks_the_partner_with_the_claims_balances() -> None:
    closing = transition(ready(), ActionClose(cooperative=True)).state
    # We sent 30, received 45: ours 100 - 30 + 45 = 115 of the 200 held.
    step = transition(closing, read(sent=claim(3, 30), received=claim(6, 45)))
    assert step.commands == (RequestCooperativeSettle(CooperativeTerms(115, 85)),)
    assert step.state.closing is not None and step.state.closing.cooperative_tried
    signed = transition(
        step.state,
        ReceiveCooperativeSignatures(115, 85, "0x" + "01" * 65, "0x" + "02" * 65),
    )
    (intent,) = only_send(signed.commands).intents
    assert intent.kind is SendKind.COOPERATIVE_SETTLE
    assert intent.settlement == CooperativeTerms(115, 85, "0x" + "01" * 65, "0x" + "02" * 65)
    settled = transition(
        transition(signed.state, ChainSendsMined()).state,
        read(onchain(ChannelPhase.SETTLED, payout=Payout(115, 85, cooperative=True))),
    )
    assert settled.state.stage is Stage.SETTLED


def test_cooperative_refusal_falls_back_to_a_unilateral_close() -> None:
    closing = transition(ready(), ActionClose(cooperative=True)).state
    asked = transition(closing, read(received=claim(6, 45))).state
    refused = transition(asked, ReceiveCooperativeRefusal("no answer within 30s"))
    assert refused.commands[-1] == ReadChannel()
    assert "no answer" in (refused.state.last_error or "")
    step = transition(refused.state, read(received=claim(6, 45)))
    (intent,) = only_send(step.commands).intents
    assert intent.kind is SendKind.CLOSE_CHANNEL and intent.proof == claim(6, 45)


def test_reverted_cooperative_settle_falls_back_to_a_unilateral_close() -> None:
    closing = transition(ready(), ActionClose(cooperative=True)).state
    asked = transition(closing, read()).state
    signed = transition(asked, ReceiveCooperativeSignatures(100, 100, "0x01", "0x02")).state
    reverted = transition(signed, ChainSendsMined(reverted=("cooperative_settle: Mismatch",)))
    assert reverted.commands == (ReadChannel(),)
    step = transition(reverted.state, read())
    assert only_send(step.commands).intents[0].kind is SendKind.CLOSE_CHANNEL


def test_claims_that_do_not_fit_the_channel_close_unilaterally() -> None:
    closing = transition(ready(), ActionClose(cooperative=True)).state
    # A received claim above everything the channel holds cannot be a cooperative balance.
    step = transition(closing, read(received=claim(1, 10_000)))
    assert only_send(step.commands).intents[0].kind is SendKind.CLOSE_CHANNEL


@pytest.mark.parametrize(
    ("sent", "received", "ours"),
    [
        (None, None, 100),
        (claim(1, 100), None, 0),
        (None, claim(1, 100), 200),
        (claim(2, 7), claim(3, 9), 102),
    ],
)
def test_cooperative_terms_add_up_to_what_the_channel_holds(
    sent: SignedClaim | None, received: SignedClaim | None, ours: int
) -> None:
    terms = keeping.cooperative_terms(onchain(), ClaimsRead(sent, received))
    assert terms is not None
    assert (terms.our_balance, terms.our_balance + terms.their_balance) == (ours, 2 * TARGET)


# ---------------------------------------------------------------- stale and foreign input


def test_close_before_ready_is_ignored() -> None:
    state = ready(stage=Stage.AWAITING_FUNDS)
    assert transition(state, ActionClose()).state == state


def test_a_read_of_another_channel_is_ignored() -> None:
    other = replace(onchain(ChannelPhase.SETTLED), channel_id="0x" + "cd" * 32)
    assert transition(ready(), read(other)).state == ready()


def test_reads_outside_the_keeping_stages_are_ignored() -> None:
    for stage in (Stage.CHECKING_BALANCES, Stage.FAILED, Stage.SETTLED):
        state = ready(stage=stage)
        assert transition(state, read(onchain(ChannelPhase.CLOSED))).state == state


def test_a_read_queued_before_the_cooperative_answer_does_not_close_unilaterally() -> None:
    # The close signal arrived while a keeper read was in flight: that read is processed
    # after the close's own read asked the partner, before the partner's answer (CI flake:
    # the channel was closed unilaterally under a partner that had just signed).
    closing = transition(ready(), ActionClose(cooperative=True)).state
    asked = transition(closing, read(sent=claim(3, 30), received=claim(6, 45)))
    assert asked.commands == (RequestCooperativeSettle(CooperativeTerms(115, 85)),)
    queued = transition(asked.state, read(sent=claim(3, 30), received=claim(6, 45)))
    assert queued.commands == () and queued.state == asked.state
    signed = transition(
        queued.state, ReceiveCooperativeSignatures(115, 85, "0x" + "01" * 65, "0x" + "02" * 65)
    )
    assert [i.kind for i in only_send(signed.commands).intents] == [SendKind.COOPERATIVE_SETTLE]
    assert signed.state.closing is not None and not signed.state.closing.awaiting_partner


def test_after_a_refusal_reads_close_unilaterally_again() -> None:
    closing = transition(ready(), ActionClose(cooperative=True)).state
    asked = transition(closing, read()).state
    refused = transition(asked, ReceiveCooperativeRefusal("declined")).state
    step = transition(refused, read())
    assert only_send(step.commands).intents[0].kind is SendKind.CLOSE_CHANNEL


def test_a_read_asked_for_before_our_close_was_sent_sends_nothing_again() -> None:
    # The close signal arrived while a keeper read was in flight; that read (asked for at
    # send sequence 0) is processed after the close was sent on the close's own read.
    closing = transition(ready(), ActionClose()).state
    first = transition(closing, replace(read(received=claim(2, 5)), sends_before=0))
    assert only_send(first.commands).intents[0].kind is SendKind.CLOSE_CHANNEL
    stale = transition(first.state, replace(read(received=claim(2, 5)), sends_before=0))
    assert stale.commands == () and stale.state == first.state
    closed = onchain(ChannelPhase.CLOSED, block=10, closed_by_us=True, settle_block=50)
    fresh = transition(
        transition(first.state, ChainSendsMined()).state,
        replace(read(closed), sends_before=first.state.send_sequence),
    )
    assert fresh.state.stage is Stage.SETTLE_WINDOW


# ---------------------------------------------------------------- a cooperative hold


def held(chain: OnChainChannel | None = None, **claims: object) -> ChainChannelRead:
    """A read whose connector reports its hold for a signed cooperative settle expired."""
    return ChainChannelRead(
        T0 + 60, chain or onchain(), ClaimsRead(cooperative_hold_expired=True, **claims)
    )


def test_an_expired_cooperative_hold_on_an_open_channel_tells_the_connector_ready() -> None:
    step = transition(ready(), held())
    assert step.state.stage is Stage.READY
    assert step.commands == (
        NotifySettlementReady(CHANNEL_ID, TARGET, TARGET),
        EmitTelemetry("COOPERATIVE_SETTLE_ABANDONED", CHANNEL_ID),
    )
    # With a deposit change in the same read: one notification carries both.
    step = transition(ready(), held(onchain(their_deposit=TARGET + 5)))
    assert step.commands == (
        NotifySettlementReady(CHANNEL_ID, TARGET, TARGET + 5),
        EmitTelemetry("COOPERATIVE_SETTLE_ABANDONED", CHANNEL_ID),
    )


def test_an_expired_hold_on_a_settled_or_closing_channel_is_not_lifted() -> None:
    # The partner's cooperative settle landed: the settlement is recorded, nothing READY.
    settled = transition(ready(), held(onchain(ChannelPhase.SETTLED)))
    assert settled.state.stage is Stage.SETTLED
    assert not any(isinstance(c, NotifySettlementReady) for c in settled.commands)
    # Our own close under way: its notification stands.
    closing = replace(ready(), stage=Stage.CLOSING, closing=CloseRequest(False, "operator"))
    step = transition(closing, held())
    assert not any(isinstance(c, NotifySettlementReady) for c in step.commands)
