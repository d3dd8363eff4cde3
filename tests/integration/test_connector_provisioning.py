"""Connectors with settlement on the real Temporal dev server and real anvil: every
authenticated link starts provisioning, /health follows the stages, READY reaches the
connector process, and a restarted connector rebuilds its views from Temporal without
opening anything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount
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
from workflows import ids

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
