"""The connector's readiness side as a process of its own, for crash tests.

`python -m tests.chaos.connector_process NODE_ID TEMPORAL_ADDRESS` polls `connector-<nodeId>`
with the real `ConnectorActivities` over a real `ChannelRegistry` — what the connector process
runs to receive READY — and logs, as JSON lines on stderr, what reaches it
(`Payment channel ready`, from the activity itself). A test SIGKILLs it and starts another.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from activities.connector import ConnectorActivities
from connector.channels import ChannelRegistry
from connector.config import TemporalConfig
from connector.logs import configure_logging
from worker.run import connect_temporal, connector_worker

log = structlog.get_logger(__name__)


async def poll(node_id: str, temporal_address: str) -> None:
    client = await connect_temporal(TemporalConfig(address=temporal_address))
    worker = connector_worker(client, node_id, ConnectorActivities(ChannelRegistry()))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        log.info("CONNECTOR_POLLING", nodeId=node_id)
        await stop.wait()


if __name__ == "__main__":
    configure_logging("json", "info")
    asyncio.run(poll(sys.argv[1], sys.argv[2]))
