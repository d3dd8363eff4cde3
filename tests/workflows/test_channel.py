"""ChannelWorkflow's keeper on the time-skipping test server, with real chain activities on a
real anvil and a real claim store: timers of hours (the keeper's check, the idle period) pass
in seconds, the settle window (blocks) is mined through with `anvil_mine`."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from eth_account import Account
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import ChannelState, Deployment
from connector.devstack import temporal_test_server_binary
from tests.integration.keeper_node import (
    SETTLE_TIMEOUT,
    TARGET,
    KeeperNode,
    deposit,
    mine,
    until,
)
from workflows import ids
from workflows.messages import ChannelStatus

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@pytest.fixture
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One test server per test (it starts in about 0.1 s): skipped time and leftover
    workflows of one test never reach another."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server_binary()),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in ids.SEARCH_ATTRIBUTE_KEYS
            },
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


def node_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def our_deposit(w3: AsyncWeb3, deployment: Deployment, channel_id: str, address: str) -> int:
    return (await tn.get_participant(w3, deployment, channel_id, address)).deposit


async def test_top_up_on_the_hourly_check_and_at_once_on_the_top_up_signal(
    skipping_env: WorkflowEnvironment,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
) -> None:
    node = KeeperNode(node_id("topup"), await new_account(), skipping_env.client)
    partner = Account.from_key(secrets.token_bytes(32)).address
    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": partner},
            tmp_path,
            top_up_below=TARGET // 2,
            keep_check_seconds=HOUR.total_seconds(),
            idle_close_seconds=0,
        )
        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        assert channel_id is not None
        address = node.account.address

        # Our claims move 6/10 of the deposit to the partner: 4/10 remain, below 1/2.
        await node.pay("b", channel_id, 6 * TARGET // 10)
        await skipping_env.sleep(HOUR - timedelta(minutes=2))
        assert await our_deposit(anvil_w3, deployment, channel_id, address) == TARGET
        # The hourly check: the total rises by what restores the target remaining.
        await skipping_env.sleep(timedelta(minutes=4))
        expected = TARGET + 6 * TARGET // 10
        await until(
            lambda: _deposit_is(anvil_w3, deployment, channel_id, address, expected),
            what="top-up on the keeper's check",
        )
        status = await _until_status(node, lambda s: s.our_deposit == str(expected))
        assert status.stage == "READY"
        await node.wait_for_view("b", lambda view: view.our_deposit == expected)  # told

        # The top_up signal checks at once, without waiting for the next hour.
        await node.pay("b", channel_id, 14 * TARGET // 10)  # 2/10 of the target remain
        await node.handle("b").signal(ids.SIGNAL_TOP_UP)
        expected += TARGET - 2 * TARGET // 10
        await until(
            lambda: _deposit_is(anvil_w3, deployment, channel_id, address, expected),
            what="top-up on the signal",
        )


async def test_idle_channel_closes_after_the_idle_period_and_settles_after_the_window(
    skipping_env: WorkflowEnvironment,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
) -> None:
    a, b = await new_account(), await new_account()
    node = KeeperNode(node_id("idle"), a, skipping_env.client)
    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": b.address},
            tmp_path,
            idle_close_seconds=timedelta(hours=24).total_seconds(),
            keep_check_seconds=timedelta(hours=6).total_seconds(),
            seconds_per_block=12.0,
        )
        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        assert channel_id is not None
        their_deposit = 4 * 10**18
        await deposit(anvil_w3, deployment, b, channel_id, their_deposit)
        # The partner paid us 1.5 M2M by its claim (and we paid it 0.5 by ours, which only
        # counts on-chain if the partner submits it: it runs no keeper here).
        partner = KeeperNode("partner", b, skipping_env.client)
        partner.domain = node.domain
        received = partner.sign(channel_id, 3, 15 * 10**17)
        await node.receive("b", received)
        await node.pay("b", channel_id, 5 * 10**17)
        before = {
            x: await tn.token_balance(anvil_w3, deployment, x) for x in (a.address, b.address)
        }

        # The keeper sees these claims move at its 6-hour check; a day after that without
        # any claim moving, it closes.
        await skipping_env.sleep(timedelta(hours=29))
        assert (await node.status("b")).stage == "READY"
        await skipping_env.sleep(timedelta(hours=2))
        status = await node.wait_for_stage("b", "SETTLE_WINDOW")
        assert status.closing == "unilateral (idle)"
        await node.wait_for_view("b", lambda view: view.stage in ("CLOSING", "SETTLE_WINDOW"))
        info = await tn.get_channel(anvil_w3, deployment, channel_id)
        assert info.state is ChannelState.CLOSED and info.closing_participant == a.address
        side = await tn.get_participant(anvil_w3, deployment, channel_id, b.address)
        assert (side.nonce, side.transferred_amount) == (3, received.transferred_amount)
        assert status.settle_block == info.settle_block

        # The window is in blocks: mine through it; the keeper's timer settles on its own.
        await mine(anvil_w3, SETTLE_TIMEOUT + 1)
        final = await node.handle("b").result()
    assert final.stage == "SETTLED"
    assert final.payout is not None and not final.payout.cooperative
    ours = TARGET + received.transferred_amount
    theirs = their_deposit - received.transferred_amount
    assert (int(final.payout.our_amount), int(final.payout.their_amount)) == (ours, theirs)
    after = {x: await tn.token_balance(anvil_w3, deployment, x) for x in (a.address, b.address)}
    assert after[a.address] - before[a.address] == ours
    assert after[b.address] - before[b.address] == theirs
    info = await tn.get_channel(anvil_w3, deployment, channel_id)
    assert info.state is ChannelState.SETTLED


async def _deposit_is(
    w3: AsyncWeb3, deployment: Deployment, channel_id: str, address: str, total: int
) -> bool:
    return await our_deposit(w3, deployment, channel_id, address) == total


async def _until_status(node: KeeperNode, check, timeout: float = 30.0) -> ChannelStatus:
    status = await node.status("b")

    async def reached() -> bool:
        nonlocal status
        status = await node.status("b")
        return check(status)

    await until(reached, timeout, "status")
    return status
