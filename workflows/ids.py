"""Every name Temporal sees: workflow ids, task queues, activity, signal, query and
search-attribute names.

Declared only here, so the connector, the workers and the CLI agree on them, workflows call
activities by name without importing web3, and the Temporal UI reads the same everywhere.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

NODE_ID = SearchAttributeKey.for_keyword("NodeId")
PEER_ID = SearchAttributeKey.for_keyword("PeerId")
STAGE = SearchAttributeKey.for_keyword("Stage")
CHANNEL_ID = SearchAttributeKey.for_keyword("ChannelId")
SEARCH_ATTRIBUTE_KEYS = (NODE_ID, PEER_ID, STAGE, CHANNEL_ID)

CHANNEL_WORKFLOW = "ChannelWorkflow"
SEQUENCER_WORKFLOW = "WalletSequencer"

SIGNAL_PEER_CONNECTED = "peer_connected"
SIGNAL_RETRY = "retry"
SIGNAL_TOP_UP = "top_up"
SIGNAL_CLOSE = "close"
QUERY_STATUS = "status"
UPDATE_SUBMIT_ALL = "submit_all"

# Chain activities (ChainActivities), run by the node's provisioning worker.
READ_CHAIN_STATE = "read_chain_state"
SUBMIT_TRANSACTIONS = "submit_transactions"
WAIT_FOR_RECEIPTS = "wait_for_receipts"
READ_CHANNEL = "read_channel"
SIGN_COOPERATIVE_SETTLE = "sign_cooperative_settle"
# Wallet sequencer activities, run by the node's wallet worker.
READ_NEXT_NONCE = "read_next_nonce"
SIGN_TRANSACTIONS = "sign_transactions"
BROADCAST_TRANSACTIONS = "broadcast_transactions"
FILL_NONCE_GAPS = "fill_nonce_gaps"
# Connector activities, run only by the connector process of the node.
MARK_SETTLEMENT_READY = "mark_settlement_ready"
MARK_CHANNEL_CLOSING = "mark_channel_closing"
READ_CHANNEL_CLAIMS = "read_channel_claims"
REQUEST_COOPERATIVE_SETTLE = "request_cooperative_settle"


def channel_workflow_id(node_id: str, peer_id: str, token: str) -> str:
    return f"channel/{node_id}/{peer_id}/{token}"


def sequencer_workflow_id(chain_id: int, address: str) -> str:
    return f"wallet/{chain_id}/{address.lower()}"


def provisioning_task_queue(node_id: str) -> str:
    """Channel workflows and chain reads of `node_id`; any `paychan worker` of the node polls it."""
    return f"provisioning-{node_id}"


def wallet_task_queue(node_id: str) -> str:
    """The wallet sequencer and its signing activities, apart from the provisioning queue so a
    submission blocked on the sequencer can never take the slot the sequencer needs."""
    return f"wallet-{node_id}"


def connector_task_queue(node_id: str) -> str:
    """The queue only the connector process of `node_id` polls, so readiness reaches it."""
    return f"connector-{node_id}"
