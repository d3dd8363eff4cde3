"""`paychan worker --config FILE`: the node's provisioning workers, apart from its connector.

Several may run for one node; Temporal spreads the work. SIGTERM lets the running step
finish (graceful shutdown) before the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

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
    chain = await chain_context_from_config(config)
    client = await connect_temporal(config.temporal)
    workers = build_workers(client, chain)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    log.info("WORKER_STARTED", nodeId=config.node_id, wallet=chain.account.address)
    await stop.wait()
    log.info("WORKER_STOPPING", nodeId=config.node_id)
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*runs, return_exceptions=True)
    await chain.web3.provider.disconnect()
