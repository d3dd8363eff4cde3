"""The connector process's share of provisioning, assembled in one place.

On start it connects to Temporal, starts this node's workers (the provisioning and wallet
workers unless `temporal.runWorker` is false, and always the connector's own queue, which
is how READY reaches this process), rebuilds the channel views from the workflows, and from
then on turns every authenticated peer link into a signal-with-start of the peer's workflow.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import structlog
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.connector import ConnectorActivities, CooperativeSettler
from connector.chain_view import ChannelChainView
from connector.channels import ChannelProvisioner, ChannelRegistry
from connector.claim_store import ClaimStore
from connector.config import NodeConfig
from connector.metrics import StageTimer
from connector.payout import PayoutReconciler
from worker.run import (
    ChainContext,
    build_workers,
    chain_context_from_config,
    connect_temporal,
    connector_worker,
)
from workflows.messages import ChannelParams

log = structlog.get_logger(__name__)

RECONNECT_INITIAL = 0.5
RECONNECT_MAX = 30.0
# On stop, how long a provisioning signal under way may take to finish.
STOP_SIGNAL_GRACE = 2.0
# How often /health follows stages that are not announced to the connector (AWAITING_FUNDS...).
STAGE_REFRESH_SECONDS = 3.0
# The keeper reads each channel at least this often, and at least three times per settle
# window, so a partner's close is answered with an update well before the window ends.
KEEP_CHECK_MAX_SECONDS = 3600.0


def channel_params_from_config(
    config: NodeConfig, chain: ChainContext, funds_recheck_seconds: float = 60.0
) -> dict[str, ChannelParams]:
    """One ChannelParams per configured peer: its first preferred token, a deposit target of
    `initialDepositMultiplier` times the peer's settlement threshold, topped up once less than
    `minDepositThreshold` of the target remains."""
    settlement = config.settlement
    assert settlement is not None
    window_seconds = settlement.settle_timeout * settlement.block_time_seconds
    params = {}
    for peer in config.peers:
        threshold = config.settlement_threshold_for(peer.id) or settlement.threshold
        target = settlement.initial_deposit_multiplier * threshold
        params[peer.id] = ChannelParams(
            node_id=config.node_id,
            peer_id=peer.id,
            token=peer.preferred_tokens[0],
            chain_id=chain.deployment.chain_id,
            token_network=chain.deployment.token_network,
            our_address=chain.account.address,
            peer_address=peer.evm_address,
            deposit_target=target,
            funds_recheck_seconds=funds_recheck_seconds,
            # Exact decimal arithmetic: wei amounts outgrow a float's 53 bits.
            top_up_below=int(Decimal(str(settlement.min_deposit_threshold)) * target),
            idle_close_seconds=settlement.idle_close_seconds,
            keep_check_seconds=min(KEEP_CHECK_MAX_SECONDS, window_seconds / 3),
            seconds_per_block=settlement.block_time_seconds,
        )
    return params


class ProvisioningRuntime:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.registry = ChannelRegistry(on_stage=StageTimer(config.node_id).stage_changed)
        self._client: Client | None = None
        self._chain: ChainContext | None = None
        self._provisioner: ChannelProvisioner | None = None
        self._workers: list[Worker] = []
        self._runs: list[asyncio.Task[None]] = []
        # One signal under way per peer (retried while Temporal does not take it).
        self._signals: dict[str, asyncio.Task[None]] = {}
        self._connected = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        # Set before start() when settlement runs (connector/node_command.py): the node's
        # claims, for the connector activities that read the best claim to close with.
        self.claims: ClaimStore | None = None
        # Likewise: asks a peer to sign a cooperative settle over its BTP link.
        self.cooperative: CooperativeSettler | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "provisioning not started"
        return self._client

    @property
    def chain(self) -> ChainContext:
        """The node's RPC client, treasury account and deployment (settlement signs with it)."""
        assert self._chain is not None, "provisioning not connected"
        return self._chain

    async def retry(self, peer_id: str) -> None:
        """Signal-with-start `retry` to the peer's workflow (see ChannelProvisioner.retry)."""
        await self._connected.wait()
        assert self._provisioner is not None
        await self._provisioner.retry(peer_id)

    async def top_up(self, peer_id: str) -> None:
        """Signal `top_up` to the peer's running workflow (see ChannelProvisioner.top_up)."""
        await self._connected.wait()
        assert self._provisioner is not None
        await self._provisioner.top_up(peer_id)

    async def wait_connected(self) -> None:
        """Until Temporal and the chain are connected (`client` and `chain` usable)."""
        await self._connected.wait()

    async def start(self) -> None:
        """Connect in the background: the connector forwards packets from the start and
        never waits for Temporal or the chain; link events queue until connected."""
        self._connecting = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = RECONNECT_INITIAL
        while True:
            try:
                await self._connect()
            except (OSError, RuntimeError) as err:
                log.warning(
                    "PROVISIONING_UNAVAILABLE",
                    nodeId=self.config.node_id,
                    error=str(err),
                    retryInSeconds=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            else:
                self._connected.set()
                break
        while True:
            await asyncio.sleep(STAGE_REFRESH_SECONDS)
            try:
                await self._provisioner.refresh_stages(self.config.node_id)
            except RPCError as err:
                log.warning("CHANNEL_STAGES_UNAVAILABLE", error=str(err))

    async def _connect(self) -> None:
        config = self.config
        chain = self._chain = await chain_context_from_config(config)
        self._client = await connect_temporal(config.temporal)
        # A settled channel's payout is reconciled with the claims and the ledger they hold.
        payouts = (
            PayoutReconciler(
                self.claims, ChannelChainView(chain.web3, chain.deployment), chain.account.address
            )
            if self.claims is not None
            else None
        )
        connector = ConnectorActivities(self.registry, self.claims, self.cooperative, payouts)
        if config.temporal.run_worker:
            self._workers = build_workers(self._client, chain, connector)
        else:
            self._workers = [connector_worker(self._client, config.node_id, connector)]
        self._runs = [asyncio.create_task(worker.run()) for worker in self._workers]
        self._provisioner = ChannelProvisioner(
            self._client, self.registry, channel_params_from_config(config, chain)
        )
        try:
            rebuilt = await self._provisioner.rebuild(config.node_id)
        except RPCError as err:
            # Views then fill from READY notifications and the stage refresh.
            log.warning("CHANNEL_REBUILD_FAILED", nodeId=config.node_id, error=str(err))
            rebuilt = 0
        log.info(
            "PROVISIONING_STARTED",
            nodeId=config.node_id,
            wallet=chain.account.address,
            channelsKnown=rebuilt,
            workers=len(self._workers),
        )

    def peer_connected(self, peer_id: str) -> None:
        """Called on every authenticated link; never blocks the link on Temporal. A signal
        still under way for the peer stands for this one too."""
        if peer_id in self._signals:
            return
        task = asyncio.create_task(self._signal(peer_id))
        self._signals[peer_id] = task
        task.add_done_callback(lambda _: self._signals.pop(peer_id, None))

    async def _signal(self, peer_id: str) -> None:
        await self._connected.wait()
        assert self._provisioner is not None
        delay = RECONNECT_INITIAL
        while True:
            try:
                await self._provisioner.peer_connected(peer_id)
                return
            except Exception as err:
                # Temporal down longer than the client's own retries: signal again until it
                # takes it, so a peer that connected meanwhile is provisioned once Temporal is
                # back (it may never reconnect). Packets forward meanwhile.
                log.error(
                    "CHANNEL_PROVISIONING_SIGNAL_FAILED",
                    peerId=peer_id,
                    error=str(err),
                    retryInSeconds=delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        signals = list(self._signals.values())
        if signals:
            # A signal being sent gets a moment to finish; one Temporal keeps refusing (or
            # that never got to be sent) is dropped: the peer's next connect sends it.
            waiting = set(signals)
            if self._connected.is_set():
                _, waiting = await asyncio.wait(signals, timeout=STOP_SIGNAL_GRACE)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*signals, return_exceptions=True)
        await asyncio.gather(*(worker.shutdown() for worker in self._workers))
        await asyncio.gather(*self._runs, return_exceptions=True)
        self._workers, self._runs = [], []
        if self._chain is not None:
            await self._chain.web3.provider.disconnect()
            self._chain = None
