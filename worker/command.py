"""`paychan worker --config FILE`: the node's provisioning workers, apart from its connector.

Several may run for one node; Temporal spreads the work. SIGTERM lets the running step
finish (graceful shutdown) before the process exits. Started while the Temporal server is
down, it waits for it (capped backoff) rather than exiting; SIGTERM ends the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import structlog
from temporalio.client import Client

from activities.deployment import DeploymentError
from connector.config import NodeConfig, load_config_or_exit
from connector.logs import configure_logging
from worker.run import (
    SettlementDisabled,
    build_workers,
    chain_context_from_config,
    connect_temporal,
)

log = structlog.get_logger(__name__)

# Backoff between attempts to reach a Temporal server that is down (as the connector's).
CONNECT_RETRY_INITIAL = 0.5
CONNECT_RETRY_MAX = 30.0


def worker_command(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    configure_logging(config.log_format, config.log_level)
    try:
        asyncio.run(_run(config))
    except (SettlementDisabled, DeploymentError) as err:
        print(f"paychan worker: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        print(f"paychan worker: {err}", file=sys.stderr)
        return 1
    return 0


async def _run(config: NodeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    chain = await chain_context_from_config(config)
    client = await _connect_temporal(config, stop)
    if client is None:
        await chain.web3.provider.disconnect()
        return
    workers = build_workers(client, chain)
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    log.info("WORKER_STARTED", nodeId=config.node_id, wallet=chain.account.address)
    await stop.wait()
    log.info("WORKER_STOPPING", nodeId=config.node_id)
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*runs, return_exceptions=True)
    await chain.web3.provider.disconnect()


async def _connect_temporal(config: NodeConfig, stop: asyncio.Event) -> Client | None:
    """The Temporal client, once the server answers; None when stopped first. A worker
    (re)started while Temporal is down (restarting, upgraded) waits for it, as the connector
    does, instead of exiting."""
    delay = CONNECT_RETRY_INITIAL
    while not stop.is_set():
        try:
            return await connect_temporal(config.temporal)
        except RuntimeError as err:
            log.warning(
                "TEMPORAL_UNAVAILABLE",
                nodeId=config.node_id,
                address=config.temporal.address,
                error=str(err),
                retryInSeconds=delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, CONNECT_RETRY_MAX)
    return None
