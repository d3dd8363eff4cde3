"""The provisioning crash matrix, on the real Temporal dev server and real anvil, with the
worker as a real `paychan worker` subprocess.

Each test crashes something mid-provisioning and asserts the same end state: exactly one
channel for the pair on-chain (pair counter 1, one `ChannelOpened`), both deposits exactly at
target, both workflows and both connectors' views READY, and each wallet's nonce advanced by
exactly the transactions provisioning asked for (nothing sent twice).

Step boundaries are found in workflow histories (long-polled), and an RpcGate in front of
anvil holds the worker at the very next chain call, so each kill lands at the same place
every time: after the named activity completed, before the next step touched the chain.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.deployment import deploy, write_deployment
from activities.token_network import Deployment, build_mint, send_and_wait
from connector.channels import ChannelProvisioner, ChannelRegistry
from connector.devstack import ANVIL_KEYS, run_anvil, run_temporal
from tests.chaos.crash_link import CrashLink, assert_one_channel_ready
from tests.chaos.node_process import connector_process
from tests.chaos.workflow_history import (
    completed_activities,
    completed_by,
    is_running_on,
    is_waiting_in_queue,
    submitted_hashes,
    wait_for_completed,
    wait_for_pending,
)
from tests.integration.provisioning_node import Node
from workflows import ids

pytestmark = pytest.mark.integration

REPETITIONS = 3
SUBMIT, WAIT = ids.SUBMIT_TRANSACTIONS, ids.WAIT_FOR_RECEIPTS
READY_TIMEOUT = 90.0
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def all_of(*awaitables: Awaitable[T]) -> list[T]:
    """Run together; the first failure cancels the others, which then clean up (gather
    would leave them running past the test)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(awaitable) for awaitable in awaitables]
    return [task.result() for task in tasks]


async def funded_account(w3: AsyncWeb3, deployment: Deployment) -> LocalAccount:
    """A fresh treasury with ETH and M2M on a chain of the test's own."""
    account = Account.from_key(secrets.token_bytes(32))
    await w3.provider.make_request("anvil_setBalance", [account.address, hex(100 * 10**18)])
    await send_and_wait(w3, account, build_mint(deployment, account.address, 10**24))
    return account


async def pool_hashes(w3: AsyncWeb3, address: str) -> set[str]:
    """Hashes of `address`'s transactions waiting in anvil's mempool."""
    content = (await w3.provider.make_request("txpool_content", []))["result"]
    waiting = {**content["pending"], **content["queued"]}
    by_sender = {sender.lower(): txs for sender, txs in waiting.items()}
    return {tx["hash"] for tx in by_sender.get(address.lower(), {}).values()}


@pytest.fixture(scope="module")
def deployment_file(tmp_path_factory: pytest.TempPathFactory, deployment: Deployment) -> Path:
    path = tmp_path_factory.mktemp("chaos") / "deployment.json"
    write_deployment(path, deployment)
    return path


@pytest.fixture(scope="module")
def temporal_address(temporal_client: Client) -> str:
    return temporal_client.service_client.config.target_host


async def links_on_own_chain(
    stack: AsyncExitStack,
    rpc_url: str,
    client: Client,
    temporal_address: str,
    directory: Path,
    count: int,
) -> tuple[AsyncWeb3, list[CrashLink]]:
    """`count` links of fresh treasuries on a chain of the test's own, whose mining the test
    may stop (automine off keeps transactions in the mempool)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    stack.push_async_callback(w3.provider.disconnect)
    deployment = await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
    deployment_file = directory / "deployment.json"
    write_deployment(deployment_file, deployment)
    links = [
        await CrashLink.open(
            stack,
            client=client,
            temporal_address=temporal_address,
            rpc_url=rpc_url,
            w3=w3,
            deployment=deployment,
            deployment_file=deployment_file,
            a_id=unique(f"a{index}"),
            a_account=await funded_account(w3, deployment),
            b=Node(unique(f"b{index}"), await funded_account(w3, deployment), client),
            directory=directory,
        )
        for index in range(count)
    ]
    return w3, links


@dataclass(frozen=True)
class Boundary:
    """Kill once `activity` has completed (in the wallet sequencer's history when `on_wallet`,
    else the channel workflow's), with A's next chain call waiting at the gate.

    `gate` lists the RPC methods held in turn: each is held until a call of it waits, then the
    next is held and the previous released, so the worker stops exactly where the last one is
    first called. `at_gate` False kills as soon as the history shows the completion.
    """

    activity: str
    on_wallet: bool
    gate: tuple[str, ...]
    at_gate: bool = True


BOUNDARIES = {
    # Balances read (a local activity); the submission is running and the sequencer reads
    # the nonce.
    "read_chain_state": Boundary(ids.READ_CHAIN_STATE, False, ("eth_getTransactionCount",)),
    # Raw txs and hashes in the sequencer's history, nothing broadcast yet.
    "sign_transactions": Boundary(ids.SIGN_TRANSACTIONS, True, ("eth_sendRawTransaction",)),
    # Broadcast (automine: mined); killed as the completion appears, before any receipt poll.
    "broadcast_transactions": Boundary(
        ids.BROADCAST_TRANSACTIONS, True, ("eth_getTransactionReceipt",), at_gate=False
    ),
    # Hashes in the channel workflow's history; the receipt wait is at its first poll.
    "submit_transactions": Boundary(ids.SUBMIT_TRANSACTIONS, False, ("eth_getTransactionReceipt",)),
    # Receipts seen inside the wait; its read of the pair (which leads to READY) is at its
    # first call. (Once the wait completes, READY is decided in the same workflow task.)
    "wait_for_receipts": Boundary(
        ids.SUBMIT_TRANSACTIONS, False, ("eth_getTransactionReceipt", "eth_call")
    ),
}


@dataclass(frozen=True)
class Recovery:
    landed: str
    startup: float
    ready: float


async def kill_at(link: CrashLink, boundary: Boundary) -> str:
    """Provision A until `boundary`, SIGKILL its worker there; describe where it landed."""
    gate, client = link.gate, link.client
    gate.hold(boundary.gate[0])
    await link.worker.start()
    await link.provisioner.peer_connected(link.b.node_id)
    for previous, method in pairwise(boundary.gate):
        await gate.wait_held(previous, timeout=30)
        gate.hold(method)
        gate.release(previous)
    history = link.a_wallet_id if boundary.on_wallet else link.a_workflow_id
    await wait_for_completed(client, history, boundary.activity, timeout=30)
    if boundary.at_gate:
        await gate.wait_held(boundary.gate[-1], timeout=30)
    await link.worker.kill()
    gate.drop_held()
    channel = await completed_activities(client, link.a_workflow_id)
    wallet = await completed_activities(client, link.a_wallet_id)
    assert boundary.activity in (wallet if boundary.on_wallet else channel)
    assert await link.a_stage() != "READY", "the kill landed after provisioning"
    return f"channel={channel} wallet={wallet}"


async def restart_until_ready(link: CrashLink) -> tuple[float, float]:
    """Start a fresh worker for A while B connects too; seconds to A's worker polling and to
    both sides READY."""
    began = time.monotonic()
    startup = await link.worker.start()
    await link.b.provisioner.peer_connected(link.a_id)
    await asyncio.wait_for(
        asyncio.gather(
            link.registry.wait_ready(link.b.node_id), link.b.registry.wait_ready(link.a_id)
        ),
        READY_TIMEOUT,
    )
    return startup, time.monotonic() - began


@pytest.mark.parametrize("boundary", BOUNDARIES)
async def test_worker_killed_at_step_boundary_resumes_to_one_channel(
    boundary: str,
    temporal_client: Client,
    temporal_address: str,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    deployment_file: Path,
    new_account,
    tmp_path: Path,
) -> None:
    async def crash_once(repetition: int) -> Recovery:
        async with AsyncExitStack() as stack:
            link = await CrashLink.open(
                stack,
                client=temporal_client,
                temporal_address=temporal_address,
                rpc_url=anvil.url,
                w3=anvil_w3,
                deployment=deployment,
                deployment_file=deployment_file,
                a_id=unique(f"a{repetition}"),
                a_account=await new_account(),
                b=Node(unique(f"b{repetition}"), await new_account(), temporal_client),
                directory=tmp_path,
            )
            landed = await kill_at(link, BOUNDARIES[boundary])
            startup, ready = await restart_until_ready(link)
            await assert_one_channel_ready(link, anvil_w3)
            return Recovery(landed, startup, ready)

    for recovery in await all_of(*(crash_once(r) for r in range(REPETITIONS))):
        print(
            f"\n{boundary}: worker start {recovery.startup:.2f}s, restart→READY "
            f"{recovery.ready:.2f}s; killed with {recovery.landed}"
        )


async def test_worker_killed_mid_transaction_sends_nothing_twice(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    """Automine off, so A's transactions sit in the mempool: A's worker is SIGKILLed after
    broadcast and before any receipt, a fresh one resumes waiting for those very hashes, and
    mining them makes the channel READY. No other transaction from A ever enters the pool."""
    with run_anvil() as chain:
        async with AsyncExitStack() as stack:
            w3, links = await links_on_own_chain(
                stack, chain.url, temporal_client, temporal_address, tmp_path, REPETITIONS
            )
            await w3.provider.make_request("evm_setAutomine", [False])

            async def broadcast_then_kill(link: CrashLink) -> set[str]:
                await link.worker.start()
                await link.provisioner.peer_connected(link.b.node_id)
                # Hashes in the channel workflow's history, the receipt wait under way.
                await wait_for_completed(temporal_client, link.a_workflow_id, SUBMIT, timeout=30)
                hashes = await submitted_hashes(temporal_client, link.a_workflow_id)
                async with asyncio.timeout(10):
                    while await pool_hashes(w3, link.a_account.address) != hashes:
                        await asyncio.sleep(0.02)
                await wait_for_pending(
                    temporal_client, link.a_workflow_id, WAIT, is_running_on(link.worker.pid)
                )
                await link.worker.kill()
                return hashes

            hashes = await all_of(*(broadcast_then_kill(link) for link in links))
            began = time.monotonic()
            startups = await all_of(*(link.worker.start() for link in links))
            # The fresh workers poll for the receipts again (after the lost attempt's
            # heartbeat timeout) and have had every chance to send anything again.
            await all_of(
                *(
                    wait_for_pending(
                        temporal_client, link.a_workflow_id, WAIT, is_running_on(link.worker.pid)
                    )
                    for link in links
                )
            )
            for link, sent in zip(links, hashes, strict=True):
                assert await pool_hashes(w3, link.a_account.address) == sent
            await w3.provider.make_request("evm_mine", [])
            await w3.provider.make_request("evm_setAutomine", [True])
            for link in links:
                await link.b.provisioner.peer_connected(link.a_id)
            await asyncio.wait_for(
                asyncio.gather(
                    *(link.registry.wait_ready(link.b.node_id) for link in links),
                    *(link.b.registry.wait_ready(link.a_id) for link in links),
                ),
                READY_TIMEOUT,
            )
            ready = time.monotonic() - began
            for link in links:
                await assert_one_channel_ready(link, w3)
    print(
        f"\nmid-transaction: worker start {max(startups):.2f}s, restart→READY {ready:.2f}s "
        f"({REPETITIONS} workers at once)"
    )


async def test_worker_sigterm_mid_receipt_wait_finishes_the_step_then_exits(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    """SIGTERM while A's worker waits for its receipts (automine off): the worker takes no
    new work, the wait it is running sees the block mined meanwhile and completes there, on
    its first attempt (not abandoned to a heartbeat timeout and retried elsewhere), and the
    worker exits 0. A fresh worker takes the channel on to READY; nothing is sent twice."""
    with run_anvil() as chain:
        async with AsyncExitStack() as stack:
            w3, (link,) = await links_on_own_chain(
                stack, chain.url, temporal_client, temporal_address, tmp_path, 1
            )
            await w3.provider.make_request("evm_setAutomine", [False])
            await link.worker.start()
            await link.provisioner.peer_connected(link.b.node_id)
            await wait_for_completed(temporal_client, link.a_workflow_id, SUBMIT, timeout=30)
            hashes = await submitted_hashes(temporal_client, link.a_workflow_id)
            stopping_pid = link.worker.pid
            await wait_for_pending(
                temporal_client, link.a_workflow_id, WAIT, is_running_on(stopping_pid)
            )

            seen = len(link.worker.records)
            link.worker.terminate()
            await link.worker.wait_for(
                lambda record: record.get("event") == "WORKER_STOPPING", after=seen, timeout=10
            )
            await w3.provider.make_request("evm_mine", [])
            assert await link.worker.exit_code(timeout=15) == 0
            identity, attempt = await completed_by(temporal_client, link.a_workflow_id, WAIT)
            assert identity.startswith(f"{stopping_pid}@") and attempt == 1
            assert await link.a_stage() != "READY", "READY needs a worker; none is running"

            await w3.provider.make_request("evm_setAutomine", [True])
            await restart_until_ready(link)
            assert hashes <= set(await submitted_hashes(temporal_client, link.a_workflow_id))
            await assert_one_channel_ready(link, w3)


async def test_temporal_restarted_mid_provisioning_resumes_to_one_channel(
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    deployment_file: Path,
    new_account,
    tmp_path: Path,
) -> None:
    """A's worker is held at its first broadcast (stage OPENING, or DEPOSITING when the peer
    opened first) when the Temporal dev server is SIGKILLed; it restarts on the same port and
    SQLite file, the same worker process reconnects and both sides end READY on one channel."""
    database = tmp_path / "temporal.sqlite"
    with ExitStack() as servers:
        first = servers.enter_context(
            run_temporal(db_file=database, ui=False, log_file=tmp_path / "temporal.log")
        )
        client = await Client.connect(first.target, data_converter=pydantic_data_converter)
        async with AsyncExitStack() as stack:
            link = await CrashLink.open(
                stack,
                client=client,
                temporal_address=first.target,
                rpc_url=anvil.url,
                w3=anvil_w3,
                deployment=deployment,
                deployment_file=deployment_file,
                a_id=unique("a"),
                a_account=await new_account(),
                b=Node(unique("b"), await new_account(), client),
                directory=tmp_path,
            )
            link.gate.hold("eth_sendRawTransaction")
            await link.worker.start()
            await link.provisioner.peer_connected(link.b.node_id)
            await link.gate.wait_held("eth_sendRawTransaction", timeout=30)
            assert await link.a_stage() in ("OPENING", "DEPOSITING")

            first.kill()
            began = time.monotonic()
            servers.enter_context(
                run_temporal(
                    port=first.port,
                    db_file=database,
                    ui=False,
                    log_file=tmp_path / "temporal.log",
                )
            )
            link.gate.release("eth_sendRawTransaction")
            await link.b.provisioner.peer_connected(link.a_id)
            await asyncio.wait_for(
                asyncio.gather(
                    link.registry.wait_ready(link.b.node_id),
                    link.b.registry.wait_ready(link.a_id),
                ),
                READY_TIMEOUT,
            )
            ready = time.monotonic() - began
            assert link.worker.starts == 1, "the worker process reconnected by itself"
            await assert_one_channel_ready(link, anvil_w3)
    print(f"\nTemporal restart: server restart→READY {ready:.2f}s")


async def test_connector_restarted_mid_provisioning_gets_ready_and_rebuilds(
    temporal_client: Client,
    temporal_address: str,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    deployment_file: Path,
    new_account,
    tmp_path: Path,
) -> None:
    """A's connector process (the `connector-<A>` poller) is SIGKILLed while A is OPENING.
    A reaches READY without it; its readiness waits in the queue and reaches the next
    connector process, and a registry rebuilt from Temporal shows the channel, nothing opened
    again."""
    async with AsyncExitStack() as stack:
        link = await CrashLink.open(
            stack,
            client=temporal_client,
            temporal_address=temporal_address,
            rpc_url=anvil.url,
            w3=anvil_w3,
            deployment=deployment,
            deployment_file=deployment_file,
            a_id=unique("a"),
            a_account=await new_account(),
            b=Node(unique("b"), await new_account(), temporal_client),
            directory=tmp_path,
            a_connector=False,
        )
        connector = connector_process(link.a_id, temporal_address, tmp_path / "connector.log")
        stack.push_async_callback(connector.kill)
        await all_of(connector.start(), link.worker.start())
        link.gate.hold("eth_sendRawTransaction")
        await link.provisioner.peer_connected(link.b.node_id)
        await link.gate.wait_held("eth_sendRawTransaction", timeout=30)
        await connector.kill()

        link.gate.release("eth_sendRawTransaction")
        await link.b.provisioner.peer_connected(link.a_id)
        await wait_for_pending(
            temporal_client, link.a_workflow_id, ids.MARK_SETTLEMENT_READY, is_waiting_in_queue
        )
        status = await link.a_status()
        assert status.stage == "READY"

        began = time.monotonic()
        seen = len(connector.records)
        await connector.start()
        ready = await connector.wait_for(
            lambda record: record.get("event") == "Payment channel ready",
            after=seen,
            timeout=READY_TIMEOUT,
        )
        delivered = time.monotonic() - began
        assert (ready["peerId"], ready["channelId"]) == (link.b.node_id, status.channel_id)

        link.registry = ChannelRegistry()
        assert await ChannelProvisioner(temporal_client, link.registry, {}).rebuild(link.a_id) == 1
        await asyncio.wait_for(link.b.registry.wait_ready(link.a_id), READY_TIMEOUT)
        await assert_one_channel_ready(link, anvil_w3)
    print(f"\nconnector restart: connector start→READY delivered {delivered:.2f}s")
