"""`paychan close <peer>` on a real Temporal dev server and a real anvil: it closes a READY
channel, follows it to SETTLED and prints the payout, and refuses where there is nothing to
close."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from eth_account import Account
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import ChannelState, Deployment
from connector.devstack import free_port
from tests.connector.test_channel_commands import (
    node_logs_apart,  # noqa: F401 (fixture)
    run_cli,
    run_cli_async,
    write_config,
)
from tests.integration.keeper_node import SETTLE_TIMEOUT, TARGET, KeeperNode, mine
from workflows import ids


def test_close_of_an_unknown_peer_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "n.yaml", "n1", {"peer1": None}, f"127.0.0.1:{free_port()}")
    code, out, err = run_cli(capsys, "close", "peer9", "--config", str(config))
    assert (code, out) == (2, "")
    assert err == "paychan close: unknown peer 'peer9' (node n1 has peers: peer1)\n"


@pytest.mark.integration
async def test_close_settles_a_ready_channel_and_refuses_without_one(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    node_logs_apart: None,  # noqa: F811
) -> None:
    node = KeeperNode(f"close-{uuid.uuid4().hex[:8]}", await new_account(), temporal_client)
    partner = Account.from_key(secrets.token_bytes(32)).address
    address = temporal_client.service_client.config.target_host
    config = write_config(tmp_path / "node.yaml", node.node_id, {"b": partner, "s": None}, address)
    cfg = ("--config", str(config))
    workflow_id = ids.channel_workflow_id(node.node_id, "b", "M2M")
    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": partner, "s": None},
            tmp_path,
            keep_check_seconds=1.0,
            seconds_per_block=0.2,
        )
        await node.provisioner.peer_connected("s")
        await node.wait_for_stage("s", "SKIPPED")
        code, out, err = await run_cli_async(capsys, "close", "s", *cfg)
        assert (code, out) == (1, "")
        assert "at stage SKIPPED: there is no READY channel to close" in err

        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        code, out, _ = await run_cli_async(capsys, "close", "b", *cfg)
        assert code == 0
        assert out.splitlines() == [
            f"sent close (unilateral) to {workflow_id} (stage READY)",
            "follow it with: paychan channels",
        ]
        window = await node.wait_for_stage("b", "SETTLE_WINDOW")
        code, table, _ = await run_cli_async(capsys, "channels", *cfg)
        assert code == 0
        note = f"    closing unilateral (operator); settles after block {window.settle_block}"
        assert note in table.splitlines()

        # Asked again with --wait: it follows the close to the end while the window passes.
        follow = asyncio.ensure_future(run_cli_async(capsys, "close", "b", "--wait", "30", *cfg))
        await asyncio.sleep(1.0)
        await mine(anvil_w3, SETTLE_TIMEOUT + 1)
        code, out, _ = await follow
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"sent close (unilateral) to {workflow_id} (stage SETTLE_WINDOW)"
    assert lines[1:] == [
        "stage SETTLED: unilateral (operator)",
        f"settled: we got {TARGET // 10**18}.0, the peer got 0.0",
    ]
    assert (await tn.get_channel(anvil_w3, deployment, channel_id)).state is ChannelState.SETTLED
