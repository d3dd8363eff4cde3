"""Every name Temporal sees: workflow ids, task queues, search-attribute keys.

Built or declared only here, so the connector, the worker and the CLI agree on them and the
Temporal UI reads the same everywhere.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

NODE_ID = SearchAttributeKey.for_keyword("NodeId")
PEER_ID = SearchAttributeKey.for_keyword("PeerId")
STAGE = SearchAttributeKey.for_keyword("Stage")
CHANNEL_ID = SearchAttributeKey.for_keyword("ChannelId")
SEARCH_ATTRIBUTE_KEYS = (NODE_ID, PEER_ID, STAGE, CHANNEL_ID)

# Chain work from any connector of this deployment; `paychan worker` processes poll it.
PROVISIONING_TASK_QUEUE = "paychan-provisioning"


def channel_workflow_id(node_id: str, peer_id: str, token: str) -> str:
    return f"channel/{node_id}/{peer_id}/{token}"


def connector_task_queue(node_id: str) -> str:
    """The queue only the connector process of `node_id` polls, so readiness reaches it."""
    return f"connector-{node_id}"
