"""Time to all READY when three `paychan worker` processes share one node's provisioning,
with and without SIGKILLing one of them mid-way.

    .venv/bin/python bench/many_workers.py                  # print the table
    .venv/bin/python bench/many_workers.py --rounds 3 --write   # and update BENCHMARKS.md

A real Temporal dev server (in-memory) and a real anvil mining a block every second, started
here. Each run is a fresh node with a fresh treasury wallet (so one fresh wallet sequencer)
and `--peers` fresh random partners; its `--workers` worker processes are started first (not
timed), then every `peer_connected` is sent at once and the clock runs to the last READY
reaching the connector's registry. A kill (`tests/chaos/shared_wallet.py`, `KillPoint`)
SIGKILLs the worker that ran the wallet sequencer's latest activity and does not restart it.
Every run then checks the end state the chaos test asserts (one channel per pair, deposits at
target, a nonce stream without gaps) before its figures count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import re
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from connector.devstack import run_temporal
from tests.chaos.shared_wallet import (
    Chain,
    KillPoint,
    NonceStream,
    RunFigures,
    SharedWalletNode,
    block_time_chain,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/many_workers.py"
SECTION = "## Reliability — many workers"
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    figures: RunFigures
    stream: NonceStream


async def one_run(
    client: Client,
    address: str,
    chain: Chain,
    work: Path,
    peers: int,
    workers: int,
    kill: KillPoint | None,
) -> Run:
    async with AsyncExitStack() as stack:
        node = await SharedWalletNode.open(
            stack,
            client=client,
            temporal_address=address,
            chain=chain,
            directory=work,
            peers=peers,
            workers=workers,
        )
        await node.start_workers()
        figures = await node.provision(kill, timeout=READY_TIMEOUT)
        stream = await node.check()
    return Run(figures, stream)


async def connect(target: str, timeout: float = 30.0) -> Client:
    """The dev server opens its port before its frontend answers: retry until it does."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await Client.connect(target, data_converter=pydantic_data_converter)
            except RuntimeError:
                await asyncio.sleep(0.5)


async def measure(rounds: int, peers: int, workers: int) -> list[Run]:
    work = Path(tempfile.mkdtemp(prefix="bench-many-workers-"))
    runs = []
    with run_temporal(ui=False, log_file=work / "temporal.log") as server:
        client = await connect(server.target)
        async with block_time_chain(work) as chain:
            for _ in range(rounds):
                for kill in (None, *KillPoint):
                    run = await one_run(client, server.target, chain, work, peers, workers, kill)
                    print(render_row(run), flush=True)
                    runs.append(run)
    return runs


HEADER = (
    "| kill | all READY s | killed at s | READY at kill | txs (approve/open/deposit) "
    "| gap fills |\n|---|---:|---:|---:|---:|---:|"
)


def render_row(run: Run) -> str:
    figures, kinds = run.figures, run.stream.kinds
    killed = (
        (f"{figures.killed_after:.2f}", str(figures.ready_at_kill))
        if figures.kill is not None
        else ("", "")
    )
    txs = "/".join(str(kinds.get(kind, 0)) for kind in ("approve", "open", "deposit"))
    return (
        f"| {figures.kill or 'none'} | {figures.seconds_to_all_ready:.2f} | {killed[0]} | "
        f"{killed[1]} | {txs} | {run.stream.gap_fills} |"
    )


def summary(runs: list[Run]) -> str:
    lines = []
    for kill in (None, *KillPoint):
        times = [r.figures.seconds_to_all_ready for r in runs if r.figures.kill == kill]
        lines.append(
            f"- {kill or 'no kill'}: median {statistics.median(times):.2f} s, "
            f"worst {max(times):.2f} s over {len(times)} runs"
        )
    return "\n".join(lines)


def section(runs: list[Run], command: str, peers: int, workers: int, load: str) -> str:
    today = datetime.date.today().isoformat()
    rows = "\n".join(render_row(run) for run in runs)
    return (
        f"{SECTION}\n\n"
        f"{workers} `paychan worker` processes share the provisioning of {peers} peers of one\n"
        "node (one treasury wallet, one wallet sequencer): Temporal dev server (in-memory),\n"
        "anvil mining a block every second, fresh node, wallet and random partners per run.\n"
        "Time from the first `peer_connected` to the last READY reaching the connector. A\n"
        "kill SIGKILLs the worker that ran the sequencer's latest activity (not restarted):\n"
        "`first-broadcast` as the wallet's first batch is broadcast (no receipt yet),\n"
        "`first-ready` as the first peer turns READY. After every run the test's end state\n"
        "holds (`tests/chaos/test_many_workers.py`): all READY, pair counter 1 and deposit at\n"
        "target for every pair, nonces contiguous (latest == pending, every nonce a mined,\n"
        "successful tx provisioning asked for).\n\n"
        f"Command: `{command}` · machine `2-core` · {today} · load average before the run "
        f"{load}\n\n{HEADER}\n{rows}\n\n"
        f"{summary(runs)}\n\n" + READING
    )


READING = """\
Reading: no duplicate and no gap in any run — the sequencer's nonces are assigned in its
history, a retried submission from the killed worker's peers is answered from the
sequencer's memory of its request id, and the killed worker's signed-but-unsent batch (or
sent-but-unconfirmed one) is re-broadcast byte for byte by a survivor; no nonce was ever
refused, so no gap filler was sent. The kill costs 3 to 4 s, not correctness: the dead
worker's activities are retried after their 3 s heartbeat timeout, its sticky workflows
move after 1 s, and a workflow task it died holding is handed on after the 3 s workflow
task timeout. Fixed on the way: that last timeout was Temporal's default 10 s, so a peer
whose workflow task died with the worker waited 10 s (all READY 12.6 to 13.4 s after a
`first-ready` kill, against 7 to 9 s now); channel workflows and wallet sequencers now start
with `WORKFLOW_TASK_TIMEOUT` (`workflows/policies.py`, inherited across continue-as-new),
checked by the test. Every peer asks for its own unlimited approve while no read has seen
the allowance yet (the approve column): wasted gas, not a duplicate channel.
"""


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    current = path.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each kill point")
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(HEADER)
    runs = asyncio.run(measure(args.rounds, args.peers, args.workers))
    print(summary(runs))
    if args.write:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        write_section(section(runs, command, args.peers, args.workers, load))
        print(f"updated {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
