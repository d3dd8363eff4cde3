"""`paychan connector --config FILE`: run one node until SIGTERM or SIGINT.

With settlement enabled the node runs its channel provisioning (connector/provisioning.py)
and pays and is paid by claims (connector/settlement.py), assembled in `running_node`.

Exit codes: 2 for a bad config (one line naming the field, from `load_config_or_exit`),
1 when the node cannot start (a port in use, an unreadable ledger), 0 after a clean
shutdown: HTTP servers stopped, BTP links closed, ledger flushed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import structlog

from connector.config import NodeConfig, load_config_or_exit
from connector.cooperative_settle import CooperativeSettleService
from connector.logs import configure_logging
from connector.node import ConnectorNode
from connector.provisioning import ProvisioningRuntime
from connector.settlement import (
    DEFAULT_TIMING,
    SettlementChain,
    SettlementService,
    SettlementTiming,
    settlement_chain,
)
from worker.run import ChainContext

log = structlog.get_logger(__name__)


@dataclass
class RunningNode:
    node: ConnectorNode
    provisioning: ProvisioningRuntime | None
    settlement: SettlementService | None


@contextlib.asynccontextmanager
async def running_node(
    config: NodeConfig, settlement_timing: SettlementTiming = DEFAULT_TIMING
) -> AsyncIterator[RunningNode]:
    """The node with, when settlement is enabled, its provisioning and its claims.

    Order: settlement registers its claim handler before the node starts and opens its
    claim store in the ledger file once the node runs; provisioning connects after that
    (in the background), so its connector activities find the claims. Stopped in reverse.
    """
    provisioning = settlement = None
    if config.settlement is not None and config.settlement.enable_settlement:
        provisioning = ProvisioningRuntime(config)
    node = ConnectorNode(config, channels=provisioning.registry if provisioning else None)
    if provisioning is not None:
        # Every authenticated link, inbound or outbound, first connect or reconnect.
        node.events.peer_connected.append(lambda event: provisioning.peer_connected(event.peer_id))
        settlement = SettlementService(
            node, provisioning.registry, _chain_of(provisioning), settlement_timing
        )
        settlement.register()
        cooperative = CooperativeSettleService(
            node, provisioning.registry, _chain_context_of(provisioning)
        )
        cooperative.register()
        provisioning.cooperative = cooperative
    try:
        async with node:
            if settlement is not None and provisioning is not None:
                await settlement.start()
                node.claims = provisioning.claims = cooperative.claims = settlement.store
            if provisioning is not None:
                await provisioning.start()
            try:
                yield RunningNode(node, provisioning, settlement)
            finally:
                if settlement is not None:
                    await settlement.stop()
    finally:
        if provisioning is not None:
            await provisioning.stop()


def _chain_context_of(provisioning: ProvisioningRuntime) -> Callable[[], Awaitable[ChainContext]]:
    async def connected() -> ChainContext:
        await provisioning.wait_connected()
        return provisioning.chain

    return connected


def _chain_of(provisioning: ProvisioningRuntime) -> Callable[[], Awaitable[SettlementChain]]:
    async def connected() -> SettlementChain:
        await provisioning.wait_connected()
        return settlement_chain(provisioning.chain, provisioning.retry, provisioning.top_up)

    return connected


async def run_node(config: NodeConfig) -> None:
    """Start the node, wait for SIGTERM/SIGINT, stop it."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        async with running_node(config) as running:
            node = running.node
            log.info(
                "NODE_READY",
                node_id=config.node_id,
                btp_port=node.btp_port,
                health_url=node.health_url,
            )
            await stopping.wait()
            log.info("NODE_SHUTTING_DOWN", node_id=config.node_id)
    finally:
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
