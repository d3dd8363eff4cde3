"""ConnectorActivities: what provisioning tells the connector process.

Registered only by the connector process of the node, on its own task queue
(`connector-<nodeId>`), so a worker running elsewhere still reaches the right connector.
"""

from __future__ import annotations

import structlog
from temporalio import activity

from connector.channels import ChannelRegistry
from workflows import ids
from workflows.messages import SettlementReady

log = structlog.get_logger(__name__)


class ConnectorActivities:
    def __init__(self, registry: ChannelRegistry) -> None:
        self._registry = registry

    @activity.defn(name=ids.MARK_SETTLEMENT_READY)
    async def mark_settlement_ready(self, ready: SettlementReady) -> None:
        """Record that the peer's channel is READY.

        Safe to retry: it sets the peer's view to the given channel and deposits, so a
        repeat leaves the same view; only the first one for a channel logs.
        """
        if self._registry.mark_ready(ready):
            log.info(
                "Payment channel ready",
                peerId=ready.peer_id,
                channelId=ready.channel_id,
                token=ready.token,
                ourDeposit=ready.our_deposit,
                theirDeposit=ready.their_deposit,
            )
