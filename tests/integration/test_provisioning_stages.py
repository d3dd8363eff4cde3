"""Every provisioning stage on the real Temporal dev server and real anvil: SKIPPED,
AWAITING_FUNDS (left by a `retry` signal and by the durable timer alone), FAILED on a
deterministic revert, cancel in each stage followed by a new start that adopts what is on
chain, and 20 peers provisioning at once from one wallet on `anvil --block-time 1`."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities import token_network as tn
from activities.deployment import deploy
from activities.token_network import Deployment, GasLimit, build_mint, send_and_wait
from connector.devstack import ANVIL_KEYS, free_port, run_anvil
from tests.integration.provisioning_node import TARGET, TOKEN, Node
from workflows import ids

pytestmark = pytest.mark.integration

# Long enough that only a `retry` signal can end AWAITING_FUNDS within a test.
NO_TIMER = 3_600.0
# Approve + open + deposit: what the first batch of a fresh wallet may burn.
FIRST_BATCH_GAS = GasLimit.APPROVE + GasLimit.OPEN_CHANNEL + GasLimit.SET_TOTAL_DEPOSIT


def random_address() -> str:
    return Account.from_key(secrets.token_bytes(32)).address


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def mint(w3: AsyncWeb3, deployment: Deployment, to: str, amount: int) -> None:
    """Mint from a throwaway sender (the dev-chain faucet), so the treasury's nonces are only
    ever used by its sequencer."""
    sender = Account.from_key(secrets.token_bytes(32))
    await w3.provider.make_request("anvil_setBalance", [sender.address, hex(10**18)])
    await send_and_wait(w3, sender, build_mint(deployment, to, amount))


async def assert_one_channel_at_target(
    w3: AsyncWeb3, deployment: Deployment, ours: str, partner: str, channel_id: str | None
) -> None:
    assert await tn.get_pair_counter(w3, deployment, ours, partner) == 1
    onchain = await tn.get_channel_id(w3, deployment, ours, partner)
    assert onchain is not None and onchain == channel_id
    side = await tn.get_participant(w3, deployment, onchain, ours)
    assert side.deposit == TARGET


async def wait_cancelled(node: Node, peer_id: str) -> None:
    handle = node.handle(peer_id)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=15)
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED


async def nonces(w3: AsyncWeb3, address: str) -> tuple[int, int]:
    latest = await w3.eth.get_transaction_count(address, "latest")
    return latest, await w3.eth.get_transaction_count(address, "pending")


async def test_peer_without_evm_address_is_skipped_and_sends_nothing(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    node = Node(unique("skip"), await new_account(m2m=0), temporal_client)
    async with AsyncExitStack() as stack:
        await node.start(stack, anvil_w3, deployment, {"no-evm": None})
        await node.provisioner.peer_connected("no-evm")
        status = await node.wait_for_stage("no-evm", "SKIPPED")
        # The Temporal UI filters on the Stage search attribute; visibility lags a little.
        query = f'Stage = "SKIPPED" AND NodeId = "{node.node_id}"'
        listed: list[str] = []
        for _ in range(100):
            listed = [execution.id async for execution in temporal_client.list_workflows(query)]
            if listed:
                break
            await asyncio.sleep(0.1)
    assert listed == [ids.channel_workflow_id(node.node_id, "no-evm", TOKEN)]
    assert status.peer_address is None and status.channel_id is None
    assert status.our_deposit == "0" and status.shortfall is None
    assert await nonces(anvil_w3, node.account.address) == (0, 0)


async def test_short_of_eth_awaits_funds_then_retry_signal_provisions(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    caplog: pytest.LogCaptureFixture,
) -> None:
    have = 10**9
    account = await new_account()
    await anvil_w3.provider.make_request("anvil_setBalance", [account.address, hex(have)])
    sent_before = await nonces(anvil_w3, account.address)
    # Nothing mines until the workflow reads, so it sees these very fees.
    fee_per_gas = (await tn.fee_fields(anvil_w3))["maxFeePerGas"]
    peer = random_address()
    node = Node(unique("eth"), account, temporal_client)
    caplog.set_level(logging.WARNING, logger="temporalio.workflow")
    async with AsyncExitStack() as stack:
        await node.start(stack, anvil_w3, deployment, {"p": peer}, funds_recheck_seconds=NO_TIMER)
        await node.provisioner.peer_connected("p")
        waiting = await node.wait_for_stage("p", "AWAITING_FUNDS")
        eth_missing = FIRST_BATCH_GAS * fee_per_gas - have
        assert waiting.shortfall is not None
        assert waiting.shortfall.address == account.address
        assert waiting.shortfall.eth_missing == str(eth_missing)
        assert waiting.shortfall.token_missing == "0"
        logged = [r.getMessage() for r in caplog.records if "AWAITING_FUNDS" in r.getMessage()]
        assert any(
            f"fund {account.address} with {eth_missing} wei ETH and 0 wei M2M" in line
            for line in logged
        ), logged
        assert await nonces(anvil_w3, account.address) == sent_before

        await anvil_w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        await node.handle("p").signal(ids.SIGNAL_RETRY)
        ready = await node.wait_for_stage("p", "READY")
        view = await asyncio.wait_for(node.registry.wait_ready("p"), timeout=10)
    assert view.channel_id == ready.channel_id and ready.shortfall is None
    await assert_one_channel_at_target(
        anvil_w3, deployment, account.address, peer, ready.channel_id
    )


async def test_short_of_m2m_awaits_funds_then_the_timer_alone_provisions(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account(m2m=TARGET // 2)
    peer = random_address()
    node = Node(unique("m2m"), account, temporal_client)
    async with AsyncExitStack() as stack:
        await node.start(stack, anvil_w3, deployment, {"p": peer}, funds_recheck_seconds=1.0)
        await node.provisioner.peer_connected("p")
        waiting = await node.wait_for_stage("p", "AWAITING_FUNDS")
        assert waiting.shortfall is not None
        assert waiting.shortfall.token_missing == str(TARGET - TARGET // 2)
        assert waiting.shortfall.eth_missing == "0"
        # Still waiting after a timer round or two: the re-check reads the same shortfall.
        await asyncio.sleep(2.5)
        assert (await node.status("p")).stage == "AWAITING_FUNDS"

        await mint(anvil_w3, deployment, account.address, TARGET)
        ready = await node.wait_for_stage("p", "READY", timeout=10)
    await assert_one_channel_at_target(
        anvil_w3, deployment, account.address, peer, ready.channel_id
    )
    assert await tn.token_balance(anvil_w3, deployment, account.address) == TARGET // 2


async def test_deterministic_revert_fails_visibly_and_retry_resumes(
    temporal_client: Client, anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account()
    peer = random_address()
    node = Node(unique("revert"), account, temporal_client)
    async with AsyncExitStack() as stack:
        # Below the contract's minimum: every openChannel reverts InvalidSettleTimeout.
        misconfigured = await stack.enter_async_context(AsyncExitStack())
        await node.start(misconfigured, anvil_w3, deployment, {"p": peer}, settle_timeout=1)
        await node.provisioner.peer_connected("p")
        failed = await node.wait_for_stage("p", "FAILED")
        assert failed.last_error is not None and "InvalidSettleTimeout" in failed.last_error
        assert failed.channel_id is None or failed.our_deposit == "0"
        sent, _ = await nonces(anvil_w3, account.address)

        # The same revert again: a retry re-runs the sends and fails with the same reason.
        await node.handle("p").signal(ids.SIGNAL_RETRY)
        for _ in range(200):
            if (await nonces(anvil_w3, account.address))[0] > sent:
                break
            await asyncio.sleep(0.05)
        again = await node.wait_for_stage("p", "FAILED")
        assert again.last_error is not None and "InvalidSettleTimeout" in again.last_error

        # The operator fixes the config (workers restart) and retries: it provisions.
        await misconfigured.aclose()
        await node.start_workers(stack, anvil_w3, deployment)
        await node.handle("p").signal(ids.SIGNAL_RETRY)
        ready = await node.wait_for_stage("p", "READY")
    assert ready.last_error is None
    await assert_one_channel_at_target(
        anvil_w3, deployment, account.address, peer, ready.channel_id
    )


async def mine_manually(w3: AsyncWeb3, stack: AsyncExitStack) -> None:
    """Txs wait in the mempool until `evm_mine` (automine back on when `stack` closes), so
    OPENING and DEPOSITING can be caught with their batch broadcast but not mined."""

    async def automine() -> None:
        await w3.provider.make_request("evm_mine", [])
        await w3.provider.make_request("evm_setAutomine", [True])

    await w3.provider.make_request("evm_setAutomine", [False])
    stack.push_async_callback(automine)


async def wait_pending(w3: AsyncWeb3, address: str, count: int) -> None:
    for _ in range(300):
        latest, pending = await nonces(w3, address)
        if pending - latest >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{address}: {count} pending txs never appeared")


STAGES = ["CHECKING_BALANCES", "AWAITING_FUNDS", "OPENING", "DEPOSITING", "READY", "FAILED"]


@pytest.mark.parametrize("stage", STAGES)
async def test_cancel_in_each_stage_then_a_new_start_adopts_the_chain(
    stage: str,
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
) -> None:
    account = await new_account(m2m=0 if stage == "AWAITING_FUNDS" else TARGET * 2)
    partner = await new_account(m2m=0)
    node = Node(unique(f"cancel-{stage.lower()}"), account, temporal_client)
    ours = account.address
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(AsyncExitStack())
        manual = await stack.enter_async_context(AsyncExitStack())
        w3, settle_timeout = anvil_w3, 40
        if stage == "CHECKING_BALANCES":
            # The RPC node is down: the balance read retries (with backoff) until cancelled.
            w3 = AsyncWeb3(AsyncHTTPProvider(f"http://127.0.0.1:{free_port()}"))
            stack.push_async_callback(w3.provider.disconnect)
        if stage == "FAILED":
            settle_timeout = 1
        if stage == "DEPOSITING":
            # The partner opened the pair's channel first: we only have to deposit.
            await send_and_wait(anvil_w3, partner, tn.build_open_channel(deployment, ours, 40))
        await node.start(
            first,
            w3,
            deployment,
            {"p": partner.address},
            settle_timeout=settle_timeout,
            funds_recheck_seconds=NO_TIMER,
        )
        if stage in ("OPENING", "DEPOSITING"):
            await mine_manually(anvil_w3, manual)
        await node.provisioner.peer_connected("p")
        await node.wait_for_stage("p", stage)
        if stage in ("OPENING", "DEPOSITING"):
            # Cancel with the batch broadcast but not mined: approve + (open) + deposit.
            await wait_pending(anvil_w3, ours, 3 if stage == "OPENING" else 2)
        deposited_before = await tn.token_balance(anvil_w3, deployment, ours)
        await wait_cancelled(node, "p")
        await manual.aclose()
        if stage == "AWAITING_FUNDS":
            await mint(anvil_w3, deployment, ours, TARGET)
            deposited_before += TARGET

        # The operator (or a reconnect) starts it again, with a working RPC and config.
        await first.aclose()
        await node.start_workers(stack, anvil_w3, deployment)
        sent_before_restart, _ = await nonces(anvil_w3, ours)
        await node.provisioner.peer_connected("p")
        ready = await node.wait_for_stage("p", "READY")
        view = await asyncio.wait_for(node.registry.wait_ready("p"), timeout=10)
    assert view.channel_id == ready.channel_id
    await assert_one_channel_at_target(anvil_w3, deployment, ours, partner.address, view.channel_id)
    sent_after_restart, pending = await nonces(anvil_w3, ours)
    assert sent_after_restart == pending
    if stage in ("OPENING", "DEPOSITING", "READY"):
        # The chain already showed the channel at its target: the new run sent nothing.
        assert sent_after_restart == sent_before_restart
    # Exactly one deposit left the wallet, whichever run's transaction it was.
    spent = deposited_before - await tn.token_balance(anvil_w3, deployment, ours)
    assert spent == (0 if stage == "READY" else TARGET)


@pytest.fixture(scope="module")
async def paced_chain() -> AsyncIterator[tuple[AsyncWeb3, Deployment]]:
    """An anvil of its own that mines one block per second, as a real chain does."""
    with run_anvil(block_time=1) as chain:
        w3 = AsyncWeb3(AsyncHTTPProvider(chain.url))
        try:
            yield w3, await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
        finally:
            await w3.provider.disconnect()


async def test_twenty_peers_at_once_from_one_wallet_pipeline_without_nonce_errors(
    temporal_client: Client, paced_chain: tuple[AsyncWeb3, Deployment]
) -> None:
    w3, deployment = paced_chain
    wallet: LocalAccount = Account.from_key(secrets.token_bytes(32))
    await w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**21)])
    await mint(w3, deployment, wallet.address, 20 * TARGET)
    peers = {f"peer{i:02d}": random_address() for i in range(20)}
    node = Node(unique("twenty"), wallet, temporal_client)
    first_block = await w3.eth.block_number
    async with AsyncExitStack() as stack:
        await node.start(stack, w3, deployment, peers)
        await asyncio.gather(*(node.provisioner.peer_connected(peer) for peer in peers))
        views = await asyncio.wait_for(
            asyncio.gather(*(node.registry.wait_ready(peer) for peer in peers)), timeout=60
        )
    for view in views:
        await assert_one_channel_at_target(
            w3, deployment, wallet.address, peers[view.peer_id], view.channel_id
        )
    assert len({view.channel_id for view in views}) == 20

    sent, pending = await nonces(w3, wallet.address)
    last_block = await w3.eth.block_number
    blocks_used: set[int] = set()
    ours = []
    for number in range(first_block + 1, last_block + 1):
        block = await w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["from"].lower() == wallet.address.lower():
                ours.append(tx)
                blocks_used.add(number)
    # Nonces 0..sent-1 all mined, none pending, no gap filler, no revert.
    assert pending == sent == len(ours)
    assert sorted(tx["nonce"] for tx in ours) == list(range(sent))
    targets = {deployment.token.lower(), deployment.token_network.lower()}
    assert {tx["to"].lower() for tx in ours} <= targets
    for tx in ours:
        assert (await w3.eth.get_transaction_receipt(tx["hash"]))["status"] == 1
    # 20 opens + 20 deposits (+ approves) pipelined: several per block.
    assert sent >= 40
    assert len(blocks_used) * 5 <= sent, (sent, sorted(blocks_used))
