"""What a new run costs the Temporal server per peer, on the real dev server and anvil: the
balance read is a local activity (a marker), the receipt wait reads the pair itself, READY
arms the keeper's timer instead of reading at once, so a peer takes three activities (submit,
wait, tell the connector) and three stage upserts. The history replays in the full sandbox."""

from __future__ import annotations

import json
import secrets
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest
from eth_account import Account
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Replayer
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.rpc import connect_rpc
from activities.token_network import Deployment
from connector.devstack import free_port
from tests.chaos.rpc_gate import RpcGate
from tests.chaos.workflow_history import wait_for_pending
from tests.integration.provisioning_node import Node
from workflows import channel, ids
from workflows.channel import PATCH_FEWER_ROUND_TRIPS, PATCH_SIGNALS_LAST, ChannelWorkflow


async def test_a_peer_takes_three_activities_and_a_local_read_and_replays(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    node = Node(f"trips-{uuid.uuid4().hex[:8]}", await new_account(), temporal_client)
    partner = random_address()
    async with AsyncExitStack() as stack:
        await node.start(stack, anvil_w3, deployment, {"p": partner})
        await node.provisioner.peer_connected("p")
        await node.wait_for_stage("p", "READY")
        history = await node.handle("p").fetch_history()

    activities, markers, stages = [], [], []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if ids.STAGE.name in fields.indexed_fields:
                stages.append(json.loads(fields.indexed_fields[ids.STAGE.name].data))
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            data = json.loads(marker.details[_MARKER_DATA[marker.marker_name]].payloads[0].data)
            markers.append(data.get("id") or data.get("activity_type"))
    assert activities == [ids.SUBMIT_TRANSACTIONS, ids.WAIT_FOR_RECEIPTS, ids.MARK_SETTLEMENT_READY]
    assert markers == [PATCH_FEWER_ROUND_TRIPS, PATCH_SIGNALS_LAST, ids.READ_CHAIN_STATE]
    # Each upsert costs the server a visibility write: not the starter's CHECKING_CONFIG again.
    assert stages == ["CHECKING_BALANCES", "OPENING", "READY"]
    types = {event.event_type for event in history.events}
    assert EventType.EVENT_TYPE_TIMER_STARTED in types  # the keeper's, a check interval out

    replayer = Replayer(workflows=[ChannelWorkflow], data_converter=temporal_client.data_converter)
    await replayer.replay_workflow(history)


def random_address() -> str:
    return Account.from_key(secrets.token_bytes(32)).address


# Where each kind of marker keeps its JSON: a patch its id, a local activity its type.
_MARKER_DATA = {"core_patch": "patch-data", "core_local_activity": "data"}


async def test_a_balance_read_the_node_does_not_answer_in_time_becomes_an_activity(
    temporal_client: Client,
    anvil,
    deployment: Deployment,
    new_account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A local activity holds its workflow task (and a stopping worker) while it runs: past
    # its bound, the read is retried as an activity, with heartbeats, for as long as it takes.
    monkeypatch.setattr(channel, "LOCAL_READ_TIMEOUT", timedelta(milliseconds=500))
    node = Node(f"slow-{uuid.uuid4().hex[:8]}", await new_account(), temporal_client)
    partner = random_address()
    gate = RpcGate(anvil.url)
    await gate.start()
    w3 = await connect_rpc(gate.url)
    try:
        async with AsyncExitStack() as stack:
            await node.start(stack, w3, deployment, {"p": partner})
            gate.hold("eth_call")
            await node.provisioner.peer_connected("p")
            await wait_for_pending(
                temporal_client, node.handle("p").id, ids.READ_CHAIN_STATE, lambda _: True
            )
            gate.release("eth_call")
            await node.wait_for_stage("p", "READY")
            history = await node.handle("p").fetch_history()
    finally:
        await w3.provider.disconnect()
        await gate.close()
    activities = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert activities[0] == ids.READ_CHAIN_STATE
    assert activities[1:] == [
        ids.SUBMIT_TRANSACTIONS,
        ids.WAIT_FOR_RECEIPTS,
        ids.MARK_SETTLEMENT_READY,
    ]


async def test_a_balance_read_on_a_node_that_is_down_goes_on_as_an_activity(
    temporal_client: Client, deployment: Deployment, new_account
) -> None:
    # The local activity's last failure (connection refused) must not fail the run: once its
    # attempts are spent, the read is an activity retried with backoff until the node is up.
    node = Node(f"down-{uuid.uuid4().hex[:8]}", await new_account(), temporal_client)
    down = AsyncWeb3(AsyncHTTPProvider(f"http://127.0.0.1:{free_port()}"))
    try:
        async with AsyncExitStack() as stack:
            await node.start(stack, down, deployment, {"p": random_address()})
            await node.provisioner.peer_connected("p")
            pending = await wait_for_pending(
                temporal_client,
                node.handle("p").id,
                ids.READ_CHAIN_STATE,
                lambda activity: activity.attempt > 1,
            )
            description = await node.handle("p").describe()
            assert description.status is WorkflowExecutionStatus.RUNNING
            assert "Cannot connect" in str(pending.last_failure)
            await node.handle("p").terminate(reason="test: done")
    finally:
        await down.provider.disconnect()
