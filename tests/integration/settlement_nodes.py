"""Connectors with settlement on, for tests on the real Temporal dev server and real anvil:
a node YAML as an operator writes it, and the node run in-process exactly as
`paychan connector` runs it (`connector.node_command.running_node`).

Shared by the settlement integration tests and the claim crash tests (which run the same
config in a `paychan connector`-like subprocess).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml
from web3 import AsyncWeb3

from connector.config import NodeConfig, parse_config
from connector.node_command import RunningNode, running_node
from connector.settlement import SettlementTiming

KEY_ENV = "SETTLEMENT_TEST_TREASURY_KEY"
THRESHOLD = 1_000_000
DEPOSIT_MULTIPLIER = 10
CREDIT_LIMIT = 10**12
LINK_TOKEN = "link-token-shared-by-both-ends"
# Tests do not wait out production backoffs.
FAST = SettlementTiming(
    claim_timeout=5.0, retry_initial=0.1, retry_max=1.0, channel_retry_interval=1.0
)


@dataclass(frozen=True)
class PeerLink:
    peer_id: str
    address: str
    # We dial the peer at this port; None: it dials us.
    port: int | None = None


def node_yaml(
    node_id: str,
    *,
    port: int,
    peers: Sequence[PeerLink],
    data_dir: Path,
    deployment_file: Path,
    temporal_address: str,
    rpc_url: str,
    threshold: int = THRESHOLD,
    admin_port: int | None = None,
    routes: Sequence[tuple[str, str]] = (),
) -> dict:
    """The node's YAML document; every peer is routed under `g.<peer id>`."""
    document: dict = {
        "nodeId": node_id,
        "ilpAddress": f"g.{node_id}",
        "btpServerPort": port,
        "ledgerPath": str(data_dir / node_id / "ledger.sqlite3"),
        "logFormat": "json",
        "peers": [
            {
                "id": peer.peer_id,
                "authToken": LINK_TOKEN,
                "evmAddress": peer.address,
                "creditLimit": CREDIT_LIMIT,
                **({"url": f"ws://127.0.0.1:{peer.port}"} if peer.port else {}),
            }
            for peer in peers
        ],
        "routes": [{"prefix": f"g.{peer.peer_id}", "peer": peer.peer_id} for peer in peers]
        + [{"prefix": prefix, "peer": peer} for prefix, peer in routes],
        "settlement": {
            "enableSettlement": True,
            "settlementThreshold": threshold,
            "initialDepositMultiplier": DEPOSIT_MULTIPLIER,
            "settleTimeout": 40,
            "rpcUrl": rpc_url,
            "deploymentFile": str(deployment_file),
            "privateKeyEnv": KEY_ENV,
        },
        "temporal": {"address": temporal_address},
    }
    if admin_port is not None:
        document["admin"] = {"port": admin_port, "token": f"admin-token-of-{node_id}"}
    return document


def write_node_yaml(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def config_of(document: dict, key: str) -> NodeConfig:
    return parse_config(yaml.safe_dump(document), environ={KEY_ENV: key})


async def run_in_process(
    stack: AsyncExitStack, config: NodeConfig, timing: SettlementTiming = FAST
) -> RunningNode:
    """The node as `paychan connector` runs it, until `stack` closes."""
    return await stack.enter_async_context(running_node(config, timing))


async def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached in {timeout}s: {what}") from None


def is_ready(running: RunningNode, peer_id: str) -> bool:
    view = running.node.channels.view(peer_id) if running.node.channels else None
    return view is not None and view.is_ready


def settled(running: RunningNode, peer_id: str) -> bool:
    """Nothing owed at the threshold and no claim waiting for its acknowledgement."""
    node, store = running.node, running.node.claims
    account = node.ledger.snapshot(peer_id)
    threshold = account.settlement_threshold or 0
    return (
        store is not None and store.pending_sent(peer_id) is None and -account.balance < threshold
    )


async def wallet_nonces(w3: AsyncWeb3, addresses: Sequence[str]) -> dict[str, int]:
    return {address: await w3.eth.get_transaction_count(address) for address in addresses}
