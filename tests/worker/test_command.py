"""`paychan worker` started while the Temporal server is down waits for it and then polls;
SIGTERM ends the wait cleanly (found by the chaos soak: a worker restarted during a Temporal
restart exited with code 1 and the node had one worker less for good)."""

from __future__ import annotations

import asyncio
import signal
from contextlib import ExitStack
from pathlib import Path

import pytest

from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.devstack import free_port, run_temporal
from tests.chaos.node_process import NodeProcess, worker_process, write_node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def waiting_worker(tmp_path: Path, anvil, deployment: Deployment, name: str) -> NodeProcess:
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    config = write_node_config(
        tmp_path / f"{name}.yaml",
        node_id=name,
        rpc_url=anvil.url,
        deployment_file=deployment_file,
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there yet
        settle_timeout=40,
    )
    return worker_process(config, anvil.keys[9], tmp_path / f"{name}.log")


async def waiting_for_temporal(worker: NodeProcess) -> asyncio.Task[float]:
    """`worker.start()` under way, once the worker logged that Temporal does not answer."""
    starting = asyncio.create_task(worker.start())
    while worker.starts == 0:
        await asyncio.sleep(0.02)
    await worker.wait_for(lambda r: r.get("event") == "TEMPORAL_UNAVAILABLE", timeout=30)
    return starting


async def test_a_worker_started_while_temporal_is_down_polls_once_it_is_up(
    tmp_path: Path, anvil, deployment: Deployment
) -> None:
    worker = waiting_worker(tmp_path, anvil, deployment, "late")
    starting = await waiting_for_temporal(worker)
    try:
        address = next(r["address"] for r in worker.records if "address" in r)
        port = int(address.rsplit(":", 1)[1])
        with ExitStack() as services:
            services.enter_context(run_temporal(port=port, ui=False))
            await asyncio.wait_for(starting, 60)  # WORKER_STARTED
            await worker.stop()
        assert worker._process is not None and worker._process.returncode == 0
    finally:
        starting.cancel()
        await worker.kill()


async def test_sigterm_ends_the_wait_for_temporal(
    tmp_path: Path, anvil, deployment: Deployment
) -> None:
    worker = waiting_worker(tmp_path, anvil, deployment, "never")
    starting = await waiting_for_temporal(worker)
    try:
        process = worker._process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await worker.kill()
