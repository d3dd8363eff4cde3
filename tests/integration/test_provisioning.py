"""Provisioning on the real Temporal dev server and real anvil: both ends of a link connect
at once, each runs its own workers and wallet, and exactly one channel results with each
side's deposit at its target."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import Deployment
from tests.integration.provisioning_node import TARGET, Node


async def test_both_ends_race_one_channel_each_deposits_its_target(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    suffix = uuid.uuid4().hex[:8]
    a = Node(f"a-{suffix}", await new_account(), temporal_client)
    b = Node(f"b-{suffix}", await new_account(), temporal_client)
    async with AsyncExitStack() as stack:
        await a.start(stack, anvil_w3, deployment, {b.node_id: b.account.address})
        await b.start(stack, anvil_w3, deployment, {a.node_id: a.account.address})
        await asyncio.gather(
            a.provisioner.peer_connected(b.node_id), b.provisioner.peer_connected(a.node_id)
        )
        ready_a, ready_b = await asyncio.wait_for(
            asyncio.gather(a.registry.wait_ready(b.node_id), b.registry.wait_ready(a.node_id)),
            timeout=60,
        )
        status = await a.status(b.node_id)
    assert ready_a.channel_id == ready_b.channel_id == status.channel_id
    assert status.stage == "READY"
    onchain = await tn.get_channel_id(anvil_w3, deployment, a.account.address, b.account.address)
    assert onchain == ready_a.channel_id
    assert (
        await tn.get_pair_counter(anvil_w3, deployment, a.account.address, b.account.address) == 1
    )
    for account in (a.account, b.account):
        side = await tn.get_participant(anvil_w3, deployment, onchain, account.address)
        assert side.deposit == TARGET


async def test_retry_after_the_workflow_ended_starts_a_new_run_that_adopts_the_channel(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    """Settlement asks for a channel with `retry`; when the peer's last run has ended (a
    settled channel, or terminated by an operator) that must start a new run, not fail."""
    suffix = uuid.uuid4().hex[:8]
    a = Node(f"a-{suffix}", await new_account(), temporal_client)
    peer = await new_account()
    async with AsyncExitStack() as stack:
        await a.start(stack, anvil_w3, deployment, {"p": peer.address})
        await a.provisioner.peer_connected("p")
        first = await a.wait_for_stage("p", "READY")
        ended_run = (await a.handle("p").describe()).run_id
        await a.handle("p").terminate(reason="test: the run has ended")
        await a.provisioner.retry("p")
        second = await a.wait_for_stage("p", "READY")
        new_run = (await a.handle("p").describe()).run_id
    assert new_run != ended_run
    assert second.channel_id == first.channel_id
    assert await tn.get_pair_counter(anvil_w3, deployment, a.account.address, peer.address) == 1
