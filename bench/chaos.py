"""Chaos soak: rounds of one SIGKILL each across every process, the invariants after each.

    .venv/bin/python bench/chaos.py --rounds 50 --seed 1           # print the figures
    .venv/bin/python bench/chaos.py --rounds 50 --seed 1 --write   # and update BENCHMARKS.md

The 5-node line (`paychan connector` processes, settlement on) plus 10 extra peers on peer3,
whose provisioning two `paychan worker` processes serve; a Temporal dev server on a SQLite
file; anvil mining a block a second. Each round SIGKILLs, at random (seeded), a worker, a
connector, the Temporal server or anvil and starts it again in place, while extra peers
connect, disconnect and are re-provisioned, claims settle and admin-API test payments flow;
then it checks the invariants. The engine and the invariants are
`tests/chaos/soak.py` and `tests/chaos/soak_invariants.py` (their docstrings say exactly what
is checked); `tests/chaos/test_chaos_short.py` runs a few rounds in `make test`.

Bounded in count (`--rounds`) and time (`--time-limit`: no new round starts after it). It
prints rounds run, faults injected by kind, invariant violations (must be 0), the worst time
to recover; exit code 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

from tests.chaos.soak import Fault, Soak, SoakReport, SoakTiming
from tests.chaos.soak_stack import EXTRA_PEERS, HUB, HUB_WORKERS, TARGET, soak_stack

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/chaos.py"
SECTION = "## Reliability — chaos soak"


def round_line(report, total: int) -> str:
    recovered = (
        f"{report.recovery_seconds:5.1f}s" if report.recovery_seconds is not None else "  NONE"
    )
    return (
        f"round {report.number:3d}/{total} {report.fault:9} {report.victim:14} "
        f"down {report.downtime:4.1f}s recovered {recovered} | payments {report.payments:3d} "
        f"({report.fulfilled} fulfilled) | violations {len(report.violations)} | "
        f"{report.seconds:5.1f}s | {' '.join(report.churn)}"
    )


def _seconds(value: float | None) -> str:
    return "not within bound" if value is None else f"{value:.1f} s"


def summary(report: SoakReport, elapsed: float) -> list[str]:
    faults = report.faults
    long = sum(1 for r in report.rounds if r.fault is Fault.TEMPORAL and r.downtime >= 10.0)
    by_kind = ", ".join(
        f"{kind} {faults.get(kind, 0)}" + (f" ({long} long)" if kind == "temporal" else "")
        for kind in (str(fault) for fault in Fault)
    )
    violations = report.violations
    distinct = sorted({str(v) for v in violations})
    worst = report.worst_recovery_by_fault()
    lines = [
        f"Rounds run: {len(report.rounds)} in {elapsed:.0f} s "
        f"(setup {report.setup_seconds:.0f} s, all READY at start {report.initial_ready_seconds:.1f} s)",
        f"Faults injected: {by_kind}",
        f"Invariant violations: {len(violations)}"
        + (f" ({len(distinct)} distinct)" if violations else ""),
        f"Worst time to recover: {_seconds(report.worst_recovery)} ("
        + ", ".join(f"{kind} {_seconds(seconds)}" for kind, seconds in worst.items())
        + ")",
        f"Payments: {report.payments} sent, {report.fulfilled} fulfilled, "
        f"{report.uncertain_payments} in flight through a killed connector "
        f"({report.link_ends_explained} link ends explained by them)",
        f"Claims accepted: {report.claims_accepted}; channels on-chain: {report.channels}; "
        f"deposits topped up: {report.topped_up_deposits}; channels closed and settled: "
        f"{report.closes_settled} of {report.closes_asked} asked",
    ]
    lines += [f"  VIOLATION {line}" for line in distinct[:50]]
    return lines


def recovery_table(report: SoakReport) -> str:
    rows = [
        "| fault | rounds | downtime s | recovery median s | recovery worst s |",
        "|---|---:|---:|---:|---:|",
    ]
    for fault in Fault:
        rounds = [r for r in report.rounds if r.fault is fault]
        if not rounds:
            continue
        times = [r.recovery_seconds for r in rounds if r.recovery_seconds is not None]
        downs = [r.downtime for r in rounds]
        median = f"{statistics.median(times):.1f}" if times else "-"
        worst = f"{max(times):.1f}" if len(times) == len(rounds) else "not within bound"
        rows.append(
            f"| {fault} | {len(rounds)} | {min(downs):.1f}-{max(downs):.1f} | {median} | {worst} |"
        )
    return "\n".join(rows)


def section(report: SoakReport, command: str, elapsed: float, load: str) -> str:
    today = datetime.date.today().isoformat()
    figures = "\n".join(f"- {line}" for line in summary(report, elapsed))
    return f"""{SECTION}

The 5-node line (`paychan connector` processes, settlement on, claims every 1,000,000) plus
{EXTRA_PEERS} extra peers on {HUB} (lightweight BTP peers with wallets of their own,
`tests/chaos/extra_peer.py`: {HUB} provisions a real channel to each and pays them by claims),
{HUB_WORKERS} `paychan worker` processes serving {HUB} (`temporal.runWorker: false`), the
Temporal dev server on a SQLite file, anvil with `--block-time 1`. Each round SIGKILLs, at
random (seeded), one hub worker, one connector, the Temporal server (restarted on the same
file and port; a third of them stay down 12-16 s, past the clients' own retries) or anvil,
and starts it again after a random downtime, while extra peers connect for the first time,
are cancelled and re-provisioned, come and go, have their channel closed by the hub's keeper
(unilateral close, 40-block settle window, settle; a new channel once settled), and 3 lanes
of admin-API test payments
(50,000-250,000 each, any node to any node or extra peer) flow for 6 s. Recovery: from
starting the victim again (its own start-up included) until every process answers and every
connected peer is READY both in its node's /health and in its running workflow (bound 90 s).
Then the invariants (`tests/chaos/soak_invariants.py`): one channel per pair (pair counter
and `ChannelOpened` events 1, channel open), deposits `target <= deposit <= target + our
latest claim` (exactly the target of {TARGET:,} until claims use half of it, then top-ups
restore the target remaining — never more), every connected peer READY, per node and peer
`balance = packets fulfilled across the link + claims acknowledged - claims received`
(balances from /admin/balances equal to the ledger file, claims from the same file in one
transaction; a payment not seen fulfilled while a connector on its path was killed may count
at one end of a link only, each at most once), no claim accepted twice (credited amounts sum
to the latest claim; every acknowledged claim stored by the payee; none above the deposit).

anvil is killed after its mined chain is saved (`anvil_dumpState` into its `--state` file,
mining paused): a crashed RPC node does not roll its chain back, it loses its mempool, and
that is what a restart from the file gives (transactions broadcast but not mined are gone).
`--state` alone dumps only on a clean exit, so a plain SIGKILL would rewind the chain by every
block since the last dump: a deep reorg of receipts the workflows already acted on, outside
the system's chain model (one receipt is final), so not injected.

Command: `{command}` · machine `2-core` · {today} · Python {platform.python_version()} · load average before the run {load}

{figures}

{recovery_table(report)}

Found and fixed by the soak (each with its test): a transaction lost with anvil's mempool
left its provisioning in OPENING for good, and every later transaction of that wallet queued
behind its nonce (the receipt wait now broadcasts the recorded bytes again when the node no
longer knows the transaction); a peer that connected while Temporal was down for longer than
the client's ~10 s of retries was never provisioned (the signal is now retried until taken);
a `paychan worker` (re)started while Temporal was down exited with code 1, leaving its node a
worker short for good (it now waits for Temporal).
"""


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    current = path.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


async def run(rounds: int, seed: int, time_limit: float, workdir: Path) -> tuple[SoakReport, float]:
    began = time.monotonic()
    print(f"chaos soak: {rounds} rounds, seed {seed}; processes' logs in {workdir / 'logs'}")
    # SIGTERM / SIGINT stop the soak between two steps; every process it started is stopped.
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    async with soak_stack(workdir) as stack:
        soak = Soak(stack, seed, SoakTiming())
        try:
            await soak.start()
            print(
                f"stack up in {stack.setup_seconds:.1f}s, every link READY after "
                f"{soak.report.initial_ready_seconds:.1f}s",
                flush=True,
            )
            for number in range(1, rounds + 1):
                if time.monotonic() - began > time_limit:
                    print(f"time limit of {time_limit:.0f}s reached: no new round", flush=True)
                    break
                report = await soak.round(number)
                print(round_line(report, rounds), flush=True)
                for violation in report.violations:
                    print(f"    VIOLATION {violation}", flush=True)
        except asyncio.CancelledError:
            print("interrupted: stopping every process", flush=True)
    return soak.report, time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds, one fault each")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--time-limit", type=float, default=1500.0, help="seconds after which no round starts"
    )
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    report, elapsed = asyncio.run(run(args.rounds, args.seed, args.time_limit, workdir))
    for line in summary(report, elapsed):
        print(line)
    print(recovery_table(report))
    if args.write:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        write_section(section(report, command, elapsed, load))
        print(f"updated {BENCHMARKS}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
