"""Time-to-READY for N peers provisioning at once from one treasury wallet.

    .venv/bin/python bench/provisioning.py            # print the table
    .venv/bin/python bench/provisioning.py --write    # and update "## Provisioning" in BENCHMARKS.md
    .venv/bin/python bench/provisioning.py --sizes 100 --profile   # where the time goes

A real Temporal dev server and a real `anvil --block-time 1`, started here. For each N a
fresh node (its own task queues, workers in this process, as the connector hosts them) and
a fresh wallet (so a fresh wallet sequencer) provision channels to N fresh random partner
addresses: every `peer_connected` is sent at once, and the clock runs from the first start
to the moment the last READY reaches the connector's registry (`mark_settlement_ready`).
`--profile` reads the workflow histories afterwards and prints, per step, when the peers'
activities were scheduled, started and completed (seconds after the first start), and the
wallet sequencer's batches: enough to tell Temporal overhead from chain waits.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import secrets
import statistics
import sys
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.connector import ConnectorActivities
from activities.deployment import deploy
from activities.rpc import connect_rpc
from activities.token_network import Deployment
from connector.channels import ChannelProvisioner, ChannelRegistry
from connector.devstack import ANVIL_KEYS, run_anvil, run_temporal
from worker.data_converter import DATA_CONVERTER
from worker.run import ChainContext, build_workers
from workflows.ids import channel_workflow_id, sequencer_workflow_id
from workflows.messages import ChannelParams

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/provisioning.py"
SIZES = (1, 10, 50, 100)
BLOCK_TIME = 1.0
TARGET = 10 * 10**18
SETTLE_TIMEOUT = 500
# The marker a local activity's result is recorded in (Temporal core's name).
LOCAL_ACTIVITY_MARKER = "core_local_activity"


@dataclass(frozen=True)
class Run:
    peers: int
    seconds: float
    median: float
    blocks: int
    txs: int
    blocks_with_txs: int


async def fund_wallet(w3: AsyncWeb3, deployment: Deployment, peers: int) -> LocalAccount:
    wallet = Account.from_key(secrets.token_bytes(32))
    await w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**22)])
    minter = Account.from_key(ANVIL_KEYS[0])
    await tn.send_and_wait(w3, minter, tn.build_mint(deployment, wallet.address, peers * TARGET))
    return wallet


async def provision(
    client: Client, w3: AsyncWeb3, deployment: Deployment, peers: int, *, profile: bool = False
) -> Run:
    node_id = f"bench{peers}-{uuid.uuid4().hex[:6]}"
    wallet = await fund_wallet(w3, deployment, peers)
    registry = ChannelRegistry()
    params = {
        f"peer{i:03d}": ChannelParams(
            node_id=node_id,
            peer_id=f"peer{i:03d}",
            token="M2M",
            chain_id=deployment.chain_id,
            token_network=deployment.token_network,
            our_address=wallet.address,
            peer_address=Account.from_key(secrets.token_bytes(32)).address,
            deposit_target=TARGET,
        )
        for i in range(peers)
    }
    provisioner = ChannelProvisioner(client, registry, params)
    context = ChainContext(node_id, w3, wallet, deployment, SETTLE_TIMEOUT)
    async with AsyncExitStack() as stack:
        for worker in build_workers(client, context, ConnectorActivities(registry)):
            await stack.enter_async_context(worker)
        first_block = await w3.eth.block_number
        started = time.perf_counter()

        async def ready_after(peer_id: str) -> float:
            await registry.wait_ready(peer_id)
            return time.perf_counter() - started

        waits = [asyncio.ensure_future(ready_after(peer_id)) for peer_id in params]
        await asyncio.gather(*(provisioner.peer_connected(peer_id) for peer_id in params))
        times = await asyncio.wait_for(asyncio.gather(*waits), timeout=120)
        last_block = await w3.eth.block_number
    blocks_with_txs = 0
    for number in range(first_block + 1, last_block + 1):
        block = await w3.eth.get_block(number, full_transactions=True)
        if any(tx["from"] == wallet.address for tx in block["transactions"]):
            blocks_with_txs += 1
    run = Run(
        peers=peers,
        seconds=max(times),
        median=statistics.median(times),
        blocks=last_block - first_block,
        txs=await w3.eth.get_transaction_count(wallet.address),
        blocks_with_txs=blocks_with_txs,
    )
    if profile:
        await print_profile(client, node_id, list(params), wallet.address, deployment.chain_id)
    return run


@dataclass
class Step:
    scheduled: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)


def _local_activity(event: HistoryEvent) -> str | None:
    """The activity type of a local activity's marker, else None."""
    if not event.HasField("marker_recorded_event_attributes"):
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER:
        return None
    return json.loads(marker.details["data"].payloads[0].data)["activity_type"]


def _seconds(event: HistoryEvent, origin: datetime.datetime) -> float:
    return (event.event_time.ToDatetime() - origin).total_seconds()


async def print_profile(
    client: Client, node_id: str, peer_ids: list[str], wallet: str, chain_id: int
) -> None:
    """Per step (activity type and occurrence), when the peers reached it."""
    histories = [
        list(
            (
                await client.get_workflow_handle(
                    channel_workflow_id(node_id, peer, "M2M")
                ).fetch_history()
            ).events
        )
        for peer in peer_ids
    ]
    origin = min(events[0].event_time.ToDatetime() for events in histories)
    steps: dict[str, Step] = {}
    for events in histories:
        names: dict[int, str] = {}
        seen: dict[str, int] = {}
        for event in events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                seen[name] = seen.get(name, 0) + 1
                names[event.event_id] = f"{name} #{seen[name]}"
                steps.setdefault(names[event.event_id], Step()).scheduled.append(
                    _seconds(event, origin)
                )
            elif event.HasField("activity_task_started_event_attributes"):
                step = names[event.activity_task_started_event_attributes.scheduled_event_id]
                steps[step].started.append(_seconds(event, origin))
            elif event.HasField("activity_task_completed_event_attributes"):
                step = names[event.activity_task_completed_event_attributes.scheduled_event_id]
                steps[step].completed.append(_seconds(event, origin))
            elif (name := _local_activity(event)) is not None:
                # Recorded with the workflow task that ran it: "completed" is that moment.
                seen[name] = seen.get(name, 0) + 1
                step = f"{name} (local) #{seen[name]}"
                steps.setdefault(step, Step()).completed.append(_seconds(event, origin))
    print(
        "\nstep (s after first start)      scheduled med/max   started med/max  completed med/max"
    )
    for name, step in sorted(
        steps.items(), key=lambda item: statistics.median(item[1].scheduled or item[1].completed)
    ):
        cells = [
            f"{statistics.median(times):5.2f}/{max(times):5.2f}" if times else "    -/    -"
            for times in (step.scheduled, step.started, step.completed)
        ]
        print(f"{name:30s} {cells[0]:>17s} {cells[1]:>17s} {cells[2]:>17s}")
    sequencer = await client.get_workflow_handle(
        sequencer_workflow_id(chain_id, wallet)
    ).fetch_history()
    print("wallet sequencer (s after first start):")
    scheduled: dict[int, tuple[str, float]] = {}
    updates = 0
    for event in sequencer.events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            updates += 1
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, _seconds(event, origin))
        elif event.HasField("activity_task_completed_event_attributes"):
            attributes = event.activity_task_completed_event_attributes
            name, at = scheduled[attributes.scheduled_event_id]
            print(f"  {name:24s} {at:5.2f} -> {_seconds(event, origin):5.2f}")
    print(f"  Updates accepted: {updates}\n")


async def measure(sizes: tuple[int, ...], rounds: int, profile: bool) -> list[Run]:
    with run_temporal(ui=False) as server, run_anvil(block_time=BLOCK_TIME) as chain:
        client = await Client.connect(server.target, data_converter=DATA_CONVERTER)
        w3 = await connect_rpc(chain.url)
        try:
            deployment = await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
            # Warm up: first workflow/activity registrations and RPC connections.
            await provision(client, w3, deployment, 1)
            runs = []
            for peers in sizes:
                for _ in range(rounds):
                    run = await provision(client, w3, deployment, peers, profile=profile)
                    print(render_row(run), flush=True)
                    runs.append(run)
            return runs
        finally:
            await w3.provider.disconnect()


HEADER = (
    "| peers | all READY s | median READY s | block times | txs | blocks with txs |\n"
    "|---:|---:|---:|---:|---:|---:|"
)


def render_row(run: Run) -> str:
    return (
        f"| {run.peers} | {run.seconds:.2f} | {run.median:.2f} | "
        f"{run.seconds / BLOCK_TIME:.1f} | {run.txs} | {run.blocks_with_txs} |"
    )


def section(runs: list[Run], command: str) -> str:
    today = datetime.date.today().isoformat()
    rows = "\n".join(render_row(run) for run in runs)
    return (
        "## Provisioning\n\n"
        "Time from the first `peer_connected` start to the last READY reaching the connector,\n"
        "N peers at once from one treasury wallet: Temporal dev server (in-memory), the node's\n"
        "workers in one Python process, `anvil --block-time 1`, fresh random partners. Each\n"
        "peer needs open + deposit (plus an approve while a batch still sees no allowance).\n"
        "Target (issue 4): all 100 READY within about two block times.\n\n"
        f"Command: `{command}` · machine `2-core` · {today}\n\n{HEADER}\n{rows}\n\n" + READING
    )


READING = """\
Reading (`--profile` shows the per-step timeline): 1 and 10 peers are READY in the first
block after their batch, as targeted. From 50 peers on the Python worker process is the
bottleneck, not the chain: the 100 first workflow tasks alone (sandboxed workflow
instances) take ~1.4 s, and each peer then costs 5 activities (read, submit, wait for
receipts, read, notify) and ~6 workflow tasks — DESIGN §9 measured ~3.4 s for 100
workflows with 6 trivial activities each on this machine, so the target of ~2 s is out of
reach for this workflow shape on 2 cores. The wallet sequencer batches whatever has
arrived ("blocks with txs": a few blocks carry all of them; no nonce errors, no gaps).
Fixed on the way (each with a test): one Update per submission hit Temporal's limit of 10
in-flight Updates per workflow and backed off (100 peers took 22 s; submissions from one
process now share a `submit_all` Update); web3's default session reconnected for every
request and asked `eth_chainId` before every `eth_call` (`activities/rpc.py`); concurrent
balance checks of one wallet now share one read (`activities/shared_read.py`).
Further cuts need fewer activities per peer (e.g. wait for receipts inside the submission,
re-read inside the wait) or the sequencer overlapping the next batch's signing with the
current broadcast; more worker processes help only with more cores. Figures for 50 and
100 peers move with other load on the machine (6 to 16 s seen for 100 while other test
suites ran); the table was taken on an otherwise idle machine.
"""


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    current = path.read_text()
    pattern = re.compile(r"^## Provisioning\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    args = parser.parse_args(argv)
    print(HEADER)
    runs = asyncio.run(measure(tuple(args.sizes), args.rounds, args.profile))
    if args.write:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        write_section(section(runs, command))
        print(f"updated {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
