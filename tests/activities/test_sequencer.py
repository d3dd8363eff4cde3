"""SequencerClientActivities against the real wallet sequencer (real Temporal dev server,
real anvil): a burst of submissions from one process leaves as a few Updates, each gets its
own consecutive nonces, and a repeated request id gets the first answer."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from web3 import AsyncWeb3

from activities.sequencer import MAX_UPDATES_IN_FLIGHT, SequencerClientActivities
from activities.token_network import Deployment
from worker.run import ChainContext, build_workers
from workflows import ids
from workflows.messages import SubmitRequest, SubmitResult
from workflows.provisioning.commands import SendKind, TxIntent

pytestmark = pytest.mark.integration

BURST = 30


async def test_a_burst_of_submissions_shares_a_few_updates_and_gets_consecutive_nonces(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account(m2m=0)
    node_id = f"seq-{uuid.uuid4().hex[:8]}"
    context = ChainContext(node_id, anvil_w3, account, deployment, 40)
    submitter = SequencerClientActivities(
        temporal_client, node_id, deployment.chain_id, account.address
    )

    async def submit(request: SubmitRequest) -> SubmitResult:
        return await ActivityEnvironment().run(submitter.submit_transactions, request)

    requests = [
        SubmitRequest(f"{node_id}/req-{i}", (TxIntent(SendKind.APPROVE),)) for i in range(BURST)
    ]
    async with AsyncExitStack() as stack:
        for worker in build_workers(temporal_client, context):
            await stack.enter_async_context(worker)
        results = await asyncio.wait_for(
            asyncio.gather(*(submit(request) for request in requests)), timeout=30
        )
        # A submitter retried after a crash: same request id, same answer, no new nonce.
        repeated = await submit(requests[7])

    nonces = [tx.nonce for result in results for tx in result.txs]
    assert sorted(nonces) == list(range(BURST))
    assert all(result.refused is None for result in results)
    assert repeated == results[7]

    sequencer = temporal_client.get_workflow_handle(
        ids.sequencer_workflow_id(deployment.chain_id, account.address)
    )
    history = await sequencer.fetch_history()
    accepted = [
        event
        for event in history.events
        if event.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    # The first submissions leave at once, everything after them waits and goes together
    # (one Update each would hit the server's limit of 10 in flight and back off); the
    # repeat is one more.
    assert MAX_UPDATES_IN_FLIGHT == 2
    assert len(accepted) <= 4
    for _ in range(100):
        if await anvil_w3.eth.get_transaction_count(account.address) == BURST:
            break
        await asyncio.sleep(0.05)
    assert await anvil_w3.eth.get_transaction_count(account.address) == BURST
    await sequencer.terminate("test over")
