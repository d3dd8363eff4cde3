"""ChainActivities on a real anvil, run as activities (ActivityEnvironment)."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account
from temporalio.testing import ActivityEnvironment
from web3 import AsyncWeb3

from activities.chain import ChainActivities
from activities.token_network import Deployment
from workflows.messages import SignInput, WaitForReceiptsInput
from workflows.provisioning.commands import SendKind, TxIntent

pytestmark = pytest.mark.integration


async def test_revert_reason_is_that_of_the_sent_tx_not_a_rebuild_under_the_current_config(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    # Signed and sent by a worker configured with a settle timeout below the contract's
    # minimum; the receipt is awaited by a worker restarted with the corrected config.
    account = await new_account(m2m=0)
    misconfigured = ChainActivities(anvil_w3, account, deployment, settle_timeout=1)
    corrected = ChainActivities(anvil_w3, account, deployment, settle_timeout=40)
    env = ActivityEnvironment()
    partner = Account.from_key(secrets.token_bytes(32)).address
    nonce = await anvil_w3.eth.get_transaction_count(account.address, "pending")
    signed = await env.run(
        misconfigured.sign_transactions,
        SignInput((TxIntent(SendKind.OPEN_CHANNEL, partner=partner),), nonce),
    )
    outcomes = await env.run(misconfigured.broadcast_transactions, signed)
    assert [outcome.error for outcome in outcomes] == [None]
    mined = await env.run(corrected.wait_for_receipts, WaitForReceiptsInput(tuple(signed)))
    assert mined.reverted == ("open_channel: InvalidSettleTimeout",)
