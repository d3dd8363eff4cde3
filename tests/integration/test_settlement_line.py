"""The issue's must-show for claims: the 5-node line from examples/ with settlement on, on the
real Temporal dev server and real anvil, every node run in-process as `paychan connector`
runs it. 10,000 packets go peer1 -> peer5 end to end and cross each link's threshold several
times; every link settles by claims, no wallet sends a transaction during the traffic, and
on every link the claims add up to exactly the balance they moved.

Test-only changes to the examples: node ids get a per-run suffix (so the workflows are this
test's own on the shared Temporal server), and ports, keys, chain and data directory come
through the environment variables the examples read.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncWeb3

from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.config import NodeConfig, parse_config
from connector.devstack import free_port
from connector.node_command import RunningNode
from tests.integration.settlement_nodes import (
    FAST,
    is_ready,
    run_in_process,
    settled,
    wait_for,
    wallet_nonces,
)

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = [f"peer{i}" for i in range(1, 6)]
LINKS = list(itertools.pairwise(NAMES))
PACKETS = 10_000
AMOUNT = 500  # 5,000,000 per link: five thresholds of 1,000,000
THRESHOLD = 1_000_000
IN_FLIGHT = 100

NewAccount = Callable[..., Awaitable[LocalAccount]]


def line_configs(
    tmp_path: Path,
    suffix: str,
    accounts: dict[str, LocalAccount],
    temporal_address: str,
    rpc_url: str,
    deployment_file: Path,
) -> dict[str, NodeConfig]:
    environ = {
        **os.environ,
        "PAYCHAN_DATA_DIR": str(tmp_path),
        "PAYCHAN_RPC_URL": rpc_url,
        "PAYCHAN_DEPLOYMENT": str(deployment_file),
        "PAYCHAN_SETTLEMENT_THRESHOLD": str(THRESHOLD),
        "PAYCHAN_FEE_BASIS_POINTS": "0",
        "TEMPORAL_ADDRESS": temporal_address,
        "PAYCHAN_LOG_FORMAT": "json",
    }
    for name in NAMES:
        upper = name.upper()
        environ |= {
            f"{upper}_BTP_PORT": str(free_port()),
            f"{upper}_HEALTH_PORT": "0",
            f"{upper}_ADMIN_PORT": "0",
            f"{upper}_TREASURY_EVM_PRIVATE_KEY": accounts[name].key.hex(),
            f"{upper}_EVM_ADDRESS": accounts[name].address,
        }
    configs = {}
    for name in NAMES:
        text = (EXAMPLES / f"{name}.yaml").read_text()
        # peerN -> peerN<suffix> wherever it names a node (ids, addresses, routes, paths);
        # the environment variable names (PEERN_...) are upper case and stay.
        text = re.sub(r"\b(peer[1-5])\b", rf"\g<1>{suffix}", text)
        configs[name] = parse_config(text, environ, source=name)
    return configs


async def test_five_node_line_settles_every_link_by_claims_with_no_transaction(
    temporal_env: WorkflowEnvironment,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    accounts = dict(zip(NAMES, await asyncio.gather(*(new_account() for _ in NAMES)), strict=True))
    suffix = "x" + uuid.uuid4().hex[:5]
    configs = line_configs(
        tmp_path,
        suffix,
        accounts,
        temporal_env.client.service_client.config.target_host,
        anvil.url,
        deployment_file,
    )
    ids = {name: configs[name].node_id for name in NAMES}

    async with AsyncExitStack() as stack:
        nodes: dict[str, RunningNode] = {}
        for name in reversed(NAMES):  # servers first, so clients connect at once
            nodes[name] = await run_in_process(stack, configs[name], FAST)
        await wait_for(
            lambda: all(
                is_ready(nodes[a], ids[b]) and is_ready(nodes[b], ids[a]) for a, b in LINKS
            ),
            timeout=60,
            what="every link READY on both ends",
        )
        ready_after = time.monotonic() - started
        nonces = await wallet_nonces(anvil_w3, [account.address for account in accounts.values()])

        sender = nodes["peer1"].node
        in_flight = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> bool:
            async with in_flight:
                return (await sender.send_payment(f"g.{ids['peer5']}", AMOUNT)).fulfilled

        traffic_started = time.monotonic()
        results = await asyncio.gather(*(one() for _ in range(PACKETS)))
        traffic_seconds = time.monotonic() - traffic_started
        assert sum(results) == PACKETS
        for upstream, downstream in LINKS:
            await wait_for(
                lambda u=upstream, d=downstream: settled(nodes[u], ids[d]),
                timeout=30,
                what=f"{upstream} settled with {downstream}",
            )

        moved = PACKETS * AMOUNT
        for upstream, downstream in LINKS:
            payer, payee = nodes[upstream].node, nodes[downstream].node
            channel = payer.channels.view(ids[downstream]).channel_id
            last = payer.claims.latest_acknowledged(ids[downstream], channel)
            received = payee.claims.best_received(ids[upstream], channel)
            # Several thresholds crossed, each paid by a claim the payee holds.
            assert last is not None and last.nonce >= 3, (upstream, last)
            assert received.claim == last.claim
            claimed = last.transferred_amount
            # The claims add up to exactly the balance they moved, on both ledgers.
            assert payer.ledger.snapshot(ids[downstream]).balance == -moved + claimed
            assert payee.ledger.snapshot(ids[upstream]).balance == moved - claimed
            assert 0 <= moved - claimed < THRESHOLD
            health = payee.health_snapshot().peers[ids[upstream]]
            assert (health.received_claim_nonce, health.received_claim_amount) == (
                last.nonce,
                claimed,
            )
        # Not one on-chain transaction from any wallet during traffic and settlement.
        assert await wallet_nonces(anvil_w3, list(nonces)) == nonces

    print(
        f"\nline READY after {ready_after:.1f}s; {PACKETS} packets in {traffic_seconds:.1f}s; "
        f"whole test {time.monotonic() - started:.1f}s"
    )
