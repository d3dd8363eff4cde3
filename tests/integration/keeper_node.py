"""A node's channel-keeping side, in-process, for tests on a real Temporal server (dev server
or time-skipping test server) and a real anvil: its channel workflows and workers, its
connector activities over a real claim store (SQLite, in a real ledger), and claims signed
with its real key.

Claims are made here the way the settlement service makes them (`ClaimSigner`, stored
before they would leave, acknowledged with the credit), without the packet traffic that
would trigger them, so a test states exactly what was paid.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from eth_account.signers.local import LocalAccount
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.connector import ConnectorActivities, CooperativeSettler
from activities.token_network import Deployment
from connector.balances import AccountLimits, BalanceLedger
from connector.chain_view import ChannelChainView
from connector.channels import ChannelProvisioner, ChannelRegistry, ChannelView
from connector.claim_store import ClaimStore
from connector.claims import Claim, ClaimDomain, ClaimSigner
from connector.payout import PayoutReconciler
from worker.run import ChainContext, build_workers
from workflows import ids
from workflows.channel import ChannelWorkflow
from workflows.messages import ChannelParams, ChannelStatus

TOKEN = "M2M"
TARGET = 10 * 10**18
# The contract's minimum: a short window in blocks that a test mines through at once.
SETTLE_TIMEOUT = 5
CREDIT_LIMIT = 10**30


class KeeperNode:
    def __init__(self, node_id: str, account: LocalAccount, client: Client) -> None:
        self.node_id = node_id
        self.account = account
        self.client = client
        self.registry = ChannelRegistry()
        self.signer = ClaimSigner(bytes(account.key), account.address)

    async def start(
        self,
        stack: AsyncExitStack,
        w3: AsyncWeb3,
        deployment: Deployment,
        peers: dict[str, str],
        data_dir: Path,
        *,
        settle_timeout: int = SETTLE_TIMEOUT,
        cooperative: CooperativeSettler | None = None,
        workers: AsyncExitStack | None = None,
        **keeping: float | int,
    ) -> None:
        """Open the claim store, run the workers (until `workers`, default `stack`, closes)
        and provision `peers` (id -> address) with ChannelParams `keeping` overrides."""
        self.domain = ClaimDomain(deployment.chain_id, deployment.token_network)
        path = self.claims_path = data_dir / f"{self.node_id}.sqlite3"
        ledger = BalanceLedger.open(path, {peer: AccountLimits(CREDIT_LIMIT) for peer in peers})
        stack.push_async_callback(ledger.close)
        self.ledger = ledger
        self.claims = ClaimStore.open(path, ledger)
        payouts = PayoutReconciler(
            self.claims, ChannelChainView(w3, deployment), self.account.address
        )
        self.connector = ConnectorActivities(self.registry, self.claims, cooperative, payouts)
        await self.start_workers(workers or stack, w3, deployment, settle_timeout=settle_timeout)
        # A keeper left running would wake every check interval with no worker to answer.
        stack.push_async_callback(
            self._terminate,
            [ids.channel_workflow_id(self.node_id, peer, TOKEN) for peer in peers]
            + [ids.sequencer_workflow_id(deployment.chain_id, self.account.address)],
        )
        self.provisioner = ChannelProvisioner(
            self.client,
            self.registry,
            {
                peer_id: ChannelParams(
                    node_id=self.node_id,
                    peer_id=peer_id,
                    token=TOKEN,
                    chain_id=deployment.chain_id,
                    token_network=deployment.token_network,
                    our_address=self.account.address,
                    peer_address=address,
                    deposit_target=TARGET,
                    funds_recheck_seconds=1.0,
                    **keeping,
                )
                for peer_id, address in peers.items()
            },
        )

    async def start_workers(
        self,
        stack: AsyncExitStack,
        w3: AsyncWeb3,
        deployment: Deployment,
        *,
        settle_timeout: int = SETTLE_TIMEOUT,
        connector: bool = True,
    ) -> None:
        """The node's workers (provisioning, wallet, connector queue) until `stack` closes;
        again after a stop, for a restart. `connector` False: the connector is down, the
        chain workers run on."""
        context = ChainContext(self.node_id, w3, self.account, deployment, settle_timeout)
        activities = self.connector if connector else None
        for worker in build_workers(self.client, context, activities):
            await stack.enter_async_context(worker)

    async def _terminate(self, workflow_ids: list[str]) -> None:
        for workflow_id in workflow_ids:
            with contextlib.suppress(RPCError):
                await self.client.get_workflow_handle(workflow_id).terminate("test over")

    # --- claims -------------------------------------------------------------------------

    def sign(self, channel_id: str, nonce: int, transferred: int) -> Claim:
        return self.signer.sign(self.domain, channel_id, nonce, transferred)

    async def pay(self, peer_id: str, channel_id: str, transferred: int) -> Claim:
        """Sign our next claim for a cumulative `transferred`, store it, as acknowledged."""
        last = self.claims.latest_sent(peer_id, channel_id)
        claim = self.sign(channel_id, (last.nonce if last else 0) + 1, transferred)
        stored = await self.claims.record_sent(
            peer_id, claim, transferred - (last.transferred_amount if last else 0)
        )
        await self.claims.record_acknowledged(stored)
        return claim

    async def receive(self, peer_id: str, claim: Claim) -> None:
        last = self.claims.best_received(peer_id, claim.channel_id)
        await self.claims.record_received(
            peer_id, claim, claim.transferred_amount - (last.transferred_amount if last else 0)
        )

    # --- the workflow ---------------------------------------------------------------------

    def handle(self, peer_id: str) -> WorkflowHandle:
        return self.client.get_workflow_handle_for(
            ChannelWorkflow.run, ids.channel_workflow_id(self.node_id, peer_id, TOKEN)
        )

    async def status(self, peer_id: str) -> ChannelStatus:
        return await self.handle(peer_id).query(ids.QUERY_STATUS, result_type=ChannelStatus)

    async def wait_for_view(
        self, peer_id: str, check: Callable[[ChannelView], bool], timeout: float = 30.0
    ) -> ChannelView:
        """Until the connector's registry shows what `check` asks for: the workflow tells it
        by notifications, which trail the workflow's own `status`."""

        async def seen() -> bool:
            view = self.registry.view(peer_id)
            return view is not None and check(view)

        await until(seen, timeout, what=f"{peer_id}'s view in the registry")
        return self.registry.view(peer_id)

    async def wait_for_stage(
        self, peer_id: str, *stages: str, timeout: float = 30.0
    ) -> ChannelStatus:
        """Poll the `status` query until the workflow reports one of `stages`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.status(peer_id)
            if status.stage in stages:
                return status
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{peer_id} stuck in {status.stage} (last error: {status.last_error}), "
                    f"waited for {stages}"
                )
            await asyncio.sleep(0.05)


async def deposit(
    w3: AsyncWeb3, deployment: Deployment, account: LocalAccount, channel_id: str, total: int
) -> None:
    """The partner's own deposit, sent directly (it runs no workflow in some tests)."""
    await tn.send_batch(
        w3,
        account,
        [
            tn.build_approve(deployment, total),
            tn.build_set_total_deposit(deployment, channel_id, account.address, total),
        ],
    )


async def mine(w3: AsyncWeb3, blocks: int) -> int:
    await w3.provider.make_request("anvil_mine", [hex(blocks)])
    return await w3.eth.block_number


async def until(check, timeout: float = 30.0, what: str = "") -> None:
    """Poll an async predicate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        await asyncio.sleep(0.05)
