"""SequencerClientActivities: hand a batch of intents to the wallet's sequencer workflow.

An activity (not a workflow-to-workflow signal) because Update-with-Start both creates the
sequencer when it is missing and returns its answer in one durable call.

Temporal admits only a few Updates in flight per workflow (10 by default, in the dev server
and in Temporal Cloud); the rest are refused and would come back only after a retry backoff.
So submissions that arrive while this process has Updates in flight wait here and leave
together, as one `submit_all` Update: a burst of peers costs a couple of Updates, not one each.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from workflows import ids
from workflows.messages import SequencerParams, SubmitBatch, SubmitRequest, SubmitResult
from workflows.policies import WORKFLOW_TASK_TIMEOUT
from workflows.sequencer import CONTINUING_AS_NEW, WalletSequencer

HEARTBEAT_EVERY = 1.0
# Per process: one Update being answered while the next group already waits in the
# sequencer's queue; several worker processes stay well under the server's limit.
MAX_UPDATES_IN_FLIGHT = 2
# A sequencer continuing as new needs a workflow task or two (milliseconds) to start its
# next run; a group it refused meanwhile is sent again after this.
CONTINUING_RESEND_SECONDS = 0.05


class SequencerClientActivities:
    def __init__(self, client: Client, node_id: str, chain_id: int, wallet: str) -> None:
        self._client = client
        self._node_id = node_id
        self._workflow_id = ids.sequencer_workflow_id(chain_id, wallet)
        self._waiting: list[tuple[SubmitRequest, asyncio.Future[SubmitResult]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    @activity.defn(name=ids.SUBMIT_TRANSACTIONS)
    async def submit_transactions(self, request: SubmitRequest) -> SubmitResult:
        """Submit `request` and return the signed transactions (hashes, nonces, raw bytes).

        Safe to retry: the sequencer keeps the answer for every request id it has seen, so a
        repeat gets the first answer and no new nonce, whichever Update carried it.
        """
        answer: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._dispatch()
        # Heartbeats let a cancel reach us and a dead worker be noticed within seconds.
        try:
            while True:
                done, _ = await asyncio.wait({answer}, timeout=HEARTBEAT_EVERY)
                if done:
                    return answer.result()
                activity.heartbeat()
        finally:
            answer.cancel()

    def _dispatch(self) -> None:
        while self._waiting and len(self._in_flight) < MAX_UPDATES_IN_FLIGHT:
            group, self._waiting = self._waiting, []
            task = asyncio.create_task(self._submit_group(group))
            self._in_flight.add(task)
            task.add_done_callback(self._group_done)

    def _group_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._dispatch()

    async def _submit_group(
        self, group: list[tuple[SubmitRequest, asyncio.Future[SubmitResult]]]
    ) -> None:
        group = [(request, answer) for request, answer in group if not answer.done()]
        if not group:
            return
        batch = SubmitBatch(tuple(request for request, _ in group))
        try:
            while True:
                try:
                    results = await self._update_with_start(batch)
                    break
                except WorkflowUpdateFailedError as err:
                    if not _is_continuing_as_new(err):
                        raise
                # Refused while the sequencer continues as new: its next run takes it.
                if all(answer.done() for _, answer in group):
                    return  # every submitter gave up (cancelled)
                await asyncio.sleep(CONTINUING_RESEND_SECONDS)
        except Exception as err:  # every submitter of the group fails and is retried
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(err)
            return
        for (_, answer), result in zip(group, results, strict=True):
            if not answer.done():
                answer.set_result(result)

    async def _update_with_start(self, batch: SubmitBatch) -> list[SubmitResult]:
        start = WithStartWorkflowOperation(
            WalletSequencer.run,
            SequencerParams(node_id=self._node_id),
            id=self._workflow_id,
            task_queue=ids.wallet_task_queue(self._node_id),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
        )
        return await self._client.execute_update_with_start_workflow(
            WalletSequencer.submit_all,
            batch,
            start_workflow_operation=start,
            # Deduplication is by request id inside the sequencer; the Update id only has
            # to be unique.
            id=f"submit-{uuid.uuid4().hex}",
            result_type=list[SubmitResult],
        )


def _is_continuing_as_new(err: WorkflowUpdateFailedError) -> bool:
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type == CONTINUING_AS_NEW
