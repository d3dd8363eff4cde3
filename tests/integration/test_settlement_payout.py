"""The ledger after a settle agrees with what moved on-chain, on the real Temporal dev server and
real anvil, when a claim we sent was never acknowledged.

A claim we sent and the peer never acknowledged is not credited to the peer's balance; the
peer may still hold it (its acknowledgement was lost) and close the channel with it, and then
the money moved. Each case: our keeper (a real workflow) settles the channel the partner
closed with one of our claims; the settled notification resolves the waiting claim against
the payout (connector.payout): used, it is acknowledged and credited; not, it is void.
(The cooperative case: tests/connector/test_payout.py, as a table.)
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.client import Client
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import Deployment
from tests.integration.keeper_node import SETTLE_TIMEOUT, TARGET, KeeperNode, mine
from workflows.provisioning.keeping import NON_CLOSER_GRACE_BLOCKS

pytestmark = pytest.mark.integration

M2M = 10**18


def claim_states(node: KeeperNode) -> dict[int, int]:
    """nonce -> acknowledged column of our sent claims (0 waiting, 1 acknowledged, 2 void)."""
    with sqlite3.connect(node.claims_path) as connection:
        rows = connection.execute(
            "SELECT nonce, acknowledged FROM claims WHERE direction = 'sent'"
        ).fetchall()
    return {int(nonce): state for nonce, state in rows}


@pytest.mark.parametrize(
    ("closed_with", "states", "credited"),
    [
        # The unacknowledged claim was used: its amount moved, so it is credited now.
        (3, {1: 1, 2: 1, 3: 1}, 5 * M2M),
        # The acknowledged one was used: the pending claim is void, nothing more credited.
        (2, {1: 1, 2: 1, 3: 2}, 3 * M2M),
        # An older one than we were credited for: the partner's own loss (it stored and
        # counted the newest), so the ledger keeps counting what both ends counted.
        (1, {1: 1, 2: 1, 3: 2}, 3 * M2M),
    ],
    ids=["pending-claim-used", "acknowledged-claim-used", "older-claim-used"],
)
async def test_settled_payout_reconciles_the_unacknowledged_claim_with_the_ledger(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    closed_with: int,
    states: dict[int, int],
    credited: int,
) -> None:
    a, b = await new_account(), await new_account()
    node = KeeperNode(f"a-{uuid.uuid4().hex[:8]}", a, temporal_client)
    async with AsyncExitStack() as stack:
        await node.start(
            stack,
            anvil_w3,
            deployment,
            {"b": b.address},
            tmp_path,
            keep_check_seconds=1.0,
            seconds_per_block=0.2,
            idle_close_seconds=0,
        )
        await node.provisioner.peer_connected("b")
        channel_id = (await node.wait_for_stage("b", "READY")).channel_id
        assert channel_id is not None
        # Two claims acknowledged (credited 3 M2M), the third sent but never acknowledged.
        ours = [await node.pay("b", channel_id, amount * M2M) for amount in (1, 3)]
        pending = node.sign(channel_id, 3, 5 * M2M)
        await node.claims.record_sent("b", pending, 2 * M2M)
        ours.append(pending)
        assert node.claims.pending_sent("b", channel_id) is not None
        assert node.ledger.snapshot("b").balance == 3 * M2M

        # The partner closes with one of our claims, straight on-chain.
        used = ours[closed_with - 1]
        await tn.send_and_wait(
            anvil_w3,
            b,
            tn.build_close_channel(
                deployment, channel_id, used.balance_proof(), used.signature_bytes
            ),
        )
        await node.wait_for_stage("b", "SETTLE_WINDOW")
        await mine(anvil_w3, SETTLE_TIMEOUT + 1 + NON_CLOSER_GRACE_BLOCKS)
        final = await node.handle("b").result()  # ends once the connector was told

    assert final.payout is not None
    assert TARGET - int(final.payout.our_amount) == used.transferred_amount  # paid to b
    # No claim waits any more, and the peer's balance counts the claims it could use.
    assert node.ledger.snapshot("b").balance == credited
    assert node.claims.pending_sent("b") is None
    assert claim_states(node) == states
