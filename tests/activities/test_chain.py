"""ChainActivities on a real anvil, run as activities (ActivityEnvironment)."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from aiohttp import web
from eth_account import Account
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.chain import ChainActivities, _call_error
from activities.errors import classify
from activities.rpc import connect_rpc
from activities.token_network import Deployment
from tests.chaos.rpc_gate import RpcGate
from workflows.messages import ReadChainStateInput, SignedTx, SignInput, WaitForReceiptsInput
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


async def test_a_transaction_the_node_lost_is_broadcast_again_while_its_receipt_is_awaited(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    # Broadcast, then the RPC node restarted with an empty mempool: nothing of the tx is left
    # but its signed bytes in the sequencer's history (here: signed and never sent). Waiting
    # for its receipt sends those bytes again, instead of waiting for a tx that never comes.
    account = await new_account(m2m=0)
    chain = ChainActivities(anvil_w3, account, deployment, settle_timeout=40)
    env = ActivityEnvironment()
    nonce = await anvil_w3.eth.get_transaction_count(account.address, "pending")
    signed = await env.run(chain.sign_transactions, SignInput((TxIntent(SendKind.APPROVE),), nonce))
    async with asyncio.timeout(20):
        mined = await env.run(chain.wait_for_receipts, WaitForReceiptsInput(tuple(signed)))
    assert mined.reverted == ()
    receipt = await anvil_w3.eth.get_transaction_receipt(signed[0].tx_hash)
    assert (receipt["status"], await anvil_w3.eth.get_transaction_count(account.address)) == (
        1,
        nonce + 1,
    )


async def test_broadcast_batch_counts_a_repeat_as_sent_and_names_a_refusal(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account()
    chain = ChainActivities(anvil_w3, account, deployment, settle_timeout=40)
    env = ActivityEnvironment()
    partner = Account.from_key(secrets.token_bytes(32)).address
    nonce = await anvil_w3.eth.get_transaction_count(account.address, "pending")
    intents = (
        TxIntent(SendKind.APPROVE),
        TxIntent(SendKind.OPEN_CHANNEL, partner=partner),
    )
    signed = await env.run(chain.sign_transactions, SignInput(intents, nonce))
    # Sent in one JSON-RPC batch; sent again (a retried broadcast): the node already has
    # them (or mined them), which is success, not a refusal.
    for _ in range(2):
        outcomes = await env.run(chain.broadcast_transactions, signed)
        assert [(o.nonce, o.error) for o in outcomes] == [(nonce, None), (nonce + 1, None)]
    # Other bytes for a nonce already mined: refused, with the node's reason.
    await env.run(chain.wait_for_receipts, WaitForReceiptsInput(tuple(signed)))
    tx = account.sign_transaction(
        {
            "to": account.address,
            "value": 1,
            "gas": 21_000,
            "nonce": nonce,
            "chainId": deployment.chain_id,
            **await tn.fee_fields(anvil_w3),
        }
    )
    other = SignedTx(
        intent=TxIntent(SendKind.APPROVE),
        nonce=nonce,
        tx_hash="0x" + tx.hash.hex().removeprefix("0x"),
        raw="0x" + tx.raw_transaction.hex().removeprefix("0x"),
    )
    (refused,) = await env.run(chain.broadcast_transactions, [other])
    assert refused.error is not None and "nonce" in refused.error.lower()


async def test_receipt_wait_reads_the_pair_once_everything_mined(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account()
    chain = ChainActivities(anvil_w3, account, deployment, settle_timeout=40)
    env = ActivityEnvironment()
    partner = Account.from_key(secrets.token_bytes(32)).address
    before = await env.run(chain.read_chain_state, ReadChainStateInput(partner))
    assert before.channel is None
    intents = (
        TxIntent(SendKind.APPROVE),
        TxIntent(SendKind.OPEN_CHANNEL, partner=partner),
        TxIntent(
            SendKind.SET_TOTAL_DEPOSIT,
            channel_id=before.next_channel_id,
            partner=partner,
            total_deposit=10**18,
        ),
    )
    nonce = await anvil_w3.eth.get_transaction_count(account.address, "pending")
    signed = await env.run(chain.sign_transactions, SignInput(intents, nonce))
    await env.run(chain.broadcast_transactions, signed)
    mined = await env.run(
        chain.wait_for_receipts,
        WaitForReceiptsInput(tuple(signed), read_after=ReadChainStateInput(partner)),
    )
    assert mined.reverted == ()
    assert mined.state is not None and mined.state.channel is not None
    assert mined.state.channel.channel_id == before.next_channel_id
    assert (mined.state.channel.our_deposit, mined.state.allowance) == (10**18, 2**256 - 1)
    # Without `read_after` the wait only waits.
    assert (
        await env.run(chain.wait_for_receipts, WaitForReceiptsInput(tuple(signed)))
    ).state is None


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        ({"code": 3, "message": "execution reverted", "data": "0x1234"}, False),
        ({"code": -32603, "message": "EVM error: Revert"}, False),
        ({"code": -32005, "message": "rate limited"}, True),
        ("upstream connect error", True),
    ],
)
def test_a_failed_batched_view_is_retried_unless_it_reverted(error: object, retried: bool) -> None:
    mapped = classify(_call_error(error))
    assert isinstance(mapped, ApplicationError) is not retried
    if not retried:
        assert isinstance(mapped, ApplicationError) and mapped.non_retryable


class NoBatchNode(RpcGate):
    """A JSON-RPC forwarder to anvil for a node that takes no batches: a batch is refused as
    a whole (HTTP 400, or one error object), single calls are forwarded unchanged."""

    def __init__(self, upstream: str, refusal: str) -> None:
        super().__init__(upstream)
        self.refusal = refusal
        self.singles = 0
        self.refused = 0

    async def __aenter__(self) -> NoBatchNode:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _forward(self, request: web.Request) -> web.Response:
        if isinstance(json.loads(await request.read()), list):
            self.refused += 1
            if self.refusal == "status":
                return web.Response(status=400, text="batch requests are not supported")
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}}
            return web.json_response(error)
        self.singles += 1
        return await super()._forward(request)


@pytest.mark.parametrize("refusal", ["status", "error object"])
async def test_a_node_without_batches_gets_every_call_one_by_one(
    refusal: str, anvil, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account()
    partner = Account.from_key(secrets.token_bytes(32)).address
    env = ActivityEnvironment()
    async with NoBatchNode(anvil.url, refusal) as node:
        w3 = await connect_rpc(node.url)
        try:
            chain = ChainActivities(w3, account, deployment, settle_timeout=40)
            before = await env.run(chain.read_chain_state, ReadChainStateInput(partner))
            intents = (
                TxIntent(SendKind.APPROVE),
                TxIntent(SendKind.OPEN_CHANNEL, partner=partner),
            )
            nonce = await w3.eth.get_transaction_count(account.address, "pending")
            signed = await env.run(chain.sign_transactions, SignInput(intents, nonce))
            outcomes = await env.run(chain.broadcast_transactions, signed)
            mined = await env.run(
                chain.wait_for_receipts,
                WaitForReceiptsInput(tuple(signed), read_after=ReadChainStateInput(partner)),
            )
        finally:
            await w3.provider.disconnect()
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert mined.reverted == ()
    assert mined.state is not None and mined.state.channel is not None
    assert mined.state.channel.channel_id == before.next_channel_id
    assert node.refused >= 3 and node.singles > 0  # views, broadcast and receipts fell back
