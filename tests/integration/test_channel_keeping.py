"""Closing and settling channels on the real Temporal dev server and real anvil, with real
claim stores and (for the cooperative settle) real connectors talking BTP.

What is checked each time: the payout each side's settle event records equals what its token
balance gained, equals what the claims on-chain say (deposit - own transfers + partner's
transfers), and the two payouts add up to exactly what the channel held. Over BTP, each
workflow's close telemetry (CHANNEL_CLOSING / CHANNEL_CLOSED / CHANNEL_SETTLED) is logged once.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import ChannelState, Deployment
from connector.config import parse_config
from connector.cooperative_settle import CooperativeSettleService
from connector.devstack import free_port
from connector.node import ConnectorNode
from tests.integration.keeper_node import (
    SETTLE_TIMEOUT,
    TARGET,
    KeeperNode,
    deposit,
    mine,
    until,
)
from worker.run import ChainContext
from workflows import ids
from workflows.messages import ChannelStatus, CloseChannel
from workflows.provisioning.keeping import NON_CLOSER_GRACE_BLOCKS
from workflows.provisioning.transition import CHANNEL_CLOSED, CHANNEL_CLOSING, CHANNEL_SETTLED

pytestmark = pytest.mark.integration

M2M = 10**18
# Fast keeping for tests: the keeper reads every second; blocks are mined by the test.
FAST = {"keep_check_seconds": 1.0, "seconds_per_block": 0.2, "idle_close_seconds": 0}


async def balances(w3: AsyncWeb3, deployment: Deployment, *accounts: LocalAccount) -> list[int]:
    return [await tn.token_balance(w3, deployment, a.address) for a in accounts]


async def tx_count(w3: AsyncWeb3, account: LocalAccount) -> int:
    return await w3.eth.get_transaction_count(account.address)


def close_telemetry(caplog: pytest.LogCaptureFixture, workflow_id: str) -> list[tuple[str, str]]:
    """(event, detail) of the close telemetry one channel workflow logged, in order."""
    return [
        (record.event, record.args[2])
        for record in caplog.records
        if getattr(record, "event", None) in (CHANNEL_CLOSING, CHANNEL_CLOSED, CHANNEL_SETTLED)
        and record.temporal_workflow["workflow_id"] == workflow_id
    ]


def assert_payout(status: ChannelStatus, ours: int, theirs: int, *, cooperative: bool) -> None:
    assert status.stage == "SETTLED"
    payout = status.payout
    assert payout is not None and payout.cooperative is cooperative
    assert (int(payout.our_amount), int(payout.their_amount)) == (ours, theirs)


async def test_stale_partner_close_is_answered_by_update_and_settled_once_across_a_restart(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
) -> None:
    a, b = await new_account(), await new_account()
    node = KeeperNode(f"a-{uuid.uuid4().hex[:8]}", a, temporal_client)
    async with AsyncExitStack() as stack:
        first_workers = AsyncExitStack()
        await node.start(
            stack, anvil_w3, deployment, {"b": b.address}, tmp_path, workers=first_workers, **FAST
        )
        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        assert channel_id is not None
        await deposit(anvil_w3, deployment, b, channel_id, TARGET)
        partner = KeeperNode("b", b, temporal_client)
        partner.domain = node.domain
        ours = [await node.pay("b", channel_id, amount * M2M) for amount in (1, 2, 3)]
        theirs = [partner.sign(channel_id, nonce, amount) for nonce, amount in ((1, M2M // 2),)]
        theirs.append(partner.sign(channel_id, 2, 3 * M2M // 2))
        for claim in theirs:
            await node.receive("b", claim)
        before = await balances(anvil_w3, deployment, a, b)
        sent_before = await tx_count(anvil_w3, a)

        # The partner closes with an old proof of ours (nonce 1 of 3), bypassing any keeper.
        stale = ours[0]
        await tn.send_and_wait(
            anvil_w3,
            b,
            tn.build_close_channel(
                deployment, channel_id, stale.balance_proof(), stale.signature_bytes
            ),
        )
        # Our keeper answers within the window with the partner's best claim to us.
        window = await node.wait_for_stage("b", "SETTLE_WINDOW")
        assert window.settle_block is not None
        await node.wait_for_view("b", lambda view: view.stage == "SETTLE_WINDOW")  # no claims

        async def updated() -> bool:
            side = await tn.get_participant(anvil_w3, deployment, channel_id, b.address)
            return (side.nonce, side.transferred_amount) == (2, theirs[-1].transferred_amount)

        await until(updated, what="updateNonClosingBalanceProof with nonce 2")

        # The worker dies mid-window; a new one picks the workflow up and settles it once.
        await first_workers.aclose()
        await node.start_workers(stack, anvil_w3, deployment)
        # The closer (which runs no keeper here) had its turn; we settle a few blocks on.
        await mine(anvil_w3, SETTLE_TIMEOUT + 1 + NON_CLOSER_GRACE_BLOCKS)
        final = await node.handle("b").result()
        after = await balances(anvil_w3, deployment, a, b)
        assert await tx_count(anvil_w3, a) - sent_before == 2  # the update and the settle

    expected_ours = TARGET - stale.transferred_amount + theirs[-1].transferred_amount
    expected_theirs = TARGET - theirs[-1].transferred_amount + stale.transferred_amount
    assert_payout(final, expected_ours, expected_theirs, cooperative=False)
    assert [after[0] - before[0], after[1] - before[1]] == [expected_ours, expected_theirs]
    assert expected_ours + expected_theirs == 2 * TARGET
    assert (await tn.get_channel(anvil_w3, deployment, channel_id)).state is ChannelState.SETTLED
    assert node.registry.view("b").stage == "SETTLED"


def btp_config(
    node_id: str, port: int, peer_id: str, peer_address: str, peer_port: int | None, tmp: Path
):
    url = f"\n    url: ws://127.0.0.1:{peer_port}" if peer_port else ""
    return parse_config(
        f"""
nodeId: {node_id}
ilpAddress: g.{node_id}
btpServerPort: {port}
ledgerPath: {tmp / (node_id + "-node.sqlite3")}
peers:
  - id: {peer_id}{url}
    authToken: keeper-test-link-token
    evmAddress: "{peer_address}"
""",
        environ={},
    )


async def linked_keepers(
    stack: AsyncExitStack,
    client: Client,
    w3: AsyncWeb3,
    deployment: Deployment,
    accounts: tuple[LocalAccount, LocalAccount],
    tmp: Path,
    *,
    partner_answers: bool = True,
) -> tuple[KeeperNode, KeeperNode]:
    """Two keepers whose connectors are linked over BTP (a dials b), both channels READY.
    With `partner_answers` false, b's connector has no cooperative-settle handler: it answers
    a proposal with a BTP Error, as a connector that declines would."""
    suffix = uuid.uuid4().hex[:8]
    ids_ = (f"a-{suffix}", f"b-{suffix}")
    ports = (free_port(), free_port())
    keepers = tuple(KeeperNode(i, acct, client) for i, acct in zip(ids_, accounts, strict=True))
    for me in (0, 1):
        keeper, other = keepers[me], keepers[1 - me]
        connector = ConnectorNode(
            btp_config(
                keeper.node_id,
                ports[me],
                other.node_id,
                other.account.address,
                ports[1] if me == 0 else None,
                tmp,
            )
        )
        context = ChainContext(keeper.node_id, w3, keeper.account, deployment, SETTLE_TIMEOUT)

        async def chain_ready(context: ChainContext = context) -> ChainContext:
            return context

        service = CooperativeSettleService(connector, keeper.registry, chain_ready)
        if me == 0 or partner_answers:
            service.register()
        await keeper.start(
            stack,
            w3,
            deployment,
            {other.node_id: other.account.address},
            tmp,
            cooperative=service,
            **FAST,
        )
        service.claims = keeper.claims
        await stack.enter_async_context(connector)
    a, b = keepers
    await a.provisioner.peer_connected(b.node_id)
    await b.provisioner.peer_connected(a.node_id)
    channel_id = (await a.wait_for_stage(b.node_id, "READY")).channel_id
    assert (await b.wait_for_stage(a.node_id, "READY")).channel_id == channel_id
    return a, b


async def test_cooperative_settle_over_btp_pays_the_claims_in_one_transaction(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    a, b = await new_account(), await new_account()
    async with AsyncExitStack() as stack:
        node_a, node_b = await linked_keepers(
            stack, temporal_client, anvil_w3, deployment, (a, b), tmp_path
        )
        channel_id = (await node_a.status(node_b.node_id)).channel_id
        # Each side pays the other by claims, each stored by both ends.
        for amount in (1, 3):
            claim = await node_a.pay(node_b.node_id, channel_id, amount * M2M)
            await node_b.receive(node_a.node_id, claim)
        claim = await node_b.pay(node_a.node_id, channel_id, 2 * M2M)
        await node_a.receive(node_b.node_id, claim)
        before = await balances(anvil_w3, deployment, a, b)
        sent_before = [await tx_count(anvil_w3, x) for x in (a, b)]

        await node_a.handle(node_b.node_id).signal(ids.SIGNAL_CLOSE, CloseChannel(cooperative=True))
        final_a = await node_a.handle(node_b.node_id).result()
        # The partner's keeper records the settlement on its next read and ends too.
        final_b = await node_b.handle(node_a.node_id).result()
        after = await balances(anvil_w3, deployment, a, b)
        sent = [await tx_count(anvil_w3, x) - n for x, n in zip((a, b), sent_before, strict=True)]

    ours, theirs = TARGET - 3 * M2M + 2 * M2M, TARGET - 2 * M2M + 3 * M2M
    assert_payout(final_a, ours, theirs, cooperative=True)
    assert_payout(final_b, theirs, ours, cooperative=True)
    assert final_a.closing == "cooperative (operator)"
    assert [after[0] - before[0], after[1] - before[1]] == [ours, theirs]
    assert ours + theirs == 2 * TARGET
    assert sent == [1, 0]  # one cooperativeSettle, no close, no settle window
    assert close_telemetry(caplog, node_a.handle(node_b.node_id).id) == [
        (CHANNEL_CLOSING, f"{channel_id} cooperative (operator)"),
        (CHANNEL_SETTLED, f"{channel_id} ours={ours} theirs={theirs} cooperative"),
    ]
    assert close_telemetry(caplog, node_b.handle(node_a.node_id).id) == [
        (CHANNEL_SETTLED, f"{channel_id} ours={theirs} theirs={ours} cooperative"),
    ]


async def test_declined_cooperative_settle_closes_unilaterally_and_both_keepers_settle(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    a, b = await new_account(), await new_account()
    async with AsyncExitStack() as stack:
        node_a, node_b = await linked_keepers(
            stack, temporal_client, anvil_w3, deployment, (a, b), tmp_path, partner_answers=False
        )
        channel_id = (await node_a.status(node_b.node_id)).channel_id
        claim = await node_a.pay(node_b.node_id, channel_id, 4 * M2M)
        await node_b.receive(node_a.node_id, claim)
        for amount in (1, 2):
            claim = await node_b.pay(node_a.node_id, channel_id, amount * M2M)
            await node_a.receive(node_b.node_id, claim)
        before = await balances(anvil_w3, deployment, a, b)
        sent_before = [await tx_count(anvil_w3, x) for x in (a, b)]

        await node_a.handle(node_b.node_id).signal(ids.SIGNAL_CLOSE, CloseChannel(cooperative=True))
        # Declined: a closes with b's best claim; b's keeper answers with a's best claim.
        window = await node_a.wait_for_stage(node_b.node_id, "SETTLE_WINDOW")
        assert "cooperative settle refused" in (window.last_error or "")
        await node_b.wait_for_stage(node_a.node_id, "SETTLE_WINDOW")

        async def updated() -> bool:
            side = await tn.get_participant(anvil_w3, deployment, channel_id, a.address)
            return side.transferred_amount == 4 * M2M

        await until(updated, what="b's update with a's claim")
        await mine(anvil_w3, SETTLE_TIMEOUT + 1)
        # a closed, so a settles; b gives it a few blocks, then reads it settled.
        final_a = await node_a.handle(node_b.node_id).result()
        final_b = await node_b.handle(node_a.node_id).result()
        after = await balances(anvil_w3, deployment, a, b)
        sent = [await tx_count(anvil_w3, x) - n for x, n in zip((a, b), sent_before, strict=True)]

    ours, theirs = TARGET - 4 * M2M + 2 * M2M, TARGET - 2 * M2M + 4 * M2M
    assert_payout(final_a, ours, theirs, cooperative=False)
    assert_payout(final_b, theirs, ours, cooperative=False)
    assert [after[0] - before[0], after[1] - before[1]] == [ours, theirs]
    assert sent == [2, 1]  # a: close + settle; b: update. No second settle.
    assert close_telemetry(caplog, node_a.handle(node_b.node_id).id) == [
        (CHANNEL_CLOSING, f"{channel_id} cooperative (operator)"),
        (CHANNEL_CLOSED, f"{channel_id} by us"),
        (CHANNEL_SETTLED, f"{channel_id} ours={ours} theirs={theirs}"),
    ]
    assert close_telemetry(caplog, node_b.handle(node_a.node_id).id) == [
        (CHANNEL_CLOSED, f"{channel_id} by partner"),
        (CHANNEL_SETTLED, f"{channel_id} ours={theirs} theirs={ours}"),
    ]
