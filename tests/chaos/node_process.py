"""NodeProcess: one real process of a node (`paychan worker --config FILE`, or the connector's
readiness poller), started, awaited until it polls Temporal, and SIGKILLed when a crash test
chooses. Its JSON log lines are kept, so a test can wait for what reached the process.

The treasury key reaches a worker only through the environment variable its config names
(`privateKeyEnv`), never through the YAML, a command line or a log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from connector.devstack import PROJECT_ROOT

PAYCHAN = Path(sysconfig.get_path("scripts")) / "paychan"
KEY_ENV = "CHAOS_TREASURY_KEY"
STARTUP_TIMEOUT = 30.0

Record = dict[str, Any]


def write_node_config(
    path: Path,
    *,
    node_id: str,
    rpc_url: str,
    deployment_file: Path,
    temporal_address: str,
    settle_timeout: int,
) -> Path:
    """A node YAML with settlement enabled, as an operator writes it for `paychan worker`."""
    config = {
        "nodeId": node_id,
        "ilpAddress": f"test.{node_id}",
        "btpServerPort": 0,
        "settlement": {
            "enableSettlement": True,
            "rpcUrl": rpc_url,
            "deploymentFile": str(deployment_file),
            "privateKeyEnv": KEY_ENV,
            "settleTimeout": settle_timeout,
        },
        "temporal": {"address": temporal_address, "runWorker": False},
        "logFormat": "json",
        "logLevel": "info",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def worker_process(config: Path, private_key: str, log_file: Path) -> NodeProcess:
    """`paychan worker --config FILE` with the treasury key in its environment."""
    return NodeProcess(
        [str(PAYCHAN), "worker", "--config", str(config)],
        started_event="WORKER_STARTED",
        log_file=log_file,
        env={KEY_ENV: private_key},
    )


def connector_process(node_id: str, temporal_address: str, log_file: Path) -> NodeProcess:
    """The connector's readiness side (`tests/chaos/connector_process.py`)."""
    return NodeProcess(
        [sys.executable, "-m", "tests.chaos.connector_process", node_id, temporal_address],
        started_event="CONNECTOR_POLLING",
        log_file=log_file,
    )


class NodeProcess:
    """A child process; `start()` may be called again after `kill()`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        started_event: str,
        log_file: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self._argv = list(argv)
        self._started_event = started_event
        self._env = {**os.environ, **(env or {})}
        self._log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._logged = asyncio.Condition()
        self.records: list[Record] = []
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> float:
        """Spawn the process; return the seconds until it logged that it polls."""
        assert self._process is None or self._process.returncode is not None
        began = time.monotonic()
        seen = len(self.records)
        self._process = await asyncio.create_subprocess_exec(
            *self._argv,
            cwd=PROJECT_ROOT,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.starts += 1
        self._reader = asyncio.create_task(self._read_log(self._process))
        try:
            await self.wait_for(
                lambda r: r.get("event") == self._started_event,
                after=seen,
                timeout=STARTUP_TIMEOUT,
            )
        except (TimeoutError, EOFError) as err:
            await self.kill()
            raise RuntimeError(f"{self._argv[:3]} did not start; see {self._log_file}") from err
        return time.monotonic() - began

    async def wait_for(
        self, matches: Callable[[Record], bool], *, after: int = 0, timeout: float
    ) -> Record:
        """The first log record from index `after` on that `matches`; EOFError if the
        process exits without logging one."""
        async with asyncio.timeout(timeout), self._logged:
            while True:
                for record in self.records[after:]:
                    if matches(record):
                        return record
                after = len(self.records)
                if self._reader is None or self._reader.done():
                    raise EOFError(f"{self._argv[:3]} exited")
                await self._logged.wait()

    async def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no last heartbeat, no completion sent."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        """SIGTERM (the graceful path), then SIGKILL if it does not exit."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        self.terminate()
        try:
            await self.exit_code(timeout=15)
        except TimeoutError:
            await self.kill()

    def terminate(self) -> None:
        """SIGTERM, without waiting: the process finishes its running step, then exits."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    async def exit_code(self, *, timeout: float) -> int:
        """Once the process has exited (its log read to the end)."""
        assert self._process is not None
        code = await asyncio.wait_for(self._process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def _read_log(self, process: asyncio.subprocess.Process) -> None:
        # Drained continuously, or a chatty process would block on a full pipe.
        assert process.stderr is not None
        try:
            with self._log_file.open("ab") as log:
                log.write(f"--- start {self.starts} pid {process.pid}\n".encode())
                async for line in process.stderr:
                    log.write(line)
                    record = _record_of(line)
                    if record is not None:
                        async with self._logged:
                            self.records.append(record)
                            self._logged.notify_all()
        finally:
            async with self._logged:
                self._logged.notify_all()


def _record_of(line: bytes) -> Record | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
