"""A cooperative settle we signed that the proposer never sends, on the real Temporal dev
server and real anvil: our connector stops claims on the channel when it signs (CLOSING), and
our own keeper, reading the channel still open while READY once the hold has expired, tells
it READY again (connector.channels, workflows/provisioning/transition.py)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import structlog
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.balance_proof import CooperativeSettle, sign_cooperative_settle
from activities.token_network import ChannelState, Deployment
from connector.codec.btp import ContentType, ProtocolData
from connector.config import parse_config
from connector.cooperative_settle import (
    PROTOCOL_NAME,
    CooperativeSettleProposal,
    CooperativeSettleService,
)
from connector.node import ConnectorNode
from tests.integration.keeper_node import TARGET, KeeperNode
from worker.run import ChainContext

pytestmark = pytest.mark.integration

HOLD = 2.0


async def test_a_signed_cooperative_settle_that_never_comes_is_lifted_by_our_keeper(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
) -> None:
    proposer, us = await new_account(), await new_account()
    node = KeeperNode(f"b-{uuid.uuid4().hex[:8]}", us, temporal_client)
    node.registry.cooperative_hold_seconds = HOLD
    config = parse_config(
        f"""
nodeId: {node.node_id}
ilpAddress: g.{node.node_id}
btpServerPort: 0
peers:
  - id: a
    authToken: token-of-a
    evmAddress: "{proposer.address}"
""",
        environ={},
    )
    context = ChainContext(node.node_id, anvil_w3, us, deployment, 5)

    async def chain_ready() -> ChainContext:
        return context

    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"a": proposer.address},
            tmp_path,
            keep_check_seconds=0.5,
            seconds_per_block=0.2,
            idle_close_seconds=0,
        )
        service = CooperativeSettleService(
            ConnectorNode(config), node.registry, chain_ready, node.claims
        )
        await node.provisioner.peer_connected("a")
        channel_id = (await node.wait_for_stage("a", "READY")).channel_id
        assert channel_id is not None
        # The workflow answers READY before its notification reaches the connector's registry;
        # only a READY channel is held for a cooperative settle.
        await asyncio.wait_for(node.registry.wait_ready("a"), 30)

        # The proposer asks for everything the channel holds to go to us (our deposit): we
        # sign, and stop claims on the channel. It never sends cooperativeSettle.
        settlement = CooperativeSettle.between(
            channel_id, {us.address: TARGET, proposer.address: 0}
        )
        signature = sign_cooperative_settle(
            bytes(proposer.key), settlement, deployment.chain_id, deployment.token_network
        )
        proposal = CooperativeSettleProposal(
            chain_id=deployment.chain_id,
            token_network=deployment.token_network,
            signature="0x" + signature.hex(),
            **settlement.model_dump(),
        )
        loop = asyncio.get_running_loop()
        with structlog.testing.capture_logs() as logs:
            await service.handle_proposal(
                "a",
                (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, proposal.to_json()),),
            )
            signed_at = loop.time()
            assert node.registry.view("a").stage == "CLOSING"
            # Keeper reads come and go (every 0.5 s) while the hold lasts: still CLOSING.
            await asyncio.sleep(HOLD / 2)
            assert node.registry.view("a").stage == "CLOSING"
            ready = await asyncio.wait_for(node.registry.wait_ready("a"), HOLD + 10)
            lifted_after = loop.time() - signed_at
        status = await node.status("a")
        on_chain = await tn.get_channel(anvil_w3, deployment, channel_id)

    assert ready.is_ready and ready.channel_id == channel_id
    assert HOLD <= lifted_after < HOLD + 10
    assert status.stage == "READY" and on_chain.state is ChannelState.OPENED
    abandoned = [entry for entry in logs if entry["event"] == "COOPERATIVE_SETTLE_ABANDONED"]
    assert len(abandoned) == 1 and abandoned[0]["channelId"] == channel_id
    assert "still open" in abandoned[0]["reason"]
