"""Worker wiring: which workflows and bound activity methods poll which task queue.

`build_workers` is used both by the connector process (which hosts a worker by default) and
by `paychan worker`, which runs the same workers apart; several may run for one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.worker import Worker
from web3 import AsyncWeb3

from activities.chain import ChainActivities
from activities.connector import ConnectorActivities
from activities.sequencer import SequencerClientActivities
from activities.token_network import Deployment
from workflows import ids
from workflows.channel import ChannelWorkflow
from workflows.sequencer import WalletSequencer

# A killed worker's workflows move to another worker after this instead of the default 10 s.
STICKY_SCHEDULE_TO_START = timedelta(seconds=1)
# SIGTERM lets the running step (one sign or broadcast, a receipt poll) finish.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)


@dataclass(frozen=True)
class ChainContext:
    """What the chain activities of one node are given; they never build their own."""

    node_id: str
    web3: AsyncWeb3
    account: LocalAccount
    deployment: Deployment
    settle_timeout: int


def build_workers(
    client: Client,
    chain: ChainContext,
    connector: ConnectorActivities | None = None,
) -> list[Worker]:
    """The provisioning and wallet workers of a node, plus the connector's own when given."""
    activities = ChainActivities(chain.web3, chain.account, chain.deployment, chain.settle_timeout)
    submitter = SequencerClientActivities(
        client, chain.node_id, chain.deployment.chain_id, chain.account.address
    )
    common = {
        "sticky_queue_schedule_to_start_timeout": STICKY_SCHEDULE_TO_START,
        "graceful_shutdown_timeout": GRACEFUL_SHUTDOWN,
    }
    workers = [
        Worker(
            client,
            task_queue=ids.provisioning_task_queue(chain.node_id),
            workflows=[ChannelWorkflow],
            activities=[
                activities.read_chain_state,
                activities.wait_for_receipts,
                submitter.submit_transactions,
            ],
            # Receipt waits and sequencer submissions idle on I/O; many can share a process.
            max_concurrent_activities=1_000,
            **common,
        ),
        Worker(
            client,
            task_queue=ids.wallet_task_queue(chain.node_id),
            workflows=[WalletSequencer],
            activities=[
                activities.read_next_nonce,
                activities.sign_transactions,
                activities.broadcast_transactions,
                activities.fill_nonce_gaps,
            ],
            **common,
        ),
    ]
    if connector is not None:
        workers.append(connector_worker(client, chain.node_id, connector))
    return workers


def connector_worker(client: Client, node_id: str, connector: ConnectorActivities) -> Worker:
    return Worker(
        client,
        task_queue=ids.connector_task_queue(node_id),
        activities=[connector.mark_settlement_ready],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
