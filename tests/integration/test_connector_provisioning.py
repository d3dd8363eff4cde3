"""Connectors with settlement on the real Temporal dev server and real anvil: every
authenticated link starts provisioning, /health follows the stages, READY reaches the
connector process, a restarted connector rebuilds its views from Temporal without
opening anything, and a peer with no evmAddress is SKIPPED (said once) while its link routes
and settlement, owing it, says once that it cannot pay."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
import structlog
from eth_account.signers.local import LocalAccount
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.config import NodeConfig, parse_config
from connector.devstack import free_port
from connector.node import ConnectorNode
from connector.provisioning import ProvisioningRuntime
from tests.integration.settlement_nodes import (
    FAST,
    PeerLink,
    config_of,
    is_ready,
    node_yaml,
    run_in_process,
    settled,
)
from workflows import ids
from workflows.provisioning.transition import CHANNEL_CREATION_SKIPPED

THRESHOLD = 1_000_000
TARGET = 10 * THRESHOLD


def node_config(
    node_id: str,
    *,
    port: int,
    peer_id: str,
    peer_port: int | None,
    peer_address: str,
    key: str,
    tmp: Path,
    temporal: str,
    rpc_url: str,
) -> NodeConfig:
    url = f"url: ws://127.0.0.1:{peer_port}" if peer_port else ""
    text = f"""
nodeId: {node_id}
ilpAddress: g.{node_id}
btpServerPort: {port}
ledgerPath: {tmp / node_id / "ledger.sqlite3"}
peers:
  - id: {peer_id}
    {url}
    authToken: link-token-shared-by-both-ends
    evmAddress: "{peer_address}"
settlement:
  enableSettlement: true
  settlementThreshold: {THRESHOLD}
  initialDepositMultiplier: 10
  settleTimeout: 40
  rpcUrl: {rpc_url}
  deploymentFile: {tmp / "deployment.json"}
  privateKeyEnv: TREASURY_KEY
temporal:
  address: {temporal}
"""
    return parse_config(text, environ={"TREASURY_KEY": key})


async def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


def stage(node: ConnectorNode, peer_id: str) -> str | None:
    return node.health_snapshot().peers[peer_id].stage


async def test_links_provision_health_follows_and_a_restart_opens_nothing(
    temporal_env: WorkflowEnvironment,
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    anvil,
    deployment: Deployment,
    new_account: Callable[..., Awaitable[LocalAccount]],
    tmp_path: Path,
) -> None:
    write_deployment(tmp_path / "deployment.json", deployment)
    suffix = uuid.uuid4().hex[:6]
    a_id, b_id = f"a{suffix}", f"b{suffix}"
    a_account = await new_account()
    b_account = await new_account(m2m=0)  # b starts without M2M: AWAITING_FUNDS
    a_port, b_port = free_port(), free_port()
    target = temporal_env.client.service_client.config.target_host
    common = {"tmp": tmp_path, "temporal": target, "rpc_url": anvil.url}
    a_config = node_config(
        a_id,
        port=a_port,
        peer_id=b_id,
        peer_port=b_port,
        peer_address=b_account.address,
        key=a_account.key.hex(),
        **common,
    )
    b_config = node_config(
        b_id,
        port=b_port,
        peer_id=a_id,
        peer_port=None,
        peer_address=a_account.address,
        key=b_account.key.hex(),
        **common,
    )

    async def started(config: NodeConfig) -> tuple[ConnectorNode, ProvisioningRuntime]:
        runtime = ProvisioningRuntime(config)
        await runtime.start()
        node = ConnectorNode(config, channels=runtime.registry)
        node.events.peer_connected.append(lambda event: runtime.peer_connected(event.peer_id))
        await node.start()
        return node, runtime

    (a_node, a_runtime), (b_node, b_runtime) = await asyncio.gather(
        started(a_config), started(b_config)
    )
    try:
        await wait_for(lambda: stage(a_node, b_id) == "READY")
        await wait_for(lambda: stage(b_node, a_id) == "AWAITING_FUNDS")
        # Funds arrive; the operator's retry (what `paychan retry` and the UI send) resumes.
        await tn.send_and_wait(
            anvil_w3, b_account, tn.build_mint(deployment, b_account.address, TARGET)
        )
        await temporal_client.get_workflow_handle(
            ids.channel_workflow_id(b_id, a_id, "M2M")
        ).signal(ids.SIGNAL_RETRY)
        await wait_for(lambda: stage(b_node, a_id) == "READY")
        health = a_node.health_snapshot()
        assert health.channels_open == health.total_channels == 1
        peer = health.peers[b_id]
        assert peer.our_deposit == TARGET and peer.channel_id is not None
    finally:
        await a_node.stop()
        await a_runtime.stop()

    # A restarted connector knows its channel from Temporal before any link is up.
    nonce_before = await anvil_w3.eth.get_transaction_count(a_account.address)
    restarted = ProvisioningRuntime(a_config)
    await restarted.start()
    try:
        await wait_for(
            lambda: (view := restarted.registry.view(b_id)) is not None and view.is_ready
        )
        assert restarted.registry.view(b_id).channel_id == peer.channel_id
    finally:
        await restarted.stop()
        await b_node.stop()
        await b_runtime.stop()
    assert await anvil_w3.eth.get_transaction_count(a_account.address) == nonce_before
    assert (
        await tn.get_pair_counter(anvil_w3, deployment, a_account.address, b_account.address) == 1
    )


async def handled_signals(client: Client, workflow_id: str, name: str) -> int:
    """How many `name` signals the workflow has handled: those a completed workflow task
    follows (Temporal writes a signal that comes during a task after that task)."""
    seen = handled = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and event.workflow_execution_signaled_event_attributes.signal_name == name
        ):
            seen += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            handled = seen
    return handled


async def health_stage(session: aiohttp.ClientSession, node: ConnectorNode, peer_id: str) -> str:
    async with session.get(node.health_url + "/health") as response:
        return (await response.json())["peers"][peer_id]["stage"]


async def test_peer_without_evm_address_is_skipped_once_and_its_link_keeps_routing(
    temporal_env: WorkflowEnvironment,
    temporal_client: Client,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: Callable[..., Awaitable[LocalAccount]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    suffix = uuid.uuid4().hex[:6]
    a_id, b_id = f"a{suffix}", f"b{suffix}"
    a_account, b_account = await new_account(), await new_account()
    b_port = free_port()
    common = {
        "data_dir": tmp_path,
        "deployment_file": deployment_file,
        "temporal_address": temporal_env.client.service_client.config.target_host,
        "rpc_url": anvil.url,
        "threshold": THRESHOLD,
    }
    a_doc = node_yaml(
        a_id, port=free_port(), peers=[PeerLink(b_id, b_account.address, b_port)], **common
    )
    del a_doc["peers"][0]["evmAddress"]  # a's operator left it out; b's did not
    b_doc = node_yaml(b_id, port=b_port, peers=[PeerLink(a_id, a_account.address)], **common)
    workflow_id = ids.channel_workflow_id(a_id, b_id, "M2M")

    def skipped_lines() -> list[str]:
        return [
            message
            for record in caplog.records
            if (message := record.getMessage()).startswith(CHANNEL_CREATION_SKIPPED)
            and f"peer={b_id} " in message
        ]

    async with AsyncExitStack() as stack:
        b = await run_in_process(stack, config_of(b_doc, b_account.key.hex()))
        a = await run_in_process(stack, config_of(a_doc, a_account.key.hex()))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await wait_for(lambda: stage(a.node, b_id) == "SKIPPED")
        assert await health_stage(session, a.node, b_id) == "SKIPPED"
        await wait_for(lambda: stage(b.node, a_id) == "READY")  # b's end is unaffected
        for _ in range(3):
            assert (await a.node.send_payment(f"g.{b_id}", 100_000)).fulfilled

        # b drops the link, a dials again: the reconnect signals a's workflow once more.
        seen_stages: set[str | None] = set()

        async def watch_stage() -> None:
            while True:
                seen_stages.add(stage(a.node, b_id))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_stage())
        await b.node.links[a_id].close()
        async with asyncio.timeout(30):
            while (
                await handled_signals(temporal_client, workflow_id, ids.SIGNAL_PEER_CONNECTED) < 2
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the stage refresh runs every 3 s: a reset would still show
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert seen_stages == {"SKIPPED"}  # never CHECKING_CONFIG again
        assert await health_stage(session, a.node, b_id) == "SKIPPED"
        assert (await a.node.send_payment(f"g.{b_id}", 100_000)).fulfilled

        # Owed over the threshold: settlement says once that it cannot pay, and does not
        # signal `retry` to a workflow that cannot open anything.
        with structlog.testing.capture_logs() as logs:
            assert (await a.node.send_payment(f"g.{b_id}", THRESHOLD)).fulfilled
            await wait_for(lambda: any(e["event"] == "SETTLEMENT_SKIPPED" for e in logs), 10)
            await asyncio.sleep(2 * FAST.channel_retry_interval)  # a retry loop would show
        skipped = [e.get("peerId") for e in logs if e["event"] == "SETTLEMENT_SKIPPED"]
        assert skipped == [b_id]
        assert not [e for e in logs if e["event"] == "SETTLEMENT_AWAITING_CHANNEL"]
        assert await handled_signals(temporal_client, workflow_id, ids.SIGNAL_RETRY) == 0
        # Routed all along, under the credit limit; nothing paid by claims.
        assert b.node.ledger.snapshot(a_id).balance == 400_000 + THRESHOLD
        assert a.node.claims.summary(b_id).sent is None

    # The operator adds b's evmAddress and restarts a: the SKIPPED run provisions (no second
    # run, no second channel) and what a owed b is paid by a claim on the channel.
    a_doc["peers"][0]["evmAddress"] = b_account.address
    async with AsyncExitStack() as stack:
        b = await run_in_process(stack, config_of(b_doc, b_account.key.hex()))
        a = await run_in_process(stack, config_of(a_doc, a_account.key.hex()))
        await wait_for(lambda: is_ready(a, b_id))
        assert a.node.channels.view(b_id).channel_id == b.node.channels.view(a_id).channel_id
        await wait_for(lambda: settled(a, b_id), 30)
        assert a.node.claims.summary(b_id).sent is not None
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert await description.memo_value("peerAddress", type_hint=str) == b_account.address
    pair = (a_account.address, b_account.address)
    assert await tn.get_pair_counter(anvil_w3, deployment, *pair) == 1
    lines = skipped_lines()
    assert len(lines) == 1, lines
    assert "peer has no evmAddress" in lines[0]
