"""ChannelWorkflow: one per (node, peer, token), from the first connect until the channel ends.

It only interprets: commands from `transition` become activities and timers, their results
become changes. Its history is the write-ahead log: every chain send is signed (raw bytes
and hash recorded) before it is broadcast, and awaited by hash, so a worker killed at any
point resumes exactly where the history stops.

After READY it keeps the channel: a durable keeper timer (`keeping.next_check_in`: the check
interval, the idle deadline, or the blocks left in a settle window) reads the channel and
its claims, and the transition decides on a top-up, an idle close, an update against the
partner's close or the settle. Signals `top_up` and `close` act at once. The run ends when
the channel is settled, returning the final status; the next connect starts a fresh run.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows import ids
    from workflows.messages import (
        CarriedSignal,
        ChannelClosing,
        ChannelParams,
        ChannelStatus,
        CloseChannel,
        CooperativeSettleAnswer,
        CooperativeSettleInput,
        CooperativeSettleRequest,
        PayoutStatus,
        PeerConnected,
        ReadChainStateInput,
        ReadChannelInput,
        ReadClaimsInput,
        SettlementReady,
        ShortfallStatus,
        SubmitRequest,
        SubmitResult,
        WaitForReceiptsInput,
    )
    from workflows.policies import CHAIN_RETRY, HEARTBEAT_TIMEOUT
    from workflows.provisioning.changes import (
        ActionClose,
        ActionRetry,
        ActionTopUp,
        ChainChannelRead,
        ChainSendFailed,
        ChainSendsMined,
        ChainStateRead,
        Change,
        ClaimsRead,
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
        WaitForFunds,
    )
    from workflows.provisioning.keeping import RETRY_AFTER_SECONDS, next_check_in
    from workflows.provisioning.state import (
        KEEPING_STAGES,
        KeepingRules,
        ProvisioningState,
        Stage,
    )
    from workflows.provisioning.transition import transition

# Beyond this the history is continued as new, carrying the state (keeper runs for months).
MAX_HISTORY_EVENTS = 2_000
# Runs that reached READY before channel keeping existed never arm the keeper timer (their
# histories have none); every new run does.
PATCH_KEEPER = "channel-keeper-timer"
# Reads carry the send sequence they were asked for at, so a stale one sends nothing twice.
PATCH_STALE_READS = "channel-reads-know-their-sends"
# Fewer round trips through the server per peer, decided once at the start of a run (runs
# recorded before it replay as they ran): the balance read is a local activity (a marker in
# the workflow task that asked for it, not an activity task plus a workflow task for its
# result); the receipt wait reads the pair once mined (no read activity after a send);
# balance reads carry the workflow clock, so READY starts the keeper's idle clock and its
# first channel read comes a check interval later instead of at once; a fresh run does not
# upsert the CHECKING_CONFIG its starter set (each upsert costs the server a visibility
# write); and the keeper timer and read sequence numbers are on without markers of their own.
PATCH_FEWER_ROUND_TRIPS = "provisioning-fewer-round-trips"
# AWAITING_FUNDS waits for its recheck between changes, as the keeper does: there a long
# history is cut (waiting inside the command, a change was always due and the run never
# reached the cut) and a signal that changes nothing (a reconnect) no longer leaves the
# run with no recheck at all.
PATCH_FUNDS_TIMER = "awaiting-funds-timer-between-changes"
# Signals are acted on after the results and timers that are in (a timer counts once the task's
# time reaches it). The same history does not always reach the workflow in the same
# activations: in the chaos soak (seed 3) a fresh worker ran a keeper's task live timer first
# (a channel read, then the READY notification a reconnect signal asked for; how it came to
# take the two apart is not established: a status query answered just before is the likely
# way, not reproduced in isolation); a replay gets the timer and the signal in one activation,
# where the SDK applies signals first, so it did the opposite and failed as nondeterministic
# (stuck; the connector never told READY). Acting on signals last, and on a due timer by the
# workflow clock, gives every way of delivery the same order. Decided once per run.
PATCH_SIGNALS_LAST = "signals-after-results-and-due-timers"
# How long the partner's connector has to sign a cooperative settle before the close goes
# unilateral.
COOPERATIVE_ANSWER_TIMEOUT = timedelta(seconds=30)
COOPERATIVE_RETRY = RetryPolicy(maximum_attempts=2)
# The balance read as a local activity takes milliseconds; past these it is an activity.
LOCAL_READ_TIMEOUT = timedelta(seconds=5)
LOCAL_READ_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=2)


@workflow.defn(name=ids.CHANNEL_WORKFLOW)
class ChannelWorkflow:
    @workflow.init
    def __init__(self, params: ChannelParams) -> None:
        self._params = params
        state = params.carried or ProvisioningState(
            our_address=params.our_address,
            peer_address=params.peer_address,
            deposit_target=params.deposit_target,
        )
        self._state = replace(state, rules=_keeping_rules(params))
        self._inbox: list[Change] = [_signalled_change(s) for s in params.carried_signals]
        self._notifications: list[workflow.ActivityHandle] = []
        # The last channel read failed for good (a revert: bad config): read again only
        # after RETRY_AFTER_SECONDS, not in a loop.
        self._read_failed = False
        # PATCH_FEWER_ROUND_TRIPS and PATCH_SIGNALS_LAST, decided when the run starts.
        self._fewer_round_trips = False
        self._signals_last = False
        # When AWAITING_FUNDS reads the balances again (workflow clock), PATCH_FUNDS_TIMER.
        self._funds_due: float | None = None

    @workflow.signal(name=ids.SIGNAL_PEER_CONNECTED)
    def peer_connected(self, connected: PeerConnected | None = None) -> None:
        # None from a starter that sent no argument (recorded histories, older connectors).
        self._inbox.append(ReceivePeerConnected((connected or PeerConnected()).peer_address))

    @workflow.signal(name=ids.SIGNAL_RETRY)
    def retry(self) -> None:
        self._inbox.append(ActionRetry())

    @workflow.signal(name=ids.SIGNAL_TOP_UP)
    def top_up(self) -> None:
        self._inbox.append(ActionTopUp())

    @workflow.signal(name=ids.SIGNAL_CLOSE)
    def close(self, request: CloseChannel | None = None) -> None:
        request = request or CloseChannel()
        self._inbox.append(ActionClose(cooperative=request.cooperative, reason=request.reason))

    @workflow.query(name=ids.QUERY_STATUS)
    def status(self) -> ChannelStatus:
        state, params = self._state, self._params
        channel, shortfall, payout = state.channel, state.shortfall, state.payout
        closing = state.closing
        return ChannelStatus(
            node_id=params.node_id,
            peer_id=params.peer_id,
            token=params.token,
            stage=state.stage.value,
            our_address=state.our_address,
            peer_address=state.peer_address,
            channel_id=channel.channel_id if channel else None,
            our_deposit=str(channel.our_deposit if channel else 0),
            their_deposit=str(channel.their_deposit if channel else 0),
            deposit_target=str(state.deposit_target),
            last_error=state.last_error,
            shortfall=ShortfallStatus(
                shortfall.address, str(shortfall.eth_missing), str(shortfall.token_missing)
            )
            if shortfall
            else None,
            closing=(
                f"{'cooperative' if closing.cooperative else 'unilateral'} ({closing.reason})"
                if closing
                else None
            ),
            settle_block=state.window.settle_block if state.window else None,
            payout=PayoutStatus(
                str(payout.our_amount), str(payout.their_amount), payout.cooperative
            )
            if payout
            else None,
        )

    @workflow.run
    async def run(self, params: ChannelParams) -> ChannelStatus:
        self._fewer_round_trips = workflow.patched(PATCH_FEWER_ROUND_TRIPS)
        self._signals_last = workflow.patched(PATCH_SIGNALS_LAST)
        if params.carried is not None or not self._fewer_round_trips:
            # A fresh run's stage is CHECKING_CONFIG, which its starter has set already.
            self._publish()
        while True:
            if self._state.stage is Stage.SETTLED:
                return await self._finish()
            await self._wait_for_change()
            if not self._inbox:
                await self._continue_as_new()
            step = transition(self._state, self._next_change())
            changed = step.state.stage != self._state.stage or step.state.channel != (
                self._state.channel
            )
            if step.state.peer_address != self._state.peer_address:
                # A SKIPPED run given the address: the memo the UI shows follows.
                workflow.upsert_memo({"peerAddress": step.state.peer_address or ""})
            self._state = step.state
            if changed:
                self._publish()
            for command in step.commands:
                await self._execute(command)

    async def _wait_for_change(self) -> None:
        """Until something is in the inbox (or history is long); in a keeping stage, the
        keeper timer puts `TimerKeep` there when it fires, in AWAITING_FUNDS the funds timer
        `TimerFundsRecheck`. Durable: a restart re-arms them."""
        wake = lambda: bool(self._inbox) or self._history_is_long()  # noqa: E731
        wait, fired = self._keeper_wait(), TimerKeep()
        if wait is None:
            wait, fired = self._funds_wait(), TimerFundsRecheck()
        if wait is None:
            await workflow.wait_condition(wake)
        elif wait <= 0:
            self._inbox.append(fired)
        else:
            due = workflow.now().timestamp() + wait
            try:
                await workflow.wait_condition(wake, timeout=timedelta(seconds=wait))
            except TimeoutError:
                self._inbox.append(fired)
            else:
                if self._signals_last and workflow.now().timestamp() >= due:
                    # Woken by a signal in a task at or past the timer's due time (the task
                    # that fires it, or later): the timer is in too.
                    self._inbox.append(fired)

    def _next_change(self) -> Change:
        if self._signals_last:
            for index, change in enumerate(self._inbox):
                if not isinstance(change, SIGNALLED):
                    return self._inbox.pop(index)
        return self._inbox.pop(0)

    def _keeper_wait(self) -> float | None:
        if self._inbox or self._state.stage not in KEEPING_STAGES:
            return None
        if not (self._fewer_round_trips or workflow.patched(PATCH_KEEPER)):
            return None
        wait = next_check_in(self._state, workflow.now().timestamp())
        if wait is not None and self._read_failed:
            wait = max(wait, RETRY_AFTER_SECONDS)
        return wait

    def _funds_wait(self) -> float | None:
        """Seconds until AWAITING_FUNDS reads the balances again (0: now, as in a run that
        was continued there and has armed nothing yet); None: no funds timer."""
        if self._inbox or self._state.stage is not Stage.AWAITING_FUNDS:
            return None
        if not workflow.patched(PATCH_FUNDS_TIMER):
            return None
        if self._funds_due is None:
            return 0.0
        return self._funds_due - workflow.now().timestamp()

    async def _execute(self, command: Command) -> None:
        match command:
            case ChainReadState():
                self._inbox.append(self._timed(await self._read_chain()))
            case ChainSend():
                self._inbox.append(await self._send(command))
            case WaitForFunds() if workflow.patched(PATCH_FUNDS_TIMER):
                # Armed here, waited for between changes (`_wait_for_change`).
                self._funds_due = workflow.now().timestamp() + self._params.funds_recheck_seconds
            case WaitForFunds():
                # Any signal cuts the wait short; the timer is durable across restarts.
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._inbox),
                        timeout=timedelta(seconds=self._params.funds_recheck_seconds),
                    )
                except TimeoutError:
                    self._inbox.append(TimerFundsRecheck())
            case NotifySettlementReady():
                self._notify_ready(command)
            case ReadChannel():
                read = await self._read_channel()
                if read is not None:
                    self._inbox.append(read)
            case RequestCooperativeSettle(terms=terms):
                self._inbox.append(await self._cooperative(terms))
            case NotifyChannelClosing():
                self._notify_closing(command)
            case LogShortfall(shortfall=shortfall):
                workflow.logger.warning(
                    "AWAITING_FUNDS: fund %s with %s wei ETH and %s wei %s "
                    "(needs %s ETH / %s token, has %s / %s)",
                    shortfall.address,
                    shortfall.eth_missing,
                    shortfall.token_missing,
                    self._params.token,
                    shortfall.eth_needed,
                    shortfall.token_needed,
                    shortfall.eth_have,
                    shortfall.token_have,
                )
            case EmitTelemetry(event=event, detail=detail):
                workflow.logger.info(
                    "%s peer=%s %s", event, self._params.peer_id, detail, extra={"event": event}
                )

    async def _read_chain(self) -> ChainStateRead:
        assert self._state.peer_address is not None
        request = ReadChainStateInput(self._state.peer_address)
        if self._fewer_round_trips:
            # A short read-only call: run by this worker inside the workflow task that asks
            # for it, its result recorded as a marker when that task completes. Bounded: a
            # worker that is stopping waits for its local activities, so one that retried
            # a dead RPC node for ever would never stop.
            try:
                return await workflow.execute_local_activity(
                    ids.READ_CHAIN_STATE,
                    request,
                    result_type=ChainStateRead,
                    start_to_close_timeout=LOCAL_READ_TIMEOUT,
                    retry_policy=LOCAL_READ_RETRY,
                )
            except FailureError as err:
                # (An attempt's own failure comes as it is, a timeout as an ActivityError.)
                if isinstance(err, CancelledError) or isinstance(err.cause, CancelledError):
                    raise  # the run is being cancelled
                # A slow or failing node: read as an activity instead, with heartbeats and
                # retries for as long as it takes (what fails for good fails there, as it
                # did before), outside any workflow task.
                workflow.logger.warning("BALANCE_READ_SLOW %s: %s", request.peer_address, err)
        return await workflow.execute_activity(
            ids.READ_CHAIN_STATE,
            request,
            result_type=ChainStateRead,
            start_to_close_timeout=timedelta(seconds=15),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CHAIN_RETRY,
        )

    def _timed(self, read: ChainStateRead) -> ChainStateRead:
        if not self._fewer_round_trips:
            return read
        return replace(read, read_at=workflow.now().timestamp())

    async def _read_channel(self) -> ChainChannelRead | None:
        """The chain (our workers) and the claims (our connector) read side by side. A read
        that fails for good (a revert: wrong config) is logged; the keeper tries again."""
        state, params = self._state, self._params
        assert state.channel is not None and state.peer_address is not None
        channel_id = state.channel.channel_id
        knows_sends = self._fewer_round_trips or workflow.patched(PATCH_STALE_READS)
        sends_before = state.send_sequence if knows_sends else None
        try:
            chain, claims = await asyncio.gather(
                workflow.execute_activity(
                    ids.READ_CHANNEL,
                    ReadChannelInput(channel_id, state.peer_address),
                    result_type=OnChainChannel,
                    start_to_close_timeout=timedelta(seconds=15),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=CHAIN_RETRY,
                ),
                # Waits for the connector process if it is down: without our best received
                # claim a close or an update would give money away.
                workflow.execute_activity(
                    ids.READ_CHANNEL_CLAIMS,
                    ReadClaimsInput(params.peer_id, channel_id),
                    result_type=ClaimsRead,
                    task_queue=ids.connector_task_queue(params.node_id),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=CHAIN_RETRY,
                ),
            )
        except ActivityError as err:
            if not _is_final(err):
                raise  # cancelled: the run is being cancelled
            workflow.logger.warning("CHANNEL_READ_FAILED %s: %s", channel_id, err.cause or err)
            self._read_failed = True
            return None
        self._read_failed = False
        return ChainChannelRead(
            now=workflow.now().timestamp(), chain=chain, claims=claims, sends_before=sends_before
        )

    async def _cooperative(self, terms: CooperativeTerms) -> Change:
        """Sign the final balances, then ask the partner (through our connector's BTP link)
        for its signature; any failure or silence is a refusal: the close goes unilateral."""
        state, params = self._state, self._params
        assert state.channel is not None and state.peer_address is not None
        channel_id = state.channel.channel_id
        try:
            ours = await workflow.execute_activity(
                ids.SIGN_COOPERATIVE_SETTLE,
                CooperativeSettleInput(
                    channel_id, state.peer_address, terms.our_balance, terms.their_balance
                ),
                result_type=str,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=CHAIN_RETRY,
            )
            answer = await workflow.execute_activity(
                ids.REQUEST_COOPERATIVE_SETTLE,
                CooperativeSettleRequest(
                    peer_id=params.peer_id,
                    channel_id=channel_id,
                    our_address=state.our_address,
                    peer_address=state.peer_address,
                    our_balance=terms.our_balance,
                    their_balance=terms.their_balance,
                    our_signature=ours,
                ),
                result_type=CooperativeSettleAnswer,
                task_queue=ids.connector_task_queue(params.node_id),
                start_to_close_timeout=COOPERATIVE_ANSWER_TIMEOUT,
                schedule_to_close_timeout=COOPERATIVE_ANSWER_TIMEOUT * 3,
                retry_policy=COOPERATIVE_RETRY,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # the run is being cancelled, not the partner declining
            return ReceiveCooperativeRefusal(str(err.cause or err))
        if answer.their_signature is None:
            return ReceiveCooperativeRefusal(answer.refused or "no signature")
        return ReceiveCooperativeSignatures(
            our_balance=terms.our_balance,
            their_balance=terms.their_balance,
            our_signature=ours,
            their_signature=answer.their_signature,
        )

    async def _send(self, send: ChainSend) -> Change:
        info = workflow.info()
        # Stable across activity retries and continue-as-new (which carries the send sequence),
        # new for a fresh start of the same id after a cancel: its sequence restarts at 1 and
        # must not be answered with the old run's (possibly reverted) transactions.
        batch_id = f"{info.workflow_id}/{info.first_execution_run_id}/{send.request_id}"
        read_after = None
        if send.read_after and self._fewer_round_trips:
            assert self._state.peer_address is not None
            read_after = ReadChainStateInput(self._state.peer_address)
        try:
            submitted = await workflow.execute_activity(
                ids.SUBMIT_TRANSACTIONS,
                SubmitRequest(batch_id, send.intents),
                result_type=SubmitResult,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=CHAIN_RETRY,
            )
            if submitted.refused:
                return ChainSendFailed(submitted.refused)
            # The hashes are in history now: a crash from here on waits for these very txs.
            # Replays follow the recorded result: one without a state (histories from before
            # `read_after`) is followed by a read of its own, as it was then.
            mined = await workflow.execute_activity(
                ids.WAIT_FOR_RECEIPTS,
                WaitForReceiptsInput(submitted.txs, read_after),
                result_type=ChainSendsMined,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=CHAIN_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                return ChainSendFailed(f"{cause.type}: {cause.message}")
            raise
        if mined.state is None:
            return mined
        return replace(mined, state=self._timed(mined.state))

    def _notify_ready(self, command: NotifySettlementReady) -> None:
        params = self._params
        # Scheduled on the connector's own queue: it runs when that process is up, however
        # long that takes, and the workflow need not wait for it.
        self._notifications.append(
            workflow.start_activity(
                ids.MARK_SETTLEMENT_READY,
                SettlementReady(
                    node_id=params.node_id,
                    peer_id=params.peer_id,
                    token=params.token,
                    channel_id=command.channel_id,
                    our_deposit=str(command.our_deposit),
                    their_deposit=str(command.their_deposit),
                ),
                task_queue=ids.connector_task_queue(params.node_id),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=CHAIN_RETRY,
            )
        )

    def _notify_closing(self, command: NotifyChannelClosing) -> None:
        params, payout = self._params, command.payout
        self._notifications.append(
            workflow.start_activity(
                ids.MARK_CHANNEL_CLOSING,
                ChannelClosing(
                    node_id=params.node_id,
                    peer_id=params.peer_id,
                    token=params.token,
                    channel_id=command.channel_id,
                    stage=command.stage,
                    payout=PayoutStatus(
                        str(payout.our_amount), str(payout.their_amount), payout.cooperative
                    )
                    if payout
                    else None,
                ),
                task_queue=ids.connector_task_queue(params.node_id),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=CHAIN_RETRY,
            )
        )

    async def _finish(self) -> ChannelStatus:
        """Settled: the connector has been told (waited for), the run ends with the payout."""
        await self._drain()
        return self.status()

    async def _drain(self) -> None:
        """Let running handlers finish and every notification reach the connector."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        for notification in self._notifications:
            await notification

    def _publish(self) -> None:
        channel = self._state.channel
        updates = [ids.STAGE.value_set(self._state.stage.value)]
        if channel is not None:
            updates.append(ids.CHANNEL_ID.value_set(channel.channel_id))
        workflow.upsert_search_attributes(updates)

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > (
            MAX_HISTORY_EVENTS
        )

    async def _continue_as_new(self) -> None:
        await self._drain()
        # Signals that came while the notifications drained (a connector that is down holds
        # them for hours) go with the state: acting on them here would start notifications
        # to wait for again, and steady signals would never let the run continue.
        signals = tuple(_carried_signal(change) for change in self._inbox)
        workflow.continue_as_new(
            replace(self._params, carried=self._state, carried_signals=signals)
        )


# The changes signal handlers put in the inbox.
SIGNALLED = (ReceivePeerConnected, ActionRetry, ActionTopUp, ActionClose)


def _carried_signal(change: Change) -> CarriedSignal:
    """A change a signal handler put in the inbox, as the next run's params carry it."""
    match change:
        case ReceivePeerConnected(peer_address=address):
            return CarriedSignal(ids.SIGNAL_PEER_CONNECTED, connected=PeerConnected(address))
        case ActionRetry():
            return CarriedSignal(ids.SIGNAL_RETRY)
        case ActionTopUp():
            return CarriedSignal(ids.SIGNAL_TOP_UP)
        case ActionClose(cooperative=cooperative, reason=reason):
            return CarriedSignal(ids.SIGNAL_CLOSE, CloseChannel(cooperative, reason))
    # Only signal handlers add to the inbox while the run waits to continue.
    raise TypeError(f"not a signalled change: {change!r}")


def _signalled_change(signal: CarriedSignal) -> Change:
    if signal.name == ids.SIGNAL_PEER_CONNECTED:
        return ReceivePeerConnected((signal.connected or PeerConnected()).peer_address)
    if signal.name == ids.SIGNAL_RETRY:
        return ActionRetry()
    if signal.name == ids.SIGNAL_TOP_UP:
        return ActionTopUp()
    if signal.name == ids.SIGNAL_CLOSE:
        close = signal.close or CloseChannel()
        return ActionClose(cooperative=close.cooperative, reason=close.reason)
    raise TypeError(f"unknown carried signal {signal.name}")


def _is_final(err: ActivityError) -> bool:
    """A failure the retry policy gave up on (non-retryable): not a cancellation."""
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.non_retryable


def _keeping_rules(params: ChannelParams) -> KeepingRules:
    return KeepingRules(
        top_up_below=params.top_up_below,
        idle_close_seconds=params.idle_close_seconds,
        check_every_seconds=params.keep_check_seconds,
        seconds_per_block=params.seconds_per_block,
    )
