"""`paychan demo` driven headless: every link READY on both ends before the first packet,
100 payments peer1 -> peer5 fulfilled, and nothing it started is left running."""

from __future__ import annotations

import os
from pathlib import Path

from connector.demo import LINKS, run_demo


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


async def test_demo_reaches_ready_then_payments_flow_then_stops_everything(
    tmp_path: Path,
) -> None:
    before = live_children()
    lines: list[str] = []
    result = await run_demo(tmp_path, payments=100, fixed_ports=False, out=lines.append)
    assert result.fulfilled == 100 and result.rejected == 0
    ready_at = next(i for i, line in enumerate(lines) if "READY on both ends" in line)
    first_payment = next(i for i, line in enumerate(lines) if line.startswith("Sent "))
    assert ready_at < first_payment
    assert f"All {len(LINKS)} links READY" in lines[ready_at]
    # Exactly one channel per pair on-chain, both deposits at the examples' target
    # (initialDepositMultiplier 10 x settlementThreshold 1,000,000).
    assert [link.channels_opened for link in result.on_chain] == [1] * len(LINKS)
    for link in result.on_chain:
        assert link.left_deposit == link.right_deposit == 10 * 1_000_000
    assert live_children() <= before
