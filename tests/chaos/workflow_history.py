"""What crash tests read from workflow histories: the moment a named activity completes
(the step boundary to kill at; a local activity completes with its marker), and the
transactions provisioning asked for."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from workflows import ids
from workflows.messages import SubmitBatch, SubmitRequest, SubmitResult

_SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
_STARTED = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
_COMPLETED = EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
_MARKER = EventType.EVENT_TYPE_MARKER_RECORDED
# The marker a local activity's result is recorded in (Temporal core's name).
_LOCAL_ACTIVITY_MARKER = "core_local_activity"


def _local_activity(event: HistoryEvent) -> str | None:
    """The activity type of a local activity's marker (its completion), else None."""
    if event.event_type != _MARKER:
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != _LOCAL_ACTIVITY_MARKER:
        return None
    return json.loads(marker.details["data"].payloads[0].data)["activity_type"]


async def wait_for_completed(
    client: Client, workflow_id: str, activity: str, *, timeout: float = 30.0
) -> None:
    """Return as soon as the history of `workflow_id` (long-polled, so within milliseconds)
    records `activity` as completed; waits for the workflow to exist first."""
    async with asyncio.timeout(timeout):
        while True:
            names: dict[int, str] = {}
            try:
                async for event in client.get_workflow_handle(workflow_id).fetch_history_events(
                    wait_new_event=True
                ):
                    if event.event_type == _SCHEDULED:
                        attributes = event.activity_task_scheduled_event_attributes
                        names[event.event_id] = attributes.activity_type.name
                    elif event.event_type == _COMPLETED:
                        attributes = event.activity_task_completed_event_attributes
                        if names.get(attributes.scheduled_event_id) == activity:
                            return
                    elif _local_activity(event) == activity:
                        return
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.05)


async def completed_activities(client: Client, workflow_id: str) -> list[str]:
    """Names of the activities completed so far, in history order."""
    names: dict[int, str] = {}
    completed = []
    try:
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == _SCHEDULED:
                names[event.event_id] = (
                    event.activity_task_scheduled_event_attributes.activity_type.name
                )
            elif event.event_type == _COMPLETED:
                attributes = event.activity_task_completed_event_attributes
                completed.append(names[attributes.scheduled_event_id])
            elif (local := _local_activity(event)) is not None:
                completed.append(local)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    return completed


async def completed_by(client: Client, workflow_id: str, activity: str) -> tuple[str, int]:
    """(worker identity, attempt) of the attempt that completed `activity` (the first of that
    name): Temporal writes an activity's started event when it ends, with its last attempt."""
    names: dict[int, str] = {}
    started: dict[int, tuple[str, int]] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == _SCHEDULED:
            names[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.event_type == _STARTED:
            attributes = event.activity_task_started_event_attributes
            started[event.event_id] = (attributes.identity, attributes.attempt)
        elif event.event_type == _COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if names[attributes.scheduled_event_id] == activity:
                return started[attributes.started_event_id]
    raise AssertionError(f"{activity} has not completed in {workflow_id}")


async def submitted_intent_count(client: Client, workflow_id: str) -> int:
    """Transactions the channel workflow asked its wallet for: one per intent of each
    distinct submission (a retried submission carries the same request id)."""
    requests: dict[str, int] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type != _SCHEDULED:
            continue
        attributes = event.activity_task_scheduled_event_attributes
        if attributes.activity_type.name != ids.SUBMIT_TRANSACTIONS:
            continue
        (request,) = await client.data_converter.decode(attributes.input.payloads, [SubmitRequest])
        requests[request.request_id] = len(request.intents)
    return sum(requests.values())


async def submitted_hashes(client: Client, workflow_id: str) -> set[str]:
    """Hashes of the transactions the wallet signed for the channel workflow, as recorded
    in its history (the answers of `submit_transactions`)."""
    hashes: set[str] = set()
    names: dict[int, str] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == _SCHEDULED:
            names[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.event_type == _COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if names[attributes.scheduled_event_id] == ids.SUBMIT_TRANSACTIONS:
                (result,) = await client.data_converter.decode(
                    attributes.result.payloads, [SubmitResult]
                )
                hashes.update(tx.tx_hash for tx in result.txs)
    return hashes


async def wait_for_pending(
    client: Client,
    workflow_id: str,
    activity: str,
    matches: Callable[[PendingActivityInfo], bool],
    *,
    timeout: float = 30.0,
) -> PendingActivityInfo:
    """Until the workflow's pending `activity` is in the state `matches` asks for."""
    handle = client.get_workflow_handle(workflow_id)
    async with asyncio.timeout(timeout):
        while True:
            description = await handle.describe()
            for pending in description.raw_description.pending_activities:
                if pending.activity_type.name == activity and matches(pending):
                    return pending
            await asyncio.sleep(0.05)


def is_running_on(pid: int) -> Callable[[PendingActivityInfo], bool]:
    """Started by the worker process `pid` (worker identities are `<pid>@<host>`)."""

    def matches(pending: PendingActivityInfo) -> bool:
        return pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED and (
            pending.last_worker_identity.startswith(f"{pid}@")
        )

    return matches


def is_waiting_in_queue(pending: PendingActivityInfo) -> bool:
    """Scheduled and not picked up: no worker polls its task queue."""
    return pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED


async def continued(handle: WorkflowHandle, run_id: str) -> bool:
    """The workflow's latest run is no longer `run_id` (it continued as new)."""
    return (await handle.describe()).run_id != run_id


async def draining(handle: WorkflowHandle) -> bool:
    """No workflow task to run, notifications waiting for the connector."""
    raw = (await handle.describe()).raw_description
    return not raw.HasField("pending_workflow_task") and len(raw.pending_activities) > 0


async def quiet(handle: WorkflowHandle) -> bool:
    """Nothing pending: the run waits for a timer or a signal."""
    raw = (await handle.describe()).raw_description
    return not raw.HasField("pending_workflow_task") and not raw.pending_activities


async def accepted_per_run(
    client: Client, workflow_id: str, run_id: str
) -> list[tuple[str, list[str]]]:
    """Run by run from `run_id` (following continue-as-new): the run's id and the request
    ids its `submit_all` Updates took."""
    runs: list[tuple[str, list[str]]] = []
    next_run: str | None = run_id
    while next_run is not None:
        handle = client.get_workflow_handle(workflow_id, run_id=next_run)
        runs.append((next_run, []))
        next_run = None
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_execution_update_accepted_event_attributes"):
                accepted = event.workflow_execution_update_accepted_event_attributes
                payloads = accepted.accepted_request.input.args.payloads
                (batch,) = await client.data_converter.decode(payloads, [SubmitBatch])
                runs[-1][1].extend(request.request_id for request in batch.requests)
            elif event.HasField("workflow_execution_continued_as_new_event_attributes"):
                cut = event.workflow_execution_continued_as_new_event_attributes
                next_run = cut.new_execution_run_id
    return runs
