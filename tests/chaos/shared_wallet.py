"""SharedWalletNode: one node whose peers are provisioned by several `paychan worker`
processes at once, all signing for the node's one treasury wallet.

The node's connector side (the `connector-<node>` poller and its ChannelRegistry) runs in the
calling process; the workers are real subprocesses (`tests/chaos/node_process.py`), so one can
be SIGKILLed while the others carry on. `check` reads the end state from the chain and from
Temporal: every pair opened once, every deposit at target, and a nonce stream without gaps,
repeats or strangers. The many-workers chaos test and `bench/many_workers.py` share it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.connector import ConnectorActivities
from activities.deployment import deploy, write_deployment
from activities.rpc import connect_rpc
from activities.token_network import Deployment
from connector.channels import ChannelProvisioner, ChannelRegistry
from connector.devstack import ANVIL_KEYS, run_anvil
from tests.chaos.crash_link import opened_channels
from tests.chaos.node_process import NodeProcess, worker_process, write_node_config
from tests.chaos.workflow_history import submitted_intent_count, wait_for_completed
from worker.run import connector_worker
from workflows import ids
from workflows.messages import ChannelParams, ChannelStatus
from workflows.policies import WORKFLOW_TASK_TIMEOUT

TOKEN = "M2M"
TARGET = 10 * 10**18
SETTLE_TIMEOUT = 500
_STARTED = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
_TASK_STARTED = EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
_TASK_TIMED_OUT = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
# Slack over the workflow task timeout for the server's timer to fire.
TIMER_SLACK = 1.0


@dataclass(frozen=True)
class Chain:
    url: str
    w3: AsyncWeb3
    deployment: Deployment
    deployment_file: Path


@asynccontextmanager
async def block_time_chain(directory: Path, block_time: int = 1) -> AsyncIterator[Chain]:
    """An anvil of its own: contracts deployed at automine speed, then a block every
    `block_time` seconds as on a real chain, so batches pile up between blocks."""
    with run_anvil() as anvil:
        w3 = await connect_rpc(anvil.url)
        try:
            deployment = await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
            await w3.provider.make_request("evm_setAutomine", [False])
            await w3.provider.make_request("evm_setIntervalMining", [block_time])
            path = directory / "deployment.json"
            write_deployment(path, deployment)
            yield Chain(anvil.url, w3, deployment, path)
        finally:
            await w3.provider.disconnect()


class KillPoint(StrEnum):
    """When one worker is SIGKILLed, and which one."""

    # The wallet's first batch is on its way to the chain: the worker that broadcast it
    # (it also holds the sequencer's sticky workflow state) dies before any receipt.
    FIRST_BROADCAST = "first-broadcast"
    # The first peer is READY, the others still wait for receipts or their batch: the worker
    # that ran the sequencer's latest activity dies.
    FIRST_READY = "first-ready"


@dataclass(frozen=True)
class RunFigures:
    peers: int
    workers: int
    seconds_to_all_ready: float
    kill: KillPoint | None
    killed_after: float | None  # seconds after the first peer_connected
    ready_at_kill: int | None


@dataclass(frozen=True)
class NonceStream:
    """The wallet's transactions as mined, by kind. `gap_fills` are zero-value
    self-transfers the sequencer sends only for a nonce the chain refused."""

    first_nonce: int
    next_nonce: int
    kinds: dict[str, int]
    gap_fills: int
    refusals_logged: int
    # Workflow tasks that died with the killed worker: how long each held its workflow.
    lost_workflow_tasks: tuple[float, ...]


class SharedWalletNode:
    def __init__(
        self,
        *,
        client: Client,
        w3: AsyncWeb3,
        deployment: Deployment,
        wallet: LocalAccount,
        workers: list[NodeProcess],
        node_id: str,
        peers: int,
    ) -> None:
        self.client = client
        self.w3 = w3
        self.deployment = deployment
        self.wallet = wallet
        self.workers = workers
        self.node_id = node_id
        self.registry = ChannelRegistry()
        self.partners = {
            f"peer{i:02d}": Account.from_key(secrets.token_bytes(32)).address for i in range(peers)
        }
        self.provisioner = ChannelProvisioner(
            client,
            self.registry,
            {
                peer_id: ChannelParams(
                    node_id=node_id,
                    peer_id=peer_id,
                    token=TOKEN,
                    chain_id=deployment.chain_id,
                    token_network=deployment.token_network,
                    our_address=wallet.address,
                    peer_address=address,
                    deposit_target=TARGET,
                )
                for peer_id, address in self.partners.items()
            },
        )
        self.first_block = 0
        self.first_nonce = 0

    @classmethod
    async def open(
        cls,
        stack: AsyncExitStack,
        *,
        client: Client,
        temporal_address: str,
        chain: Chain,
        directory: Path,
        peers: int,
        workers: int,
    ) -> SharedWalletNode:
        """A fresh node id and treasury (ETH and M2M for every deposit), its connector poller
        here, and `workers` worker processes configured alike (not started)."""
        w3, deployment = chain.w3, chain.deployment
        node_id = f"shared-{uuid.uuid4().hex[:8]}"
        wallet = Account.from_key(secrets.token_bytes(32))
        await w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**22)])
        # The faucet mint is the wallet's own first transaction; provisioning's come after.
        await tn.send_and_wait(w3, wallet, tn.build_mint(deployment, wallet.address, 10**24))
        config = write_node_config(
            directory / f"{node_id}.yaml",
            node_id=node_id,
            rpc_url=chain.url,
            deployment_file=chain.deployment_file,
            temporal_address=temporal_address,
            settle_timeout=SETTLE_TIMEOUT,
        )
        processes = [
            worker_process(config, wallet.key.hex(), directory / f"{node_id}-w{index}.log")
            for index in range(workers)
        ]
        for process in processes:
            stack.push_async_callback(process.kill)
        node = cls(
            client=client,
            w3=w3,
            deployment=deployment,
            wallet=wallet,
            workers=processes,
            node_id=node_id,
            peers=peers,
        )
        await stack.enter_async_context(
            connector_worker(client, node_id, ConnectorActivities(node.registry))
        )
        return node

    @property
    def wallet_workflow_id(self) -> str:
        return ids.sequencer_workflow_id(self.deployment.chain_id, self.wallet.address)

    def workflow_id(self, peer_id: str) -> str:
        return ids.channel_workflow_id(self.node_id, peer_id, TOKEN)

    async def start_workers(self) -> None:
        async with asyncio.TaskGroup() as group:
            for process in self.workers:
                group.create_task(process.start())

    async def provision(self, kill: KillPoint | None, *, timeout: float) -> RunFigures:
        """Connect every peer at once; SIGKILL one worker at `kill`; wait for all READY."""
        self.first_block = await self.w3.eth.block_number
        self.first_nonce = await self.w3.eth.get_transaction_count(self.wallet.address)
        began = time.monotonic()
        ready = [asyncio.ensure_future(self.registry.wait_ready(p)) for p in self.partners]
        try:
            await asyncio.gather(*(self.provisioner.peer_connected(p) for p in self.partners))
            killed_after = ready_at_kill = None
            async with asyncio.timeout(timeout):
                if kill is not None:
                    await self._reach(kill, ready)
                    ready_at_kill = sum(task.done() for task in ready)
                    await self._kill_sequencer_worker()
                    killed_after = time.monotonic() - began
                await asyncio.gather(*ready)
        finally:
            for task in ready:
                task.cancel()
        return RunFigures(
            peers=len(self.partners),
            workers=len(self.workers),
            seconds_to_all_ready=time.monotonic() - began,
            kill=kill,
            killed_after=killed_after,
            ready_at_kill=ready_at_kill,
        )

    async def _reach(self, kill: KillPoint, ready: list[asyncio.Future[object]]) -> None:
        match kill:
            case KillPoint.FIRST_BROADCAST:
                await wait_for_completed(
                    self.client, self.wallet_workflow_id, ids.BROADCAST_TRANSACTIONS
                )
            case KillPoint.FIRST_READY:
                await asyncio.wait(ready, return_when=asyncio.FIRST_COMPLETED)

    async def _kill_sequencer_worker(self) -> NodeProcess:
        pid = await last_activity_pid(self.client, self.wallet_workflow_id)
        (victim,) = [process for process in self.workers if process.pid == pid]
        await victim.kill()
        return victim

    async def check(self) -> NonceStream:
        """Assert the end state; return the wallet's nonce stream."""
        deployment, ours = self.deployment, self.wallet.address
        for peer_id, partner in self.partners.items():
            view = self.registry.view(peer_id)
            assert view is not None and view.is_ready, (peer_id, view)
            handle = self.client.get_workflow_handle(self.workflow_id(peer_id))
            status = await handle.query(ids.QUERY_STATUS, result_type=ChannelStatus)
            assert (status.stage, status.channel_id) == ("READY", view.channel_id), status
            channel_id = await tn.get_channel_id(self.w3, deployment, ours, partner)
            assert channel_id == view.channel_id, (peer_id, channel_id, view)
            assert await tn.get_pair_counter(self.w3, deployment, ours, partner) == 1, peer_id
            assert await opened_channels(self.w3, deployment, ours, partner) == [channel_id]
            side = await tn.get_participant(self.w3, deployment, channel_id, ours)
            assert side.deposit == TARGET, f"{peer_id}: deposited {side.deposit}"
        lost = await self._check_lost_workflow_tasks()
        return replace(await self._check_nonce_stream(), lost_workflow_tasks=lost)

    async def _check_lost_workflow_tasks(self) -> tuple[float, ...]:
        """Every workflow of the node was started with the short workflow task timeout, and a
        workflow task lost with the killed worker went to another one within it."""
        workflow_ids = [self.wallet_workflow_id, *map(self.workflow_id, self.partners)]
        lost: list[float] = []
        for workflow_id in workflow_ids:
            handle = self.client.get_workflow_handle(workflow_id)
            config = (await handle.describe()).raw_description.execution_config
            timeout = config.default_workflow_task_timeout.ToTimedelta()
            assert timeout == WORKFLOW_TASK_TIMEOUT, f"{workflow_id}: task timeout {timeout}"
            lost.extend(await lost_workflow_tasks(self.client, workflow_id))
        limit = WORKFLOW_TASK_TIMEOUT.total_seconds() + TIMER_SLACK
        assert all(held <= limit for held in lost), f"lost workflow tasks held {sorted(lost)}"
        return tuple(lost)

    async def _check_nonce_stream(self) -> NonceStream:
        w3, ours = self.w3, self.wallet.address
        latest = await w3.eth.get_transaction_count(ours, "latest")
        pending = await w3.eth.get_transaction_count(ours, "pending")
        assert latest == pending, f"{pending - latest} of the wallet's txs never mined"
        mined = await wallet_transactions(w3, ours, self.first_block + 1)
        nonces = sorted(tx["nonce"] for tx, _ in mined)
        assert nonces == list(range(self.first_nonce, latest)), f"nonce stream {nonces}"
        kinds: Counter[str] = Counter()
        for tx, receipt in mined:
            kind = self._kind_of(tx)
            assert receipt["status"] == 1, f"nonce {tx['nonce']} ({kind}) reverted"
            kinds[kind] += 1
        peers = len(self.partners)
        assert (kinds["open"], kinds["deposit"]) == (peers, peers), kinds
        assert set(kinds) <= {"approve", "open", "deposit", "gap-fill"}, kinds
        asked = sum(
            await asyncio.gather(
                *(submitted_intent_count(self.client, self.workflow_id(p)) for p in self.partners)
            )
        )
        gap_fills = kinds["gap-fill"]
        assert latest - self.first_nonce == asked + gap_fills, (latest, asked, kinds)
        refusals = sum(
            record.get("event") == "NONCE_GAP_FILLED"
            for process in self.workers
            for record in process.records
        )
        # A gap is filled only for a nonce the chain refused, and the refusal is logged.
        assert gap_fills <= refusals, f"{gap_fills} gap fills, {refusals} refusals logged"
        return NonceStream(self.first_nonce, latest, dict(kinds), gap_fills, refusals, ())

    def _kind_of(self, tx: dict) -> str:
        deployment = self.deployment
        selector = bytes(tx["input"])[:4]
        if tx["to"] == self.wallet.address:
            return "gap-fill" if tx["value"] == 0 else "transfer"
        builders = {
            "approve": tn.build_approve(deployment, 0),
            "open": tn.build_open_channel(deployment, self.wallet.address, SETTLE_TIMEOUT),
            "deposit": tn.build_set_total_deposit(deployment, "0x" + "00" * 32, tx["from"], 0),
        }
        for kind, built in builders.items():
            if tx["to"] == built["to"] and bytes.fromhex(built["data"][2:10]) == selector:
                return kind
        return f"other:{tx['to']}:{selector.hex()}"


async def wallet_transactions(
    w3: AsyncWeb3, address: str, from_block: int
) -> list[tuple[dict, dict]]:
    """Every mined transaction sent by `address` from `from_block` on, with its receipt."""
    found = []
    for number in range(from_block, await w3.eth.block_number + 1):
        block = await w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["from"] == address:
                found.append((dict(tx), dict(await w3.eth.get_transaction_receipt(tx["hash"]))))
    return found


async def lost_workflow_tasks(client: Client, workflow_id: str) -> list[float]:
    """Seconds from start to start-to-close timeout of each workflow task that timed out
    after a worker took it (the worker died holding it)."""
    started_at = None
    lost = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == _TASK_STARTED:
            started_at = event.event_time.ToDatetime()
        elif event.event_type == _TASK_TIMED_OUT:
            attributes = event.workflow_task_timed_out_event_attributes
            if attributes.timeout_type == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE:
                assert started_at is not None
                lost.append((event.event_time.ToDatetime() - started_at).total_seconds())
    return lost


async def last_activity_pid(client: Client, workflow_id: str) -> int:
    """The process (worker identity `<pid>@<host>`) that started the workflow's most recent
    activity."""
    pid = None
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == _STARTED:
            identity = event.activity_task_started_event_attributes.identity
            match = re.match(r"(\d+)@", identity)
            assert match is not None, identity
            pid = int(match.group(1))
    assert pid is not None, f"{workflow_id} ran no activity yet"
    return pid
