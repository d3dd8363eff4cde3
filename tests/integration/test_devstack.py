"""The dev stack is real: a workflow on the real Temporal dev server runs an activity that
reads the real anvil chain."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from web3 import AsyncHTTPProvider, AsyncWeb3

    from connector.devstack import Anvil


@workflow.defn
class ReadChainWorkflow:
    @workflow.run
    async def run(self, url: str) -> list[int]:
        return await workflow.execute_activity(
            "read_chain", url, start_to_close_timeout=timedelta(seconds=10)
        )


@activity.defn(name="read_chain")
async def read_chain(url: str) -> list[int]:
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        return [await w3.eth.chain_id, await w3.eth.block_number]
    finally:
        await w3.provider.disconnect()


async def test_workflow_activity_reads_real_anvil(temporal_client: Client, anvil: Anvil) -> None:
    queue = f"devstack-{uuid.uuid4()}"
    async with Worker(
        temporal_client, task_queue=queue, workflows=[ReadChainWorkflow], activities=[read_chain]
    ):
        chain_id, block = await temporal_client.execute_workflow(
            ReadChainWorkflow.run, anvil.url, id=f"devstack-{uuid.uuid4()}", task_queue=queue
        )
    assert chain_id == anvil.chain_id == 31337
    assert block >= 0
