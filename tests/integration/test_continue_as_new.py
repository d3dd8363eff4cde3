"""Continue-as-new of the two long-lived workflows, on the real Temporal dev server and real
anvil: a keeper runs for months, so its history is cut many times in production.

The history limit is lowered by patching the module constant: the worker passes workflows/*
through the sandbox (worker/run.py, WORKFLOW_RUNNER), so the workflow code it runs reads the
very module the test patches. Each test checks that the lowered limit was reached (a new run
id, the first run CONTINUED_AS_NEW), so a worker that stopped seeing the patch fails the test
instead of passing it unexercised. The histories grow with real signals and submissions.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import pytest
from eth_account.signers.local import LocalAccount
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment
from web3 import AsyncWeb3

import workflows.channel
import workflows.sequencer
from activities import token_network as tn
from activities.sequencer import SequencerClientActivities
from activities.token_network import ChannelState, Deployment
from tests.chaos.crash_link import opened_channels
from tests.chaos.workflow_history import accepted_per_run, continued, draining
from tests.integration.keeper_node import SETTLE_TIMEOUT, TARGET, KeeperNode, mine, until
from tests.integration.provisioning_node import Node
from worker.run import ChainContext, build_workers, connector_worker
from workflows import ids
from workflows.messages import (
    ChannelParams,
    ChannelStatus,
    CloseChannel,
    SequencerParams,
    SubmitRequest,
    SubmitResult,
)
from workflows.provisioning.commands import SendKind, TxIntent

pytestmark = pytest.mark.integration

Params = TypeVar("Params")

M2M = 10**18
# No keeper reads during the test (they would grow the history on their own); blocks in the
# settle window are mined by the test.
QUIET_KEEPER = {"idle_close_seconds": 0, "keep_check_seconds": 3600.0, "seconds_per_block": 0.2}
# Room above the history at READY for a few dozen reconnects before the cut.
HISTORY_HEADROOM = 150


async def assert_continued(client: Client, workflow_id: str, run_id: str) -> str:
    """`run_id` closed as CONTINUED_AS_NEW; the id's current run (returned) is another."""
    ended = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    assert ended.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    current = await client.get_workflow_handle(workflow_id).describe()
    assert current.run_id != run_id
    assert current.status == WorkflowExecutionStatus.RUNNING
    return current.run_id


async def reconnect_until_continued(node: KeeperNode, peer_id: str, run_id: str) -> int:
    """Reconnect `peer_id` (the connector's signal-with-start) until the workflow has
    continued as new; the number of reconnects sent."""
    sent = 0
    async with asyncio.timeout(30):
        while (await node.handle(peer_id).describe()).run_id == run_id:
            for _ in range(5):
                await node.provisioner.peer_connected(peer_id)
            sent += 5
    return sent


async def test_ready_keeper_continues_as_new_with_its_channel_and_still_tops_up_and_closes(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = await new_account(), await new_account()
    node = KeeperNode(f"a-{uuid.uuid4().hex[:8]}", a, temporal_client)
    workflow_id = ids.channel_workflow_id(node.node_id, "b", "M2M")
    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": b.address},
            tmp_path,
            top_up_below=TARGET // 2,
            **QUIET_KEEPER,
        )
        await node.provisioner.peer_connected("b")
        ready = await node.wait_for_stage("b", "READY")
        handle = node.handle("b")
        described = await handle.describe()
        run_id = described.run_id
        monkeypatch.setattr(
            workflows.channel, "MAX_HISTORY_EVENTS", described.history_length + HISTORY_HEADROOM
        )

        reconnects = await reconnect_until_continued(node, "b", run_id)
        new_run = await assert_continued(temporal_client, workflow_id, run_id)
        # Back to the production limit: what follows runs in the second run.
        monkeypatch.undo()

        # The new run carries the channel: same id and deposits, still READY, queried by id.
        status = await temporal_client.get_workflow_handle(workflow_id, run_id=new_run).query(
            ids.QUERY_STATUS, result_type=ChannelStatus
        )
        assert status == ready
        carried = await started_with(temporal_client, workflow_id, new_run, ChannelParams)
        assert carried.carried is not None and carried.carried.stage.value == "READY"
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(ids.NODE_ID) == node.node_id
        assert attributes.get(ids.PEER_ID) == "b"
        assert attributes.get(ids.STAGE) == "READY"
        assert attributes.get(ids.CHANNEL_ID) == ready.channel_id
        channel_id = ready.channel_id
        assert channel_id is not None

        # Every reconnect's READY notification reached the connector, before or after the cut.
        await node.wait_for_view("b", lambda view: view.is_ready and view.channel_id == channel_id)

        # Its job goes on: paid below the threshold, a top-up signal tops up (a new send: the
        # carried send sequence keeps the sequencer from answering with an old one's txs).
        await node.pay("b", channel_id, 6 * M2M)
        await handle.signal(ids.SIGNAL_TOP_UP)

        async def topped_up() -> bool:
            side = await tn.get_participant(anvil_w3, deployment, channel_id, a.address)
            return side.deposit > TARGET

        await until(topped_up, what="the top-up after continue-as-new")
        expected_total = TARGET + (TARGET - 4 * M2M)  # the target remaining again

        # READY comes back as the top-up is mined; the channel read after it brings the new
        # deposit (under load the query can land between the two).
        async def deposit_shown() -> bool:
            status = await node.status("b")
            return status.stage == "READY" and status.our_deposit == str(expected_total)

        await until(deposit_shown, what="the topped-up deposit in the status")
        assert (await node.status("b")).channel_id == channel_id

        # And a close requested now closes and settles the same channel.
        await handle.signal(ids.SIGNAL_CLOSE, CloseChannel(reason="test"))
        await node.wait_for_stage("b", "SETTLE_WINDOW")
        await mine(anvil_w3, SETTLE_TIMEOUT + 1)
        final = await asyncio.wait_for(handle.result(), timeout=30)

    assert reconnects > 0
    assert await tn.get_pair_counter(anvil_w3, deployment, a.address, b.address) == 1
    assert await opened_channels(anvil_w3, deployment, a.address, b.address) == [channel_id]
    assert (await tn.get_channel(anvil_w3, deployment, channel_id)).state is ChannelState.SETTLED
    assert final.stage == "SETTLED" and final.channel_id == channel_id
    assert final.payout is not None
    # b never put our claims on-chain: settling gives us back all we deposited.
    assert int(final.payout.our_amount) == expected_total


async def test_close_signalled_while_notifications_drain_before_the_cut_is_not_lost(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before continuing as new the workflow waits for its notifications to reach the
    connector; with the connector down that wait lasts until it is back. A close signalled
    meanwhile used to sit in the old run's inbox and vanish with it: the new run stayed READY.
    """
    a, b = await new_account(), await new_account()
    node = KeeperNode(f"a-{uuid.uuid4().hex[:8]}", a, temporal_client)
    async with AsyncExitStack() as stack:
        all_workers = AsyncExitStack()
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": b.address},
            tmp_path,
            workers=all_workers,
            **QUIET_KEEPER,
        )
        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        assert channel_id is not None
        handle = node.handle("b")
        described = await handle.describe()
        run_id = described.run_id
        limit = described.history_length + 30
        monkeypatch.setattr(workflows.channel, "MAX_HISTORY_EVENTS", limit)

        # The connector goes down; the node's chain workers keep running.
        await all_workers.aclose()
        await node.start_workers(stack, anvil_w3, deployment, connector=False)
        # Reconnects past the limit: their READY notifications wait for the connector, and
        # so does the cut.
        while (await handle.describe()).history_length <= limit:
            await handle.signal(ids.SIGNAL_PEER_CONNECTED)

        await until(lambda: draining(handle), what="the workflow waiting on its notifications")

        await handle.signal(ids.SIGNAL_CLOSE, CloseChannel(reason="test"))
        await stack.enter_async_context(
            connector_worker(temporal_client, node.node_id, node.connector)
        )

        async def closed() -> bool:
            channel = await tn.get_channel(anvil_w3, deployment, channel_id)
            return channel.state is ChannelState.CLOSED

        await until(closed, what="the close signalled during the drain")
        await assert_continued(
            temporal_client, ids.channel_workflow_id(node.node_id, "b", "M2M"), run_id
        )
        await mine(anvil_w3, SETTLE_TIMEOUT + 1)
        final = await asyncio.wait_for(handle.result(), timeout=30)
    assert final.stage == "SETTLED" and final.channel_id == channel_id
    assert final.closing == "unilateral (test)"


async def test_awaiting_funds_continues_as_new_and_still_rechecks_after_a_reconnect(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wallet short of tokens waits in AWAITING_FUNDS, re-reading its balances on a timer,
    for as long as it takes. Its own timer rounds grow the history, so it must be cut there
    too (before, the round always had a change waiting and never reached the cut), and the
    new run must go on re-reading, also after a reconnect cut a wait short (before, such a
    signal left no timer: funds that arrived were never noticed without a `retry`)."""
    a, peer, minter = [await new_account(m2m=0) for _ in range(3)]
    node = Node(f"a-{uuid.uuid4().hex[:8]}", a, temporal_client)
    workflow_id = ids.channel_workflow_id(node.node_id, "p", "M2M")
    async with AsyncExitStack() as stack:
        await node.start(
            stack, anvil_w3, deployment, {"p": peer.address}, funds_recheck_seconds=0.2
        )
        await node.provisioner.peer_connected("p")
        await node.wait_for_stage("p", "AWAITING_FUNDS")
        described = await node.handle("p").describe()
        monkeypatch.setattr(workflows.channel, "MAX_HISTORY_EVENTS", described.history_length + 40)

        await until(
            lambda: continued(node.handle("p"), described.run_id),
            what="a cut during AWAITING_FUNDS, on the workflow's own timers",
        )
        await assert_continued(temporal_client, workflow_id, described.run_id)
        monkeypatch.undo()
        assert (await node.status("p")).stage == "AWAITING_FUNDS"

        # A reconnect while waiting, then the tokens arrive: the timer, not a signal, sees them.
        await node.provisioner.peer_connected("p")
        await asyncio.sleep(0.5)
        await tn.send_and_wait(anvil_w3, minter, tn.build_mint(deployment, a.address, 2 * TARGET))
        ready = await node.wait_for_stage("p", "READY", timeout=15)
    assert ready.our_deposit == str(TARGET)
    assert await tn.get_pair_counter(anvil_w3, deployment, a.address, peer.address) == 1


# --- the wallet sequencer ---------------------------------------------------------------


def approve(request_id: str) -> SubmitRequest:
    return SubmitRequest(request_id, (TxIntent(SendKind.APPROVE),))


async def test_sequencer_continued_as_new_mid_stream_keeps_nonces_contiguous_and_answers_repeats(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account: LocalAccount = await new_account()
    node_id = f"w-{uuid.uuid4().hex[:8]}"
    workflow_id = ids.sequencer_workflow_id(deployment.chain_id, account.address)
    first_nonce = await anvil_w3.eth.get_transaction_count(account.address)
    # A batch costs ~15 events (update, sign, broadcast): the sequencer is cut every few.
    monkeypatch.setattr(workflows.sequencer, "MAX_HISTORY_EVENTS", 60)
    # The submitter channel workflows use (its activity, run here without a worker).
    submitter = SequencerClientActivities(
        temporal_client, node_id, deployment.chain_id, account.address
    )
    answers: dict[str, SubmitResult] = {}

    async def submit(request_id: str) -> SubmitResult:
        return await ActivityEnvironment().run(submitter.submit_transactions, approve(request_id))

    async def stream(name: str, count: int) -> None:
        for i in range(count):
            request_id = f"{name}/{i}"
            answers[request_id] = await submit(request_id)

    async with AsyncExitStack() as stack:
        context = ChainContext(node_id, anvil_w3, account, deployment, SETTLE_TIMEOUT)
        for worker in build_workers(temporal_client, context):
            await stack.enter_async_context(worker)
        answers["first"] = await submit("first")
        run_id = (await temporal_client.get_workflow_handle(workflow_id).describe()).run_id
        # Two submitters at once, as two channel workflows would be.
        await asyncio.wait_for(asyncio.gather(stream("x", 12), stream("y", 12)), timeout=40)
        current = await assert_continued(temporal_client, workflow_id, run_id)
        # Cut at least twice while both streams were submitting: each spans several runs.
        runs = [taken for _, taken in await accepted_per_run(temporal_client, workflow_id, run_id)]
        assert len(runs) >= 3, runs
        for name in ("x", "y"):
            assert sum(any(r.startswith(f"{name}/") for r in run) for run in runs) >= 2, runs

        # A repeat of the very first submission (a submitter retried after a crash) is
        # answered with the first answer, carried across every cut, and takes no nonce.
        handle = temporal_client.get_workflow_handle(workflow_id)
        assert (await handle.describe()).run_id == current
        params = await started_with(temporal_client, workflow_id, current, SequencerParams)
        assert "first" in dict(params.remembered)
        assert await submit("first") == answers["first"]
        answers["last"] = await submit("last")

    nonces = sorted(tx.nonce for result in answers.values() for tx in result.txs)
    assert nonces == list(range(first_nonce, first_nonce + len(answers)))
    (last_tx,) = answers["last"].txs
    assert last_tx.nonce == first_nonce + len(answers) - 1

    # Every one of them mined, and nothing else was sent from the wallet: no nonce
    # reused (a repeat broadcast again), none skipped (a filler), none sent twice.
    async def all_mined() -> bool:
        mined = await anvil_w3.eth.get_transaction_count(account.address, "latest")
        return mined == first_nonce + len(answers)

    await until(all_mined, what="every submission mined")
    for result in answers.values():
        (tx,) = result.txs
        receipt = await anvil_w3.eth.get_transaction_receipt(tx.tx_hash)
        assert receipt["status"] == 1


async def started_with(
    client: Client, workflow_id: str, run_id: str, params_type: type[Params]
) -> Params:
    """The params a run was started (continued as new) with."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        (params,) = await client.data_converter.decode(payloads, [params_type])
        return params
    raise AssertionError(f"{workflow_id} run {run_id} has no history")
