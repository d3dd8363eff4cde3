"""A node's provisioning side, in-process, for tests and scripts on a real Temporal server and
a real anvil: its channel registry, its provisioner and its running workers.

Shared by the provisioning integration tests, the history recorder of the replay test and
the provisioning benchmark, so all of them drive the workflows the way the connector does.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from eth_account.signers.local import LocalAccount
from temporalio.client import Client, WorkflowHandle
from web3 import AsyncWeb3

from activities.connector import ConnectorActivities
from activities.token_network import Deployment
from connector.channels import ChannelProvisioner, ChannelRegistry
from worker.run import ChainContext, build_workers
from workflows import ids
from workflows.messages import ChannelParams, ChannelStatus

TOKEN = "M2M"
TARGET = 10 * 10**18
SETTLE_TIMEOUT = 40


class Node:
    """One node: its registry, provisioner (params per peer) and running workers."""

    def __init__(self, node_id: str, account: LocalAccount, client: Client) -> None:
        self.node_id = node_id
        self.account = account
        self.client = client
        self.registry = ChannelRegistry()

    async def start(
        self,
        stack: AsyncExitStack,
        w3: AsyncWeb3,
        deployment: Deployment,
        peers: dict[str, str | None],
        *,
        settle_timeout: int = SETTLE_TIMEOUT,
        deposit_target: int = TARGET,
        funds_recheck_seconds: float = 1.0,
    ) -> None:
        """Run the node's workers (until `stack` closes) and provision `peers` (id → address)."""
        await self.start_workers(stack, w3, deployment, settle_timeout=settle_timeout)
        self.provisioner = ChannelProvisioner(
            self.client,
            self.registry,
            {
                peer_id: ChannelParams(
                    node_id=self.node_id,
                    peer_id=peer_id,
                    token=TOKEN,
                    chain_id=deployment.chain_id,
                    token_network=deployment.token_network,
                    our_address=self.account.address,
                    peer_address=address,
                    deposit_target=deposit_target,
                    funds_recheck_seconds=funds_recheck_seconds,
                )
                for peer_id, address in peers.items()
            },
        )

    async def start_workers(
        self,
        stack: AsyncExitStack,
        w3: AsyncWeb3,
        deployment: Deployment,
        *,
        settle_timeout: int = SETTLE_TIMEOUT,
    ) -> None:
        context = ChainContext(self.node_id, w3, self.account, deployment, settle_timeout)
        for worker in build_workers(self.client, context, ConnectorActivities(self.registry)):
            await stack.enter_async_context(worker)

    def handle(self, peer_id: str) -> WorkflowHandle:
        return self.client.get_workflow_handle(
            ids.channel_workflow_id(self.node_id, peer_id, TOKEN)
        )

    async def status(self, peer_id: str) -> ChannelStatus:
        return await self.handle(peer_id).query(ids.QUERY_STATUS, result_type=ChannelStatus)

    async def wait_for_stage(
        self, peer_id: str, stage: str, *, timeout: float = 30.0
    ) -> ChannelStatus:
        """Poll the `status` query until the workflow reports `stage`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.status(peer_id)
            if status.stage == stage:
                return status
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{peer_id} stuck in {status.stage} (last error: {status.last_error}), "
                    f"waited for {stage}"
                )
            await asyncio.sleep(0.05)
