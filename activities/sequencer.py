"""SequencerClientActivities: hand a batch of intents to the wallet's sequencer workflow.

An activity (not a workflow-to-workflow signal) because Update-with-Start both creates the
sequencer when it is missing and returns its answer in one durable call.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from workflows import ids
from workflows.messages import SequencerParams, SubmitRequest, SubmitResult
from workflows.sequencer import WalletSequencer

HEARTBEAT_EVERY = 1.0


class SequencerClientActivities:
    def __init__(self, client: Client, node_id: str, chain_id: int, wallet: str) -> None:
        self._client = client
        self._node_id = node_id
        self._workflow_id = ids.sequencer_workflow_id(chain_id, wallet)

    @activity.defn(name=ids.SUBMIT_TRANSACTIONS)
    async def submit_transactions(self, request: SubmitRequest) -> SubmitResult:
        """Submit `request` and return the signed transactions (hashes, nonces, raw bytes).

        Safe to retry: the Update id is the request id, and the sequencer keeps the answer
        for every request id it has seen, so a repeat gets the first answer and no new nonce.
        """
        start = WithStartWorkflowOperation(
            WalletSequencer.run,
            SequencerParams(node_id=self._node_id),
            id=self._workflow_id,
            task_queue=ids.wallet_task_queue(self._node_id),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        update = asyncio.ensure_future(
            self._client.execute_update_with_start_workflow(
                WalletSequencer.submit,
                request,
                start_workflow_operation=start,
                id=request.request_id,
                result_type=SubmitResult,
            )
        )
        # Heartbeats let a cancel reach us and a dead worker be noticed within seconds.
        while True:
            done, _ = await asyncio.wait({update}, timeout=HEARTBEAT_EVERY)
            if done:
                return update.result()
            activity.heartbeat()
