"""`paychan demo` driven headless: every link READY on both ends before the first packet,
100 payments peer1 -> peer5 fulfilled, a claim exchanged on every link, /metrics carrying
the packet, hop, balance, provisioning and claim series, and nothing it started left
running; and `paychan demo` as a process stops everything on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable
from itertools import pairwise
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from connector.demo import LINKS, SETTLEMENT_THRESHOLD, run_demo

ROOT = Path(__file__).resolve().parents[2]


def live_children() -> set[int]:
    """Pids whose parent is this process and that have not been reaped."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def processes_using(workdir: Path, ports: Collection[int] = ()) -> list[str]:
    """Live processes whose command line or working directory is inside `workdir`, or whose
    command line names one of `ports` (`--port N`, `--ui-port N`: anvil and the Temporal dev
    server, which run neither inside the workdir nor from it)."""
    port_args = {str(port) for port in ports}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmdline = " ".join(args)
        on_port = any(
            option.endswith("port") and value in port_args for option, value in pairwise(args)
        )
        if state != "Z" and (str(workdir) in cmdline or cwd.startswith(str(workdir)) or on_port):
            found.append(f"{entry.name}: {cmdline}")
    return found


def service_ports(lines: Iterable[str]) -> set[int]:
    """The Temporal (gRPC and UI) and anvil ports the demo announced."""
    return {
        int(port)
        for line in lines
        if line.startswith("Temporal ")
        for port in re.findall(r"127\.0\.0\.1:(\d+)", line)
    }


def samples(path: Path, name: str, **labels: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def value(path: Path, name: str, **labels: str) -> float:
    found = samples(path, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0].value


async def test_demo_reaches_ready_then_payments_flow_then_stops_everything(
    tmp_path: Path,
) -> None:
    before = live_children()
    lines: list[str] = []
    running: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("Sending "):  # everything the demo starts is up by now
            running.extend(processes_using(tmp_path, service_ports(lines)))

    result = await run_demo(tmp_path, payments=100, fixed_ports=False, out=out)
    assert result.fulfilled == 100 and result.rejected == 0
    ready_at = next(i for i, line in enumerate(lines) if "READY on both ends" in line)
    first_payment = next(i for i, line in enumerate(lines) if line.startswith("Sending "))
    assert ready_at < first_payment
    assert f"All {len(LINKS)} links READY" in lines[ready_at]
    # The UI, each node's /health and /metrics are announced before anything else happens.
    assert lines[1].startswith("Temporal UI  http://127.0.0.1:")
    for node in ("peer1", "peer5"):
        assert any(
            line.startswith(node) and "/health" in line and "/metrics" in line for line in lines
        )
    assert any(line.startswith("[") and "link ends | payments" in line for line in lines)
    # Exactly one channel per pair on-chain, both deposits at the target
    # (initialDepositMultiplier 10 x settlementThreshold).
    assert [link.channels_opened for link in result.on_chain] == [1] * len(LINKS)
    for link in result.on_chain:
        assert link.left_deposit == link.right_deposit == 10 * SETTLEMENT_THRESHOLD
    # 5,000,000 over every link, threshold 1,000,000: each link settled by claims.
    for link in result.claims:
        assert link.received_nonce and link.received_nonce >= 1, link
        assert link.sent_nonce and link.sent_nonce >= link.received_nonce
        assert link.received_amount and link.received_amount >= SETTLEMENT_THRESHOLD

    # A middle node's /metrics after the traffic, read with the Prometheus text parser.
    peer2 = result.metrics["peer2"]
    from_peer1 = {"node": "peer2", "origin": "peer"}
    assert value(peer2, "paychan_packets_total", **from_peer1, result="fulfilled", code="") == 100
    assert value(peer2, "paychan_hop_duration_seconds_count", node="peer2", peer="peer3") == 100
    assert samples(peer2, "paychan_hop_duration_seconds_bucket", node="peer2", peer="peer3")
    # The claims peer1 sent settle what it owed: the ledger balance is what is left over.
    assert value(peer2, "paychan_balance", node="peer2", peer="peer1") < 5_000_000
    assert value(peer2, "paychan_claims_received_total", node="peer2", peer="peer1") >= 1
    assert value(peer2, "paychan_claims_sent_total", node="peer2", peer="peer3") >= 1
    deposit = {"node": "peer2", "peer": "peer3"}
    assert value(peer2, "paychan_channel_deposit", **deposit, side="ours") == (
        10 * SETTLEMENT_THRESHOLD
    )
    assert value(peer2, "paychan_channel_stage", **deposit, stage="READY") == 1
    assert value(peer2, "paychan_peer_connected", **deposit) == 1
    assert value(peer2, "paychan_provisioning_to_ready_seconds_count", node="peer2") == 2
    assert samples(peer2, "paychan_provisioning_stage_duration_seconds_count", node="peer2")
    assert value(peer2, "paychan_provisioning_failures_total", node="peer2") == 0
    assert live_children() <= before
    # Seen while it ran: anvil, the Temporal dev server and the five connectors; none is left.
    assert sum("anvil" in process for process in running) == 1, running
    assert sum("server start-dev" in process for process in running) == 1, running
    assert sum("connector.cli connector" in process for process in running) == 5, running
    assert processes_using(tmp_path, service_ports(lines)) == []


def test_ctrl_c_while_starting_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "demo", "--workdir", str(workdir), "--any-ports"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        # Once the URLs are out, Temporal, anvil and the five connectors are all starting.
        deadline = time.monotonic() + 60
        output = []
        while not any(line.startswith("peer5 ") for line in output):
            assert time.monotonic() < deadline, "".join(output)
            line = process.stdout.readline()
            assert line, "demo exited early:\n" + "".join(output)
            output.append(line)
        ports = service_ports(output)
        assert processes_using(workdir, ports), "nothing running inside the workdir yet"
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=45)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(output) + rest
    assert "stopped; every process it started has exited" in rest
    assert processes_using(workdir, ports) == []
