"""What packet-load runs drive: `paychan connector` processes (their ledgers read from the
SQLite file, their memory from /proc), the 5-node line of `examples/`, and BTP senders that
fire bursts of concurrent Prepares and account for every answer.

The line is the five example configs as they ship, run with settlement disabled
(`PAYCHAN_ENABLE_SETTLEMENT=false`: no claims move balances, so a ledger must equal the
packets fulfilled through it exactly) and free ports from the environment. peer1's config
gains one inbound peer, the load sender (`loadgen`); packets are test payments to `g.peer5`
(`connector/services/local.py`), so peer5's receiver fulfils them and every node on the way
holds, commits and records them as it would any payment.

`check_line_conservation` states the invariant: for every link, what the upstream node owes
the downstream one equals what the downstream one is owed (their sum is 0), and both equal
the amount the sender saw fulfilled; nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import yaml

from connector.btp.client import BtpClient
from connector.btp.errors import BtpRefused
from connector.codec import ilp
from connector.codec.btp import ProtocolData
from connector.devstack import PROJECT_ROOT, free_port
from connector.services.local import make_test_prepare
from tests.chaos.node_process import PAYCHAN

EXAMPLES = PROJECT_ROOT / "examples"
LINE = ("peer1", "peer2", "peer3", "peer4", "peer5")
SENDER = "loadgen"
SENDER_TOKEN = "load-sender-token-for-peer1"
# What the sender may owe peer1: every round's fulfilled amounts accumulate there.
SENDER_CREDIT = 10**18
READY_TIMEOUT = 60.0
EXPIRY = timedelta(seconds=60)

Balances = dict[str, int]


class ConnectorProcess:
    """One `paychan connector --config FILE` child with its ledger file and health port."""

    def __init__(
        self,
        node_id: str,
        config: Path,
        env: dict[str, str] | None,
        ledger: Path,
        health_port: int,
    ) -> None:
        """`env` None: this process's environment."""
        self.node_id = node_id
        self.config = config
        self.env = env
        self.ledger = ledger
        self.health_url = f"http://127.0.0.1:{health_port}/health/ready"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log_file: Path) -> None:
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PAYCHAN), "connector", "--config", str(self.config)],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until /health/ready answers 200: listening, every outbound peer linked."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.health_url, timeout=1) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node_id} not ready within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM (flushes and closes the ledger), SIGKILL after 15 s; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM): resident now and its peak, in KiB."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def metrics(self) -> dict[str, Balances]:
        """The node's in-memory view from /metrics: `balance` and `pending` (credit held for
        unanswered Prepares) per peer. Gauges are floats, exact for these amounts (< 2**53)."""
        url = self.health_url.removesuffix("/health/ready") + "/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found: dict[str, Balances] = {"balance": {}, "pending": {}}
        for name, key in (
            ("paychan_balance", "balance"),
            ("paychan_balance_pending_incoming", "pending"),
        ):
            for peer, value in re.findall(
                rf'^{name}{{[^}}]*peer="([^"]+)"[^}}]*}} (\S+)$', text, re.M
            ):
                found[key][peer] = int(float(value))
        return found

    def balances(self) -> Balances:
        """Every peer's committed balance, from the ledger file (WAL: read while it runs)."""
        connection = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            rows = connection.execute("SELECT peer_id, balance FROM balances").fetchall()
        finally:
            connection.close()
        return {peer: int(balance) for peer, balance in rows}


def line_environment(work: Path) -> dict[str, str]:
    """The example configs' variables: free ports, data under `work`, settlement off."""
    env = {
        **os.environ,
        "PAYCHAN_DATA_DIR": str(work / "data"),
        "PAYCHAN_ENABLE_SETTLEMENT": "false",
        "PAYCHAN_LOG_FORMAT": "json",
        "LOADGEN_TOKEN": SENDER_TOKEN,
    }
    for node in LINE:
        prefix = node.upper()
        for port in ("BTP", "HEALTH", "ADMIN"):
            env[f"{prefix}_{port}_PORT"] = str(free_port())
    return env


def line_config(node_id: str, work: Path) -> Path:
    """The example config of `node_id`; peer1's with the load sender as one more peer (its
    token from the environment, as every token of the examples)."""
    example = EXAMPLES / f"{node_id}.yaml"
    if node_id != LINE[0]:
        return example
    config = yaml.safe_load(example.read_text())
    config["peers"].append(
        {"id": SENDER, "authToken": "${LOADGEN_TOKEN}", "creditLimit": SENDER_CREDIT}
    )
    path = work / f"{node_id}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class ExampleLine:
    nodes: list[ConnectorProcess]
    entry_url: str

    @classmethod
    @contextlib.contextmanager
    def running(cls, work: Path) -> Iterator[ExampleLine]:
        """The five nodes, started right to left (each dials its right neighbour), all
        ready; stopped with SIGTERM on exit."""
        env = line_environment(work)
        nodes = [
            ConnectorProcess(
                node,
                line_config(node, work),
                env,
                work / "data" / node / "ledger.sqlite3",
                int(env[f"{node.upper()}_HEALTH_PORT"]),
            )
            for node in LINE
        ]
        try:
            for node in reversed(nodes):
                node.start(work / f"{node.node_id}.log")
            for node in nodes:
                node.wait_ready()
            yield cls(nodes, f"ws://127.0.0.1:{env['PEER1_BTP_PORT']}")
        finally:
            for node in nodes:
                node.stop()

    def balances(self) -> dict[str, Balances]:
        return {node.node_id: node.balances() for node in self.nodes}


def check_quiescent(nodes: list[ConnectorProcess]) -> None:
    """With no packet in flight: no credit still held for any peer (every hold was committed
    or released), and each node's in-memory balances are what its ledger file says."""
    for node in nodes:
        seen = node.metrics()
        held = {peer: amount for peer, amount in seen["pending"].items() if amount}
        assert held == {}, f"{node.node_id} still holds {held}"
        on_disk = node.balances()
        in_memory = {peer: amount for peer, amount in seen["balance"].items()}
        assert in_memory == {peer: on_disk.get(peer, 0) for peer in in_memory}, (
            f"{node.node_id}: memory {in_memory}, file {on_disk}"
        )


def check_line_conservation(
    before: dict[str, Balances], after: dict[str, Balances], fulfilled: int
) -> None:
    """Every hop moved exactly `fulfilled` (fees are 0 in the examples): the sender owes
    peer1 that much more, each node owes its right neighbour that much more, each right
    neighbour is owed it, and no other balance moved."""

    def moved(node: str, peer: str) -> int:
        return after[node].get(peer, 0) - before[node].get(peer, 0)

    expected = {(LINE[0], SENDER): fulfilled}
    for left, right in pairwise(LINE):
        expected[(left, right)] = -fulfilled
        expected[(right, left)] = fulfilled
    actual = {
        (node, peer): moved(node, peer)
        for node in LINE
        for peer in set(after[node]) | set(before[node])
    }
    actual = {key: value for key, value in actual.items() if value != 0 or key in expected}
    assert actual == expected, f"balances moved {actual}, expected {expected}"


# --- senders -----------------------------------------------------------------------------


@dataclass
class Burst:
    """The answers to one burst of concurrent Prepares."""

    sent: int = 0
    fulfilled: int = 0
    fulfilled_amount: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    round_trips: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.round_trips)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

    def count(
        self, reply: ilp.Fulfill | ilp.Reject, prepare: ilp.Prepare, fulfillment: bytes
    ) -> None:
        """Tally a payment's final answer (a Fulfill must carry the fulfillment it was sent for)."""
        if isinstance(reply, ilp.Fulfill):
            assert reply.fulfillment == fulfillment, "a Fulfill that does not match"
            self.fulfilled += 1
            self.fulfilled_amount += prepare.amount
        else:
            self.rejects[str(reply.code)] += 1


class RefuseMessages:
    """A sender's handler: it takes no packets and no BTP messages."""

    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        return ilp.encode(ilp.Reject(ilp.ErrorCode.F02_UNREACHABLE, "", "sender only", b""))

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        raise BtpRefused("F00", "not supported")


@contextlib.asynccontextmanager
async def connected_client(client: BtpClient, timeout: float = 30.0) -> AsyncIterator[BtpClient]:
    """`client` started and authenticated; stopped on exit."""
    await client.start()
    try:
        async with asyncio.timeout(timeout):
            while client.link is None:
                await asyncio.sleep(0.02)
        yield client
    finally:
        await client.stop()


async def send_test_payments(
    client: BtpClient, destination: str, amounts: list[int], expiry: timedelta = EXPIRY
) -> Burst:
    """One Prepare per amount, all in flight at once: test payments to the node at
    `destination`, each answer checked (a Fulfill must carry the packet's fulfillment).
    The sender waits past `expiry`, so it never gives up on a packet a node still holds."""
    link = client.link
    if link is None:
        raise RuntimeError("sender link is down")
    expires = datetime.now(UTC) + expiry
    prepared = [make_test_prepare(destination, amount, expires) for amount in amounts]
    burst = Burst(sent=len(amounts))

    async def one(prepare: ilp.Prepare, fulfillment: bytes) -> None:
        started = time.perf_counter()
        reply = ilp.decode(await link.send_ilp(ilp.encode(prepare), expiry.total_seconds() + 5))
        burst.round_trips.append(time.perf_counter() - started)
        burst.count(reply, prepare, fulfillment)

    began = time.perf_counter()
    await asyncio.gather(*(one(prepare, fulfillment) for prepare, fulfillment in prepared))
    burst.seconds = time.perf_counter() - began
    return burst


def amounts_for(count: int, seed: int = 0) -> list[int]:
    """Distinct-looking amounts (1..997) so a lost or doubled packet shows in the sums."""
    return [1 + (seed + index * 7919) % 997 for index in range(count)]
