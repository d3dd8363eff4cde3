"""What the durable balance ledger costs a forwarded packet.

Each simulated packet does what the packet path does at one hop: `hold_incoming` on the
sender's account, then on Fulfill `await record_outgoing` (next hop) and
`await commit_incoming` (previous hop), both durable before the Fulfill would go upstream.
Run with N packets in flight (1: latency; 100: throughput, where one SQLite transaction
covers every change made in the same event-loop turn), for `synchronous` = normal and full.
For scale, the raw cost of one single-row commit per change is measured too.

    .venv/bin/python -m bench.ledger [--packets 20000]

Prints a markdown table for BENCHMARKS.md ("## Ledger"). Files go to a temporary directory
on the same disk as the system temp dir and are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from connector.balances import AccountLimits, BalanceLedger

LIMITS = {
    "upstream": AccountLimits(credit_limit=10**30),
    "downstream": AccountLimits(credit_limit=10**30),
}


async def forward_packets(path: Path, synchronous: str, packets: int, in_flight: int) -> dict:
    ledger = BalanceLedger.open(path, LIMITS, synchronous=synchronous)
    latencies: list[float] = []
    queue = iter(range(packets))

    async def lane() -> None:
        for _ in queue:
            started = time.perf_counter()
            ledger.hold_incoming("upstream", 1_000)
            await ledger.record_outgoing("downstream", 999)
            await ledger.commit_incoming("upstream", 1_000)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await ledger.close()
    latencies.sort()
    return {
        "packets_per_s": packets / elapsed,
        "cpu_us_per_packet": elapsed / packets * 1e6,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def raw_commit_us(path: Path, synchronous: str, commits: int) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
    connection.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
    upsert = "INSERT INTO t VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    started = time.perf_counter()
    for i in range(commits):
        connection.execute("BEGIN")
        connection.execute(upsert, ("peer", str(i)))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / commits * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    args = parser.parse_args()
    # Keep the ledger's open/close log lines out of the figures' output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    rows = []
    with tempfile.TemporaryDirectory(prefix="paychan-bench-ledger-") as directory:
        for synchronous in ("normal", "full"):
            raw = raw_commit_us(Path(directory) / f"raw-{synchronous}.sqlite3", synchronous, 2_000)
            for in_flight in (1, 100):
                path = Path(directory) / f"{synchronous}-{in_flight}.sqlite3"
                figures = asyncio.run(forward_packets(path, synchronous, args.packets, in_flight))
                rows.append((synchronous, in_flight, raw, figures))

    print(f"sqlite {sqlite3.sqlite_version}, {args.packets} packets per run")
    print()
    print(
        "| synchronous | in flight | packets/s | wall µs/packet | p50 µs | p99 µs | raw commit µs |"
    )
    print("|---|---|---|---|---|---|---|")
    for synchronous, in_flight, raw, f in rows:
        print(
            f"| {synchronous} | {in_flight} | {f['packets_per_s']:,.0f} "
            f"| {f['cpu_us_per_packet']:.1f} | {f['p50_us']:.0f} | {f['p99_us']:.0f} | {raw:.0f} |"
        )


if __name__ == "__main__":
    main()
