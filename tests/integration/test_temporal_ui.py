"""The Temporal web UI as the provisioning explorer, on the dev server the demo runs
(`connector.devstack.run_temporal`, UI included) with real workers and a real anvil.

The dev server registers NodeId, PeerId, Stage and ChannelId itself, so the list filters of
docs/operations.md work; each workflow carries a memo with the peer's address and token; the
`status` query is a readable document. Headless Chromium then opens the UI's workflow list
filtered by a search attribute, checks the rendered page lists exactly the node's channel
workflows, and takes a screenshot; with PAYCHAN_UPDATE_SCREENSHOT=1 it replaces the one the
README shows (docs/temporal-ui.png), so a test run leaves the work tree as it found it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from web3 import AsyncWeb3

from activities.token_network import Deployment
from connector.channels import ChannelProvisioner
from connector.devstack import TemporalDevServer, run_temporal
from tests.integration.headless_chromium import dump_dom, screenshot
from tests.integration.provisioning_node import TOKEN, Node
from workflows import ids
from workflows.messages import ChannelParams, ChannelStatus

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "temporal-ui.png"
NODE = "peer2"
TARGET = 10 * 10**18
# More M2M than the wallet holds: this peer waits in AWAITING_FUNDS.
UNAFFORDABLE = 10**30
PEERS = {"peer1": TARGET, "peer3": TARGET, "peer4": UNAFFORDABLE}


@pytest.fixture
def ui_server() -> AsyncIterator[TemporalDevServer]:
    # Its own dev server: the one `paychan demo` starts, with the web UI and no search
    # attributes registered by the test (the session fixture registers its own).
    with run_temporal(ui=True) as server:
        yield server


async def list_ids(client: Client, query: str) -> list[str]:
    return sorted([execution.id async for execution in client.list_workflows(query)])


async def wait_listed(client: Client, query: str, expected: list[str]) -> None:
    """Visibility trails the workflows a little: wait until the filter lists `expected`."""
    async with asyncio.timeout(30):
        while (found := await list_ids(client, query)) != expected:
            await asyncio.sleep(0.2)
    assert found == expected


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_ui_lists_provisioning_filtered_by_search_attribute_and_screenshot(
    ui_server: TemporalDevServer,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: Callable[..., Awaitable[LocalAccount]],
    tmp_path: Path,
) -> None:
    assert ui_server.ui_url is not None
    client = await Client.connect(ui_server.target, data_converter=pydantic_data_converter)
    wallet = await new_account()
    peer_addresses = {peer: Account.create().address for peer in PEERS}
    node = Node(NODE, wallet, client)
    async with AsyncExitStack() as stack:
        await node.start_workers(stack, anvil_w3, deployment)
        provisioner = ChannelProvisioner(
            client,
            node.registry,
            {
                peer: ChannelParams(
                    node_id=NODE,
                    peer_id=peer,
                    token=TOKEN,
                    chain_id=deployment.chain_id,
                    token_network=deployment.token_network,
                    our_address=wallet.address,
                    peer_address=peer_addresses[peer],
                    deposit_target=target,
                )
                for peer, target in PEERS.items()
            },
        )
        await asyncio.gather(*(provisioner.peer_connected(peer) for peer in PEERS))
        ready = [await node.wait_for_stage(peer, "READY") for peer in ("peer1", "peer3")]
        waiting = await node.wait_for_stage("peer4", "AWAITING_FUNDS")

        # The status query: a readable document, wei as decimal strings.
        for status in ready:
            assert isinstance(status, ChannelStatus)
            assert status.our_deposit == str(TARGET) and status.channel_id.startswith("0x")
        assert waiting.shortfall is not None and waiting.shortfall.address == wallet.address
        assert int(waiting.shortfall.token_missing) > 0

        # Memo: the peer's address and the token, as the UI's workflow page shows them.
        for peer, address in peer_addresses.items():
            handle = client.get_workflow_handle(ids.channel_workflow_id(NODE, peer, TOKEN))
            description = await handle.describe()
            assert await description.memo() == {"peerAddress": address, "token": TOKEN}

        # Search attributes registered by the dev server itself: the filters work.
        workflow_ids = [ids.channel_workflow_id(NODE, peer, TOKEN) for peer in PEERS]
        await wait_listed(client, f'NodeId = "{NODE}"', workflow_ids)
        await wait_listed(client, 'Stage = "AWAITING_FUNDS"', [workflow_ids[2]])
        await wait_listed(client, 'Stage = "READY" AND PeerId = "peer3"', [workflow_ids[1]])
        channel_id = ready[0].channel_id
        await wait_listed(client, f'ChannelId = "{channel_id}"', [workflow_ids[0]])

        # The UI's own list, filtered by NodeId, rendered by its JavaScript in Chromium.
        query = urllib.parse.quote(f'NodeId = "{NODE}"')
        url = f"{ui_server.ui_url}/namespaces/default/workflows?query={query}"
        dom = await dump_dom(url)
        for workflow_id in workflow_ids:
            assert workflow_id in dom, f"{workflow_id} not in the rendered list"
        assert "ChannelWorkflow" in dom
        assert "WalletSequencer" not in dom  # filtered out: it has no NodeId
        # The list's own count of what the filter matched.
        assert re.search(r'data-testid="workflow-count">\s*3\s*<', dom)

        shot = tmp_path / "temporal-ui.png"
        await screenshot(url, str(shot), width=1400, height=520)
        assert png_size(shot) == (1400, 520)
        if os.environ.get("PAYCHAN_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)
