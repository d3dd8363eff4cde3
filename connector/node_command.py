"""`paychan connector --config FILE`: run one node until SIGTERM or SIGINT.

Exit codes: 2 for a bad config (one line naming the field, from `load_config_or_exit`),
1 when the node cannot start (a port in use, an unreadable ledger), 0 after a clean
shutdown: HTTP servers stopped, BTP links closed, ledger flushed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog

from connector.config import NodeConfig, load_config_or_exit
from connector.logs import configure_logging
from connector.node import ConnectorNode
from connector.provisioning import ProvisioningRuntime

log = structlog.get_logger(__name__)


async def run_node(config: NodeConfig) -> None:
    """Start the node, wait for SIGTERM/SIGINT, stop it."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    provisioning = None
    if config.settlement is not None and config.settlement.enable_settlement:
        provisioning = ProvisioningRuntime(config)
        await provisioning.start()
    node = ConnectorNode(config, channels=provisioning.registry if provisioning else None)
    if provisioning is not None:
        # Every authenticated link, inbound or outbound, first connect or reconnect.
        node.events.peer_connected.append(lambda event: provisioning.peer_connected(event.peer_id))
    try:
        async with node:
            log.info(
                "NODE_READY",
                node_id=config.node_id,
                btp_port=node.btp_port,
                health_url=node.health_url,
            )
            await stopping.wait()
            log.info("NODE_SHUTTING_DOWN", node_id=config.node_id)
    finally:
        if provisioning is not None:
            await provisioning.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def connector_command(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    configure_logging(config.log_format, config.log_level)
    try:
        asyncio.run(run_node(config))
    except OSError as exc:
        log.error("NODE_START_FAILED", node_id=config.node_id, error=str(exc))
        return 1
    return 0
