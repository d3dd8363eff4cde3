"""ChannelWorkflow: one per (node, peer, token), from the first connect until the channel ends.

It only interprets: commands from `transition` become activities and timers, their results
become changes. Its history is the write-ahead log: every chain send is signed (raw bytes
and hash recorded) before it is broadcast, and awaited by hash, so a worker killed at any
point resumes exactly where the history stops.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import ids
    from workflows.messages import (
        ChannelParams,
        ChannelStatus,
        ReadChainStateInput,
        SettlementReady,
        ShortfallStatus,
        SubmitRequest,
        SubmitResult,
        WaitForReceiptsInput,
    )
    from workflows.policies import CHAIN_RETRY, HEARTBEAT_TIMEOUT
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
        WaitForFunds,
    )
    from workflows.provisioning.state import ProvisioningState
    from workflows.provisioning.transition import transition

# Beyond this the history is continued as new, carrying the state (keeper runs for months).
MAX_HISTORY_EVENTS = 2_000


@workflow.defn(name=ids.CHANNEL_WORKFLOW)
class ChannelWorkflow:
    @workflow.init
    def __init__(self, params: ChannelParams) -> None:
        self._params = params
        self._state = params.carried or ProvisioningState(
            our_address=params.our_address,
            peer_address=params.peer_address,
            deposit_target=params.deposit_target,
        )
        self._inbox: list[Change] = []
        self._notifications: list[workflow.ActivityHandle] = []

    @workflow.signal(name=ids.SIGNAL_PEER_CONNECTED)
    def peer_connected(self) -> None:
        self._inbox.append(ReceivePeerConnected())

    @workflow.signal(name=ids.SIGNAL_RETRY)
    def retry(self) -> None:
        self._inbox.append(ActionRetry())

    @workflow.query(name=ids.QUERY_STATUS)
    def status(self) -> ChannelStatus:
        state, params = self._state, self._params
        channel, shortfall = state.channel, state.shortfall
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
        )

    @workflow.run
    async def run(self, params: ChannelParams) -> None:
        self._publish()
        while True:
            await workflow.wait_condition(lambda: bool(self._inbox) or self._history_is_long())
            if not self._inbox:
                await self._continue_as_new()
            step = transition(self._state, self._inbox.pop(0))
            changed = step.state.stage != self._state.stage or step.state.channel != (
                self._state.channel
            )
            self._state = step.state
            if changed:
                self._publish()
            for command in step.commands:
                await self._execute(command)

    async def _execute(self, command: Command) -> None:
        match command:
            case ChainReadState():
                self._inbox.append(await self._read_chain())
            case ChainSend(request_id=request_id, intents=intents):
                self._inbox.append(await self._send(request_id, intents))
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
        return await workflow.execute_activity(
            ids.READ_CHAIN_STATE,
            ReadChainStateInput(self._state.peer_address),
            result_type=ChainStateRead,
            start_to_close_timeout=timedelta(seconds=15),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CHAIN_RETRY,
        )

    async def _send(self, request_id: str, intents: tuple) -> Change:
        info = workflow.info()
        # Stable across activity retries and continue-as-new (which carries the send sequence),
        # new for a fresh start of the same id after a cancel: its sequence restarts at 1 and
        # must not be answered with the old run's (possibly reverted) transactions.
        batch_id = f"{info.workflow_id}/{info.first_execution_run_id}/{request_id}"
        try:
            submitted = await workflow.execute_activity(
                ids.SUBMIT_TRANSACTIONS,
                SubmitRequest(batch_id, intents),
                result_type=SubmitResult,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=CHAIN_RETRY,
            )
            if submitted.refused:
                return ChainSendFailed(submitted.refused)
            # The hashes are in history now: a crash from here on waits for these very txs.
            return await workflow.execute_activity(
                ids.WAIT_FOR_RECEIPTS,
                WaitForReceiptsInput(submitted.txs),
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
        await workflow.wait_condition(workflow.all_handlers_finished)
        for notification in self._notifications:
            await notification
        workflow.continue_as_new(replace(self._params, carried=self._state))
