"""The connector's side of provisioning: start or attach the peer's workflow on every
authenticated link, and keep the view of each peer's channel that /health and settlement read.

The view is rebuilt from Temporal (list by search attribute, then `status` queries) when the
connector starts, so a restart opens nothing: the workflows already know every channel.

The workflow is the view's one source, with one exception: a cooperative settle the partner
proposed and we signed (connector.cooperative_settle) puts the channel on hold, CLOSING
(no claims either way: the settle would not pay them), before our workflow knows anything.
The partner then sends `cooperativeSettle`, and our keeper reads the channel settled; or it
never does (it crashed, its transaction failed, it fell back to a close). Only our workflow
lifts the hold: once it is older than `cooperative_hold_seconds`, each keeper read reports
it expired, and a keeper that finds the channel still open on-chain while READY tells the
connector READY again (`mark_ready`); its own close notification replaces it. Stage
refreshes from search attributes and repeated READY notifications leave it alone meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog
from temporalio.client import Client, WorkflowExecution
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError

from workflows import ids
from workflows.channel import ChannelWorkflow
from workflows.messages import ChannelParams, ChannelStatus, PeerConnected, SettlementReady
from workflows.policies import WORKFLOW_TASK_TIMEOUT
from workflows.provisioning.state import Stage

log = structlog.get_logger(__name__)

QUERY_TIMEOUT = timedelta(seconds=5)
# A signed cooperative settle holds claims this long before our keeper may lift the hold: the
# proposer sends `cooperativeSettle` right after our signature and a block or a few later it
# has mined; a channel still open after this is not being settled that way.
COOPERATIVE_HOLD_SECONDS = 120.0


@dataclass(frozen=True)
class ChannelView:
    """What the connector knows of one peer's channel."""

    peer_id: str
    token: str
    stage: str
    channel_id: str | None = None
    our_deposit: int = 0
    their_deposit: int = 0
    last_error: str | None = None

    @property
    def is_ready(self) -> bool:
        return self.stage == Stage.READY


class ChannelRegistry:
    """Per-peer channel views; written by the readiness activity and by rebuilds."""

    def __init__(
        self,
        on_stage: Callable[[str, str], None] | None = None,
        *,
        cooperative_hold_seconds: float = COOPERATIVE_HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._views: dict[str, ChannelView] = {}
        # Peer -> (channel id, since): a cooperative settle we signed holds the channel.
        self._holds: dict[str, tuple[str, float]] = {}
        self.cooperative_hold_seconds = cooperative_hold_seconds
        self._clock = clock
        self._ready_events: dict[str, asyncio.Event] = {}
        # Told (peer id, stage) whenever a peer's stage changes here (connector.metrics).
        self._on_stage = on_stage
        # Told the new view when a READY channel's deposits change (a top-up landed), so
        # settlement waiting on a used-up deposit goes on at once (connector.settlement).
        self.deposit_listeners: list[Callable[[ChannelView], None]] = []

    def mark_ready(self, ready: SettlementReady) -> bool:
        """Set the peer READY; True when this is news (first time, or another channel).
        A channel on hold for a cooperative settle stays CLOSING (deposits updated) until the
        hold has expired: then READY again, logged."""
        previous = self._views.get(ready.peer_id)
        hold = self._holds.get(ready.peer_id)
        if hold is not None and hold[0] == ready.channel_id.lower():
            if not self._hold_expired(hold):
                assert previous is not None
                self._store(
                    replace(
                        previous,
                        our_deposit=int(ready.our_deposit),
                        their_deposit=int(ready.their_deposit),
                    )
                )
                return False
            log.warning(
                "COOPERATIVE_SETTLE_ABANDONED",
                peerId=ready.peer_id,
                channelId=ready.channel_id,
                heldSeconds=round(self._clock() - hold[1], 1),
                reason="the partner's cooperative settle we signed never came and the keeper "
                "reads the channel still open: claims resume",
            )
        self._holds.pop(ready.peer_id, None)
        view = ChannelView(
            peer_id=ready.peer_id,
            token=ready.token,
            stage=Stage.READY,
            channel_id=ready.channel_id,
            our_deposit=int(ready.our_deposit),
            their_deposit=int(ready.their_deposit),
        )
        self._store(view)
        self._event(ready.peer_id).set()
        news = previous is None or not previous.is_ready or previous.channel_id != view.channel_id
        if not news and (previous.our_deposit, previous.their_deposit) != (
            view.our_deposit,
            view.their_deposit,
        ):
            for listener in self.deposit_listeners:
                listener(view)
        return news

    def mark_closing(self, peer_id: str, channel_id: str, stage: str) -> bool:
        """The peer's channel is closing or settled (channel keeping): no longer READY, so
        settlement stops using it. A view of another (newer) channel is left alone. True when
        the stage changed. From our workflow: it replaces a cooperative hold."""
        current = self._views.get(peer_id)
        if current is None or (current.channel_id or "").lower() != channel_id.lower():
            return False
        self._holds.pop(peer_id, None)
        return self._close(current, stage)

    def hold_for_cooperative_settle(self, peer_id: str, channel_id: str) -> bool:
        """We signed the partner's cooperative settle of the peer's READY channel: CLOSING,
        until our workflow reads it settled, or still open once the hold has expired (see the
        module docstring). False when the view is not that READY channel."""
        current = self._views.get(peer_id)
        if (
            current is None
            or not current.is_ready
            or (current.channel_id or "").lower() != channel_id.lower()
        ):
            return False
        self._holds[peer_id] = (channel_id.lower(), self._clock())
        return self._close(current, Stage.CLOSING.value)

    def cooperative_hold_expired(self, peer_id: str, channel_id: str) -> bool:
        """The channel is on hold for a cooperative settle signed longer ago than the hold."""
        hold = self._holds.get(peer_id)
        return hold is not None and hold[0] == channel_id.lower() and self._hold_expired(hold)

    def _hold_expired(self, hold: tuple[str, float]) -> bool:
        return self._clock() - hold[1] >= self.cooperative_hold_seconds

    def _close(self, current: ChannelView, stage: str) -> bool:
        peer_id = current.peer_id
        if current.stage == stage:
            return False
        self._store(replace(current, stage=stage))
        if self._event(peer_id).is_set():  # wait_ready now waits for the next READY
            self._ready_events[peer_id] = asyncio.Event()
        return True

    def record_status(self, status: ChannelStatus) -> None:
        self._holds.pop(status.peer_id, None)
        view = ChannelView(
            peer_id=status.peer_id,
            token=status.token,
            stage=status.stage,
            channel_id=status.channel_id,
            our_deposit=int(status.our_deposit),
            their_deposit=int(status.their_deposit),
            last_error=status.last_error,
        )
        self._store(view)
        if view.is_ready:
            self._event(status.peer_id).set()

    def record_signalled(self, peer_id: str, token: str) -> None:
        """The peer's workflow was signalled with start. That started a run only for a peer
        seen for the first time or whose last run ended (SETTLED): CHECKING_CONFIG then.
        A running workflow keeps its stage, so a reconnect does not show a SKIPPED,
        AWAITING_FUNDS or FAILED peer as CHECKING_CONFIG until the next refresh (nor count
        its FAILED again in /metrics)."""
        current = self._views.get(peer_id)
        if current is None or current.stage == Stage.SETTLED:
            self._store(ChannelView(peer_id=peer_id, token=token, stage=Stage.CHECKING_CONFIG))

    def record_stage(self, peer_id: str, token: str, stage: str) -> None:
        current = self._views.get(peer_id)
        if current is None:
            self._store(ChannelView(peer_id=peer_id, token=token, stage=stage))
        elif not current.is_ready and peer_id not in self._holds:
            # (A hold is CLOSING while the workflow still says READY: only it lifts it.)
            self._store(replace(current, stage=stage))

    def _store(self, view: ChannelView) -> None:
        previous = self._views.get(view.peer_id)
        self._views[view.peer_id] = view
        if self._on_stage is not None and (previous is None or previous.stage != view.stage):
            self._on_stage(view.peer_id, view.stage)

    def view(self, peer_id: str) -> ChannelView | None:
        return self._views.get(peer_id)

    def views(self) -> list[ChannelView]:
        return list(self._views.values())

    async def wait_ready(self, peer_id: str) -> ChannelView:
        await self._event(peer_id).wait()
        return self._views[peer_id]

    def _event(self, peer_id: str) -> asyncio.Event:
        return self._ready_events.setdefault(peer_id, asyncio.Event())


class ChannelProvisioner:
    """Starts or attaches `channel/<node>/<peer>/<token>` and signals `peer_connected`."""

    def __init__(
        self,
        client: Client,
        registry: ChannelRegistry,
        params_for_peer: dict[str, ChannelParams],
    ) -> None:
        self._client = client
        self._registry = registry
        self._params = params_for_peer

    async def peer_connected(self, peer_id: str) -> None:
        """Signal-with-start: one run per id, attached to if running, never a second one."""
        params = self._params.get(peer_id)
        # The address as configured now: a run SKIPPED for the lack of one provisions.
        connected = PeerConnected(params.peer_address if params else None)
        await self._signal_with_start(peer_id, ids.SIGNAL_PEER_CONNECTED, connected)

    async def retry(self, peer_id: str) -> None:
        """Ask the peer's workflow to try again now; starts a new run when the last one has
        ended (a settled channel), so settlement can always ask for a channel."""
        await self._signal_with_start(peer_id, ids.SIGNAL_RETRY)

    async def top_up(self, peer_id: str) -> None:
        """Ask the peer's running workflow to check its deposit now (signal `top_up`: a
        READY keeper reads the channel and tops up if due). Only a running keeper can top
        up, so no new run is started: RPCError (not found) when there is none."""
        params = self._params.get(peer_id)
        if params is None:
            return
        workflow_id = ids.channel_workflow_id(params.node_id, params.peer_id, params.token)
        await self._client.get_workflow_handle(workflow_id).signal(ids.SIGNAL_TOP_UP)
        log.info("CHANNEL_TOP_UP_SIGNALLED", peerId=peer_id, workflowId=workflow_id)

    async def _signal_with_start(
        self, peer_id: str, signal: str, argument: PeerConnected | None = None
    ) -> None:
        params = self._params.get(peer_id)
        if params is None:
            return
        workflow_id = ids.channel_workflow_id(params.node_id, params.peer_id, params.token)
        await self._client.start_workflow(
            ChannelWorkflow.run,
            params,
            id=workflow_id,
            task_queue=ids.provisioning_task_queue(params.node_id),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            start_signal=signal,
            start_signal_args=[] if argument is None else [argument],
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(ids.NODE_ID, params.node_id),
                    SearchAttributePair(ids.PEER_ID, params.peer_id),
                    SearchAttributePair(ids.STAGE, Stage.CHECKING_CONFIG.value),
                ]
            ),
            memo={"peerAddress": params.peer_address or "", "token": params.token},
            static_summary=f"{params.token} channel {params.node_id} ↔ {params.peer_id}",
        )
        self._registry.record_signalled(peer_id, params.token)
        log.info(
            "CHANNEL_PROVISIONING_SIGNALLED", peerId=peer_id, workflowId=workflow_id, signal=signal
        )

    async def rebuild(self, node_id: str) -> int:
        """Load every running channel workflow of this node into the registry."""
        count = 0
        async for execution in self._client.list_workflows(_running_channels(node_id)):
            handle = self._client.get_workflow_handle(execution.id)
            try:
                status = await handle.query(
                    ids.QUERY_STATUS, result_type=ChannelStatus, rpc_timeout=QUERY_TIMEOUT
                )
            except RPCError as err:
                # No worker answering: the search attributes still tell the stage.
                log.warning("CHANNEL_STATUS_UNAVAILABLE", workflowId=execution.id, error=str(err))
                self._record_attributes(execution)
            else:
                self._registry.record_status(status)
            count += 1
        return count

    async def refresh_stages(self, node_id: str) -> None:
        """Follow stages between READY notifications (AWAITING_FUNDS, FAILED, ...) from the
        Stage search attribute: one visibility call, no worker needed."""
        async for execution in self._client.list_workflows(_running_channels(node_id)):
            self._record_attributes(execution)

    def _record_attributes(self, execution: WorkflowExecution) -> None:
        attributes = execution.typed_search_attributes
        peer_id, stage = attributes.get(ids.PEER_ID), attributes.get(ids.STAGE)
        if peer_id is not None and stage is not None:
            self._registry.record_stage(peer_id, execution.id.rsplit("/", 1)[-1], stage)


def _running_channels(node_id: str) -> str:
    return (
        f'WorkflowType = "{ids.CHANNEL_WORKFLOW}" AND NodeId = "{node_id}" '
        'AND ExecutionStatus = "Running"'
    )
