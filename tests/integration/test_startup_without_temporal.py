"""Startup never waits for Temporal: two connectors started (as `paychan connector` runs them)
while their Temporal server is down authenticate their link and forward a payment at once;
when the server comes up on that address, the link is provisioned like any other, one
channel for the pair."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.devstack import free_port, run_temporal
from tests.integration.settlement_nodes import (
    PeerLink,
    config_of,
    is_ready,
    node_yaml,
    run_in_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(150)


async def test_nodes_started_with_temporal_down_route_at_once_and_provision_once_it_is_up(
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: Callable[..., Awaitable[LocalAccount]],
    tmp_path: Path,
) -> None:
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    a_account, b_account = await new_account(), await new_account()
    suffix = uuid.uuid4().hex[:6]
    a_id, b_id = f"a{suffix}", f"b{suffix}"
    temporal_port, b_port = free_port(), free_port()
    common = {
        "data_dir": tmp_path,
        "deployment_file": deployment_file,
        "temporal_address": f"127.0.0.1:{temporal_port}",  # nothing listens there yet
        "rpc_url": anvil.url,
    }
    a_doc = node_yaml(
        a_id, port=free_port(), peers=[PeerLink(b_id, b_account.address, b_port)], **common
    )
    b_doc = node_yaml(b_id, port=b_port, peers=[PeerLink(a_id, a_account.address)], **common)

    # The server outlives the nodes: they stop first, with Temporal still there to talk to.
    with ExitStack() as services:
        async with AsyncExitStack() as nodes:
            b = await run_in_process(nodes, config_of(b_doc, b_account.key.hex()))
            a = await run_in_process(nodes, config_of(a_doc, a_account.key.hex()))
            await wait_for(lambda: a.node.health_snapshot().peers[b_id].connected, 30, "link up")

            result = await a.node.send_payment(f"g.{b_id}", 1_000)
            assert result.fulfilled, result
            health = a.node.health_snapshot()
            assert health.peers[b_id].stage is None and health.peers[b_id].channel_id is None
            assert not is_ready(a, b_id)

            services.enter_context(run_temporal(port=temporal_port, ui=False))
            await wait_for(lambda: is_ready(a, b_id) and is_ready(b, a_id), 90, "both ends READY")
            assert (await a.node.send_payment(f"g.{b_id}", 1_000)).fulfilled
            channel_id = a.node.channels.view(b_id).channel_id
            assert b.node.channels.view(a_id).channel_id == channel_id

    pair = (a_account.address, b_account.address)
    assert await tn.get_pair_counter(anvil_w3, deployment, *pair) == 1
