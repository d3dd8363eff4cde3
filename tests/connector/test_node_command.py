"""`paychan connector` as a process: exit 2 on bad config, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAYCHAN = [sys.executable, "-m", "connector.cli"]


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("nodeId: x\nbtpServerPort: 0\n")
    done = subprocess.run(
        [*PAYCHAN, "connector", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "paychan: config error: ilpAddress: Field required"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    env = {
        **os.environ,
        "PAYCHAN_DATA_DIR": str(tmp_path),
        "PAYCHAN_ENABLE_SETTLEMENT": "false",
        "PAYCHAN_LOG_FORMAT": "json",
        "PEER5_BTP_PORT": "0",
        "PEER5_HEALTH_PORT": "0",
        "PEER5_ADMIN_PORT": "0",
    }
    process = subprocess.Popen(
        [*PAYCHAN, "connector", "--config", "examples/peer5.yaml"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        events = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "the node exited before it was ready"
            events.append(json.loads(line))
            if events[-1]["event"] == "NODE_READY":
                break
        health = json.load(urllib.request.urlopen(events[-1]["health_url"] + "/health", timeout=5))
        assert (health["nodeId"], health["totalPeers"]) == ("peer5", 1)
        process.send_signal(signum)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    names = [json.loads(line)["event"] for line in rest.splitlines()]
    assert (
        names.index("BTP_SERVER_STOPPED")
        < names.index("LEDGER_CLOSED")
        < names.index("NODE_STOPPED")
    )
    assert (tmp_path / "peer5" / "ledger.sqlite3").exists()
