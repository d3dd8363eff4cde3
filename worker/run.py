"""Worker wiring: which workflows and bound activity methods poll which task queue.

`build_workers` is used both by the connector process (which hosts a worker by default) and
by `paychan worker`, which runs the same workers apart; several may run for one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.chain import ChainActivities
from activities.connector import ConnectorActivities
from activities.deployment import chain_id_of, read_deployment
from activities.rpc import connect_rpc
from activities.sequencer import SequencerClientActivities
from activities.token_network import Deployment
from connector.config import NodeConfig, SettlementConfig, TemporalConfig
from worker.data_converter import DATA_CONVERTER
from workflows import ids
from workflows.channel import ChannelWorkflow
from workflows.sequencer import WalletSequencer

# A killed worker's workflows move to another worker after this instead of the default 10 s.
STICKY_SCHEDULE_TO_START = timedelta(seconds=1)
# The sandbox imports a workflow's module afresh for every run, restricted: with 100 peers
# connecting at once that was a quarter of the worker's CPU (~0.7 s; without bytecode
# files, compiling workflows/channel.py each time). Our workflow modules hold no state and
# import only temporalio, the stdlib and modules already passed through, so they are passed
# through too; the sandbox stays on (restricted builtins, everything else isolated). The
# check this gives up (a wall-clock or random call in workflows/*.py) is kept by the replay
# tests, which run the recorded histories in the full default sandbox.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)
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
        "workflow_runner": WORKFLOW_RUNNER,
    }
    workers = [
        Worker(
            client,
            task_queue=ids.provisioning_task_queue(chain.node_id),
            workflows=[ChannelWorkflow],
            activities=[
                activities.read_chain_state,
                activities.read_channel,
                activities.sign_cooperative_settle,
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
        activities=[
            connector.mark_settlement_ready,
            connector.mark_channel_closing,
            connector.read_channel_claims,
            connector.request_cooperative_settle,
        ],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


class SettlementDisabled(RuntimeError):
    """The node has no `settlement` block with `enableSettlement: true`."""


async def connect_temporal(config: TemporalConfig) -> Client:
    return await Client.connect(
        config.address, namespace=config.namespace, data_converter=DATA_CONVERTER
    )


async def chain_context_from_config(config: NodeConfig) -> ChainContext:
    """Web3 client, treasury signer and deployment of a node, from its settlement block."""
    settlement = config.settlement
    if settlement is None or not settlement.enable_settlement:
        raise SettlementDisabled(f"node {config.node_id} has settlement disabled")
    assert settlement.rpc_url is not None and settlement.private_key is not None
    w3 = await connect_rpc(settlement.rpc_url)
    deployment = await _deployment(w3, settlement)
    account = Account.from_key(settlement.private_key.get_secret_value())
    return ChainContext(config.node_id, w3, account, deployment, settlement.settle_timeout)


async def _deployment(w3: AsyncWeb3, settlement: SettlementConfig) -> Deployment:
    if settlement.deployment_file is not None:
        return read_deployment(settlement.deployment_file)
    assert settlement.registry_address and settlement.token_address and settlement.rpc_url
    chain_id = settlement.chain_id or await chain_id_of(w3, settlement.rpc_url)
    token_network = settlement.token_network_address or await tn.get_token_network(
        w3, settlement.registry_address, settlement.token_address
    )
    if token_network is None:
        raise SettlementDisabled(
            f"registry {settlement.registry_address} has no TokenNetwork for token "
            f"{settlement.token_address}"
        )
    return Deployment(
        chain_id=chain_id,
        registry=settlement.registry_address,
        token=settlement.token_address,
        token_network=token_network,
        deployed_block=0,
    )
