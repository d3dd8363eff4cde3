"""CrashLink: one link whose node A runs its provisioning in a real `paychan worker`
subprocess behind an RpcGate (the side a crash test kills), and whose node B runs in-process.

A's connector side (the `connector-<A>` poller with its ChannelRegistry) runs in the test
process unless a test replaces it; the end state every crash test asserts is in
`assert_one_channel_ready`.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.connector import ConnectorActivities
from activities.token_network import Deployment, contract_abi
from connector.channels import ChannelProvisioner, ChannelRegistry
from tests.chaos.node_process import NodeProcess, worker_process, write_node_config
from tests.chaos.rpc_gate import RpcGate
from tests.chaos.workflow_history import submitted_intent_count
from tests.integration.provisioning_node import SETTLE_TIMEOUT, TARGET, TOKEN, Node
from worker.run import connector_worker
from workflows import ids
from workflows.messages import ChannelParams, ChannelStatus

CHANNEL_OPENED = keccak(text="ChannelOpened(bytes32,address,address,uint256)")


@dataclass
class CrashLink:
    a_id: str
    a_account: LocalAccount
    b: Node
    gate: RpcGate
    worker: NodeProcess
    registry: ChannelRegistry
    provisioner: ChannelProvisioner
    client: Client
    deployment: Deployment
    nonces_before: dict[str, int]

    @classmethod
    async def open(
        cls,
        stack: AsyncExitStack,
        *,
        client: Client,
        temporal_address: str,
        rpc_url: str,
        w3: AsyncWeb3,
        deployment: Deployment,
        deployment_file: Path,
        a_id: str,
        a_account: LocalAccount,
        b: Node,
        directory: Path,
        a_connector: bool = True,
    ) -> CrashLink:
        """Gate and worker of A (not started), A's connector poller, B's in-process workers."""
        gate = RpcGate(rpc_url)
        await gate.start()
        stack.push_async_callback(gate.close)
        config = write_node_config(
            directory / f"{a_id}.yaml",
            node_id=a_id,
            rpc_url=gate.url,
            deployment_file=deployment_file,
            temporal_address=temporal_address,
            settle_timeout=SETTLE_TIMEOUT,
        )
        worker = worker_process(config, a_account.key.hex(), directory / f"{a_id}.log")
        stack.push_async_callback(worker.kill)
        registry = ChannelRegistry()
        if a_connector:
            await stack.enter_async_context(
                connector_worker(client, a_id, ConnectorActivities(registry))
            )
        await b.start(stack, w3, deployment, {a_id: a_account.address})
        provisioner = ChannelProvisioner(
            client,
            registry,
            {
                b.node_id: ChannelParams(
                    node_id=a_id,
                    peer_id=b.node_id,
                    token=TOKEN,
                    chain_id=deployment.chain_id,
                    token_network=deployment.token_network,
                    our_address=a_account.address,
                    peer_address=b.account.address,
                    deposit_target=TARGET,
                    funds_recheck_seconds=1.0,
                )
            },
        )
        nonces = {
            account.address: await w3.eth.get_transaction_count(account.address)
            for account in (a_account, b.account)
        }
        return cls(
            a_id, a_account, b, gate, worker, registry, provisioner, client, deployment, nonces
        )

    @property
    def a_workflow_id(self) -> str:
        return ids.channel_workflow_id(self.a_id, self.b.node_id, TOKEN)

    @property
    def a_wallet_id(self) -> str:
        return ids.sequencer_workflow_id(self.deployment.chain_id, self.a_account.address)

    async def a_stage(self) -> str | None:
        """A's stage from its search attribute: answered by the server, so it works while
        A has no worker (a query would wait for one)."""
        description = await self.client.get_workflow_handle(self.a_workflow_id).describe()
        return description.typed_search_attributes.get(ids.STAGE)

    async def a_status(self) -> ChannelStatus:
        handle = self.client.get_workflow_handle(self.a_workflow_id)
        return await handle.query(ids.QUERY_STATUS, result_type=ChannelStatus)


async def opened_channels(w3: AsyncWeb3, deployment: Deployment, a: str, b: str) -> list[str]:
    """Ids of every `ChannelOpened` between `a` and `b` the TokenNetwork ever emitted."""
    logs = await w3.eth.get_logs(
        {
            "address": deployment.token_network,
            "fromBlock": deployment.deployed_block,
            "toBlock": "latest",
            "topics": ["0x" + CHANNEL_OPENED.hex()],
        }
    )
    codec = contract_abi("TokenNetwork")
    events = [codec.decode_log(log["address"], log["topics"], log["data"]) for log in logs]
    return [
        event.args["channelId"]
        for event in events
        if event is not None and {event.args["participant1"], event.args["participant2"]} == {a, b}
    ]


async def assert_one_channel_ready(link: CrashLink, w3: AsyncWeb3) -> str:
    """One channel for the pair on-chain, both deposits exactly at target, both workflows
    and both connectors' views READY on it, and no transaction beyond what was asked for."""
    deployment, b = link.deployment, link.b
    a_address, b_address = link.a_account.address, b.account.address
    channel_id = await tn.get_channel_id(w3, deployment, a_address, b_address)
    assert channel_id is not None
    assert await tn.get_pair_counter(w3, deployment, a_address, b_address) == 1
    assert await opened_channels(w3, deployment, a_address, b_address) == [channel_id]
    for address in (a_address, b_address):
        side = await tn.get_participant(w3, deployment, channel_id, address)
        assert side.deposit == TARGET, f"{address} deposited {side.deposit}, target {TARGET}"
    for status in (await link.a_status(), await b.status(link.a_id)):
        assert (status.stage, status.channel_id) == ("READY", channel_id), status
        # `their_deposit` is what the peer had when this side became READY: any amount.
        assert int(status.our_deposit) == TARGET, status
    for view in (link.registry.view(b.node_id), b.registry.view(link.a_id)):
        assert view is not None and view.is_ready and view.channel_id == channel_id, view
    # Every nonce the wallet used went to a transaction provisioning asked for, once.
    for address, workflow_id in (
        (a_address, link.a_workflow_id),
        (b_address, ids.channel_workflow_id(b.node_id, link.a_id, TOKEN)),
    ):
        sent = await w3.eth.get_transaction_count(address) - link.nonces_before[address]
        asked = await submitted_intent_count(link.client, workflow_id)
        assert sent == asked, f"{workflow_id}: {sent} txs sent, {asked} asked for"
    return channel_id
