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
import os
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
    # CPU seconds spent during the round by this process (the node: provisioner, workers,
    # connector activities) and by the Temporal dev server: on 2 cores their sum bounds
    # how fast a round can be.
    node_cpu: float
    temporal_cpu: float


async def fund_wallet(w3: AsyncWeb3, deployment: Deployment, peers: int) -> LocalAccount:
    wallet = Account.from_key(secrets.token_bytes(32))
    await w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**22)])
    minter = Account.from_key(ANVIL_KEYS[0])
    await tn.send_and_wait(w3, minter, tn.build_mint(deployment, wallet.address, peers * TARGET))
    return wallet


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def provision(
    client: Client,
    w3: AsyncWeb3,
    deployment: Deployment,
    peers: int,
    *,
    temporal_pid: int,
    profile: bool = False,
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
        cpu_before = (time.process_time(), process_cpu(temporal_pid))
        started = time.perf_counter()

        async def ready_after(peer_id: str) -> float:
            await registry.wait_ready(peer_id)
            return time.perf_counter() - started

        waits = [asyncio.ensure_future(ready_after(peer_id)) for peer_id in params]
        await asyncio.gather(*(provisioner.peer_connected(peer_id) for peer_id in params))
        times = await asyncio.wait_for(asyncio.gather(*waits), timeout=120)
        node_cpu = time.process_time() - cpu_before[0]
        temporal_cpu = process_cpu(temporal_pid) - cpu_before[1]
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
        node_cpu=node_cpu,
        temporal_cpu=temporal_cpu,
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
            pid = server.process.pid
            await provision(client, w3, deployment, 1, temporal_pid=pid)
            runs = []
            for peers in sizes:
                for _ in range(rounds):
                    run = await provision(
                        client, w3, deployment, peers, temporal_pid=pid, profile=profile
                    )
                    print(render_row(run), flush=True)
                    runs.append(run)
            return runs
        finally:
            await w3.provider.disconnect()


HEADER = (
    "| peers | all READY s | median READY s | block times | txs | blocks with txs "
    "| node CPU s | Temporal CPU s |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def render_row(run: Run) -> str:
    return (
        f"| {run.peers} | {run.seconds:.2f} | {run.median:.2f} | "
        f"{run.seconds / BLOCK_TIME:.1f} | {run.txs} | {run.blocks_with_txs} "
        f"| {run.node_cpu:.2f} | {run.temporal_cpu:.2f} |"
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
Reading (`--profile` shows the per-step timeline, the two CPU columns what the round cost the
node process and the Temporal dev server): 1, 10 and 50 peers are READY in the first block
after their batch. 100 peers are READY in the second block: the round starts just after a
block (the wallet's funding waited for one), and the last of the 100 batches reaches the
chain ~1.3-1.5 s after the first start, past the first block boundary, so ~2.5 block times
instead of the ~2 targeted. Before this round of work the same command gave 1.0, 1.25,
3.3-4.2 and 5.5-5.8 s (node ~5.4 s and Temporal ~4.0 s of CPU per 100 peers).

What changed, each measured on 100 peers, A/B in alternation (figures move with the other
suites running on this machine, so CPU seconds were compared as well as wall time):
- Per peer 3 activities and 4 workflow tasks instead of 7 and 7 (behind
  `workflow.patched("provisioning-fewer-round-trips")`; recorded histories replay as they
  ran): the balance read is a local activity (a marker in the workflow task that asks for
  it; -0.55 s, -0.6 s Temporal CPU), the receipt wait reads the pair once mined instead of a
  read activity after it, and READY starts the keeper's idle clock, so the keeper's first
  channel read (two activities) comes a check interval later instead of at once. The local
  read is bounded (2 attempts of 5 s, then the activity): a stopping worker waits for its
  local activities, and one retrying a dead RPC node for ever never stopped.
- The worker passes `workflows/*` through the sandbox: re-importing workflows/channel.py
  for every run (compiled from source, this environment writes no bytecode) took a quarter
  of the node's CPU (-0.6 to -0.9 s CPU, -0.5 s). The sandbox stays on; the determinism
  check this gives up for `workflows/*.py` is kept by the replay tests, which run every
  recorded history, and a fresh one of this path, in the full default sandbox.
- One pydantic TypeAdapter per type for the process (worker/data_converter.py): temporalio
  makes a payload converter per workflow run, and each built the schema of ChannelParams
  and of every activity result again (~0.4 s of node CPU in the profile).
- Stage upserts 3 per peer instead of 4 (a fresh run does not repeat the CHECKING_CONFIG its
  starter set): each is a visibility write, ~1 ms of Temporal CPU.
- Chain I/O as raw JSON-RPC batches: a balance read costs 4x less CPU than through web3, the
  shared wallet read 10x less; a sequencer batch of ~200 transactions is broadcast in one
  request (one by one, awaited on a busy event loop, it took 0.6-1.3 s); receipt waits
  follow one shared `eth_blockNumber` poll and look at their receipts at each new block,
  instead of every pending transaction polling every 100 ms.
- Measured and dropped: 20 or autoscaling task pollers instead of 5 (no change), and 10
  concurrent workflow tasks (slower, more CPU).
Why not ~2 s for 100: the round is CPU-bound on 2 cores. The node process spends ~1.9 s and
the Temporal dev server ~2.3 s of CPU per 100 peers, ~2.1 s of wall time even if both cores
were busy all along; the 100 first workflow tasks, and the 100 that follow the receipts
(all in the same block), each queue ~0.4-0.6 s in the worker. What is left is mostly
temporalio's per-task work (activation decoding, a sandbox call per payload) and the
server's per-event work. Going further needs fewer workflow tasks per peer, e.g. submitting
and waiting in one activity, which would leave the transaction hashes only in the wallet
sequencer's history (DESIGN §4: recorded in the channel's history before it waits; not
done), or more cores (`bench/many_workers.py`).
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
