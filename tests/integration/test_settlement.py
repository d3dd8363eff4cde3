"""Settlement by claims between two connectors on the real Temporal dev server and real anvil,
each run as `paychan connector` runs it: traffic over the threshold is paid by signed claims
with no transaction, a bad claim changes nothing, and a peer with no READY channel gets its
workflow retried and is paid once the channel is READY."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import structlog
from eth_account.signers.local import LocalAccount
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.btp.errors import BtpRefused
from connector.claims import PROTOCOL_NAME, ClaimAck, ClaimDomain, ClaimSigner
from connector.codec.btp import ContentType, ProtocolData
from connector.devstack import free_port
from connector.node_command import RunningNode
from connector.settlement import SettlementTiming
from tests.integration.settlement_nodes import (
    DEPOSIT_MULTIPLIER,
    FAST,
    LINK_TOKEN,
    THRESHOLD,
    PeerLink,
    config_of,
    is_ready,
    node_yaml,
    run_in_process,
    settled,
    wait_for,
    wallet_nonces,
)
from workflows import ids

pytestmark = pytest.mark.timeout(120)

NewAccount = Callable[..., Awaitable[LocalAccount]]
DEPOSIT = DEPOSIT_MULTIPLIER * THRESHOLD


@dataclass
class Pair:
    a_id: str
    b_id: str
    a: RunningNode
    b: RunningNode
    a_account: LocalAccount
    b_account: LocalAccount

    @property
    def channel_id(self) -> str:
        return self.a.node.channels.view(self.b_id).channel_id


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def start_pair(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    anvil,
    deployment: Deployment,
    tmp_path: Path,
    a_account: LocalAccount,
    b_account: LocalAccount,
    timing: SettlementTiming = FAST,
) -> Pair:
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    suffix = uuid.uuid4().hex[:6]
    a_id, b_id = f"a{suffix}", f"b{suffix}"
    b_port = free_port()
    common = {
        "data_dir": tmp_path,
        "deployment_file": deployment_file,
        "temporal_address": temporal_env.client.service_client.config.target_host,
        "rpc_url": anvil.url,
    }
    a_doc = node_yaml(
        a_id, port=free_port(), peers=[PeerLink(b_id, b_account.address, b_port)], **common
    )
    b_doc = node_yaml(b_id, port=b_port, peers=[PeerLink(a_id, a_account.address)], **common)
    b = await run_in_process(stack, config_of(b_doc, b_account.key.hex()), timing)
    a = await run_in_process(stack, config_of(a_doc, a_account.key.hex()), timing)
    return Pair(a_id, b_id, a, b, a_account, b_account)


def claim_rows(running: RunningNode) -> list[tuple[str, int, int, int, int]]:
    """(direction, nonce, transferred, amount, acknowledged) from the node's ledger file."""
    with sqlite3.connect(running.node.config.resolved_ledger_path) as connection:
        rows = connection.execute(
            "SELECT direction, nonce, transferred_amount, amount, acknowledged FROM claims"
        )
        return sorted((d, int(n), int(t), int(a), k) for d, n, t, a, k in rows)


async def pay(running: RunningNode, destination: str, amounts: list[int]) -> None:
    in_flight = asyncio.Semaphore(50)

    async def one(amount: int) -> None:
        async with in_flight:
            result = await running.node.send_payment(destination, amount)
        assert result.fulfilled, result

    await asyncio.gather(*(one(amount) for amount in amounts))


async def test_traffic_over_the_threshold_is_paid_by_claims_with_no_transaction(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    pair = await start_pair(
        stack, temporal_env, anvil, deployment, tmp_path, await new_account(), await new_account()
    )
    a, b = pair.a, pair.b
    await wait_for(lambda: is_ready(a, pair.b_id) and is_ready(b, pair.a_id), what="READY")
    nonces = await wallet_nonces(anvil_w3, [pair.a_account.address, pair.b_account.address])

    # Three rounds of 1,525,925 each: a threshold crossed every round, a remainder left.
    amounts = [50_000] * 30 + [7_777] * 25
    for _ in range(3):
        await pay(a, f"g.{pair.b_id}", amounts)
        await wait_for(lambda: settled(a, pair.b_id), what="a settled with b")

    traffic = 3 * sum(amounts)
    sent = [row for row in claim_rows(a) if row[0] == "sent"]
    received = [row for row in claim_rows(b) if row[0] == "received"]
    assert len(sent) >= 3 and all(row[4] == 1 for row in sent)  # every claim acknowledged
    assert [row[1] for row in sent] == list(range(1, len(sent) + 1))  # nonce + 1 each time
    claimed = sent[-1][2]
    assert sum(row[3] for row in sent) == claimed  # amounts add up to the cumulative total
    assert [row[1:4] for row in received] == [row[1:4] for row in sent]  # both sides agree
    # Balances moved by exactly the claims: what a still owes b is below the threshold.
    assert a.node.ledger.snapshot(pair.b_id).balance == -traffic + claimed
    assert b.node.ledger.snapshot(pair.a_id).balance == traffic - claimed
    assert 0 <= traffic - claimed < THRESHOLD
    # The chain agrees the claim is payable, and nothing was sent on-chain during traffic.
    best = b.node.claims.best_received(pair.a_id, pair.channel_id)
    assert best.claim.signer_address == pair.a_account.address
    assert best.transferred_amount == claimed <= DEPOSIT
    assert await wallet_nonces(anvil_w3, list(nonces)) == nonces
    # /health on both ends names the latest claim.
    a_health = a.node.health_snapshot().peers[pair.b_id]
    b_health = b.node.health_snapshot().peers[pair.a_id]
    assert (a_health.sent_claim_nonce, a_health.sent_claim_amount) == (len(sent), claimed)
    assert a_health.sent_claim_acknowledged is True
    assert (b_health.received_claim_nonce, b_health.received_claim_amount) == (len(sent), claimed)
    assert a_health.to_json()["sentClaimAmount"] == str(claimed)


async def test_bad_claims_are_refused_and_change_nothing(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    pair = await start_pair(
        stack, temporal_env, anvil, deployment, tmp_path, await new_account(), await new_account()
    )
    a, b = pair.a, pair.b
    await wait_for(lambda: is_ready(a, pair.b_id) and is_ready(b, pair.a_id), what="READY")
    await pay(a, f"g.{pair.b_id}", [600_000, 600_000])  # one claim of 1,200,000 (nonce 1)
    await wait_for(lambda: settled(a, pair.b_id), what="first claim")
    # Someone else's channel: a and a stranger, opened by the stranger.
    stranger = await new_account()
    await tn.send_and_wait(
        anvil_w3, stranger, tn.build_open_channel(deployment, pair.a_account.address, 40)
    )
    foreign_channel = await tn.get_channel_id(
        anvil_w3, deployment, pair.a_account.address, stranger.address
    )

    domain = ClaimDomain(deployment.chain_id, deployment.token_network)
    payer = ClaimSigner(pair.a_account.key, pair.a_account.address)
    forger = ClaimSigner(stranger.key, stranger.address)
    channel = pair.channel_id
    accepted = b.node.claims.best_received(pair.a_id, channel)
    assert (accepted.nonce, accepted.transferred_amount) == (1, 1_200_000)
    link = a.node.links[pair.b_id]

    async def send(body: bytes) -> tuple[ProtocolData, ...]:
        data = ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, body)
        return await link.send_message((data,), 5.0)

    forged = forger.sign(domain, channel, 2, 2_000_000).model_copy(
        update={"signer_address": pair.a_account.address}
    )
    cases = {
        "forged signature": (forged.to_json(), "F00", "bad_signature"),
        "signed by a stranger": (
            forger.sign(domain, channel, 2, 2_000_000).to_json(),
            "F00",
            "not_partner",
        ),
        "replayed nonce": (
            payer.sign(domain, channel, 1, 1_300_000).to_json(),
            "F00",
            "stale_nonce",
        ),
        "wrong chain id": (
            payer.sign(ClaimDomain(1, deployment.token_network), channel, 2, 2_000_000).to_json(),
            "F00",
            "wrong_chain",
        ),
        "wrong contract": (
            payer.sign(
                ClaimDomain(deployment.chain_id, deployment.token), channel, 2, 2_000_000
            ).to_json(),
            "F00",
            "wrong_contract",
        ),
        "amount above deposit": (
            payer.sign(domain, channel, 2, DEPOSIT + 1).to_json(),
            "F00",
            "above_deposit",
        ),
        "someone else's channel": (
            payer.sign(domain, foreign_channel, 1, 1_000).to_json(),
            "F00",
            "not_our_channel",
        ),
        "amount decreasing": (
            payer.sign(domain, channel, 2, 1_199_999).to_json(),
            "F00",
            "amount_decreased",
        ),
        "not a claim": (b'{"hello": "world"}', "F01", "malformed"),
    }
    rows_before = claim_rows(b)
    balance_before = b.node.ledger.snapshot(pair.a_id).balance
    for name, (body, code, reason) in cases.items():
        with structlog.testing.capture_logs() as logs, pytest.raises(BtpRefused) as refused:
            await send(body)
        assert (refused.value.code, reason in refused.value.message) == (code, True), name
        assert claim_rows(b) == rows_before, name
        assert b.node.ledger.snapshot(pair.a_id).balance == balance_before, name
        assert b.node.claims.best_received(pair.a_id, channel) == accepted, name
        # Each refusal is one CLAIM_REFUSED line naming the peer and the reason.
        refusals = [(e["peerId"], e["reason"]) for e in logs if e["event"] == "CLAIM_REFUSED"]
        assert refusals == [(pair.a_id, reason)], name
        assert not [entry for entry in logs if has_secret(entry, pair)], name
    # ... and counted once in b's /metrics, by reason.
    assert await refused_counts(b, pair.a_id) == {reason: 1 for _, _, reason in cases.values()}

    # The accepted claim again (a lost acknowledgement): acknowledged, credited once.
    (answer,) = await send(accepted.claim.to_json())
    assert ClaimAck.from_json(answer.data).acknowledges(accepted.claim)
    assert claim_rows(b) == rows_before
    assert b.node.ledger.snapshot(pair.a_id).balance == balance_before
    # And a good next claim is still accepted after all that.
    (answer,) = await send(payer.sign(domain, channel, 2, 1_250_000).to_json())
    assert json.loads(answer.data)["nonce"] == "2"
    assert b.node.ledger.snapshot(pair.a_id).balance == balance_before - 50_000

    # Once b closes the channel (its keeper marks it CLOSING), a later claim is refused
    # though the chain still says open: the close would not pay it.
    rows_before = claim_rows(b)
    b.node.channels.mark_closing(pair.a_id, channel, "CLOSING")
    with pytest.raises(BtpRefused, match="channel_closing"):
        await send(payer.sign(domain, channel, 3, 1_300_000).to_json())
    assert (await refused_counts(b, pair.a_id))["channel_closing"] == 1
    assert claim_rows(b) == rows_before
    assert b.node.ledger.snapshot(pair.a_id).balance == balance_before - 50_000


async def refused_counts(running: RunningNode, peer_id: str) -> dict[str, float]:
    """paychan_claims_refused_total by reason, as the node's /metrics serves it."""
    url = running.node.health_url + "/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    labels = {"node": running.node.config.node_id, "peer": peer_id}
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "paychan_claims_refused_total" and labels.items() <= sample.labels.items()
    }


def has_secret(entry: dict, pair: Pair) -> bool:
    """A log entry carrying a treasury key or the link's auth token."""
    text = str(entry)
    secrets = [account.key.hex() for account in (pair.a_account, pair.b_account)] + [LINK_TOKEN]
    return any(secret.removeprefix("0x") in text for secret in secrets)


async def test_without_a_ready_channel_the_workflow_is_retried_and_paid_once_ready(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    temporal_client: Client,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    a_account = await new_account(m2m=0)  # a cannot deposit: AWAITING_FUNDS
    pair = await start_pair(
        stack, temporal_env, anvil, deployment, tmp_path, a_account, await new_account()
    )
    a = pair.a
    await wait_for(
        lambda: a.node.health_snapshot().peers[pair.b_id].stage == "AWAITING_FUNDS",
        what="a AWAITING_FUNDS",
    )
    handle = temporal_client.get_workflow_handle(
        ids.channel_workflow_id(pair.a_id, pair.b_id, "M2M")
    )

    async def retries() -> int:
        return await signals(temporal_client, handle.id, ids.SIGNAL_RETRY)

    assert await retries() == 0
    # Over the threshold twice with no channel: packets still flow under the credit limit.
    await pay(a, f"g.{pair.b_id}", [500_000] * 5)
    async with asyncio.timeout(30):
        while await retries() == 0:
            await asyncio.sleep(0.1)
    assert a.node.ledger.snapshot(pair.b_id).balance == -2_500_000
    assert a.node.claims.pending_sent(pair.b_id) is None
    assert a.node.claims.summary(pair.b_id).sent is None

    # Funds arrive; settlement's next retry signal (not the workflow's 60 s timer) gets READY,
    # and what is due is paid at once.
    await tn.send_and_wait(
        anvil_w3, a_account, tn.build_mint(deployment, a_account.address, DEPOSIT)
    )
    await wait_for(lambda: is_ready(a, pair.b_id), timeout=30, what="a READY")
    await wait_for(lambda: settled(a, pair.b_id), timeout=30, what="paid")
    assert a.node.ledger.snapshot(pair.b_id).balance == 0
    assert pair.b.node.ledger.snapshot(pair.a_id).balance == 0
    assert [row[:4] for row in claim_rows(a)] == [("sent", 1, 2_500_000, 2_500_000)]


async def signals(client: Client, workflow_id: str, name: str) -> int:
    """How many `name` signals the workflow's history holds."""
    count = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and event.workflow_execution_signaled_event_attributes.signal_name == name
        ):
            count += 1
    return count


async def test_claims_never_exceed_our_deposit_and_a_used_up_deposit_is_topped_up_at_once(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    temporal_client: Client,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    pair = await start_pair(
        stack, temporal_env, anvil, deployment, tmp_path, await new_account(), await new_account()
    )
    a, b = pair.a, pair.b
    await wait_for(lambda: is_ready(a, pair.b_id) and is_ready(b, pair.a_id), what="READY")
    nonces = await wallet_nonces(anvil_w3, [pair.a_account.address, pair.b_account.address])
    workflow_id = ids.channel_workflow_id(pair.a_id, pair.b_id, "M2M")
    loop = asyncio.get_running_loop()

    await pay(a, f"g.{pair.b_id}", [900_000] * 13)  # 11,700,000 against a 10,000,000 deposit
    await wait_for(
        lambda: (
            (last := a.node.claims.latest_acknowledged(pair.b_id, pair.channel_id)) is not None
            and last.transferred_amount == DEPOSIT
        ),
        what="claims up to the deposit",
    )
    used_up = loop.time()
    # The rest waits for a larger deposit: no claim above it. Settlement tells the keeper
    # at once (its own next read is ~27 s away with this config) and pays once it landed.
    assert a.node.ledger.snapshot(pair.b_id).balance == -(11_700_000 - DEPOSIT)
    await wait_for(
        lambda: a.node.channels.view(pair.b_id).our_deposit > DEPOSIT,
        timeout=15,
        what="a top-up started by settlement, not by the keeper's timer",
    )
    await wait_for(lambda: settled(a, pair.b_id), timeout=15, what="the rest paid")
    assert loop.time() - used_up < 20

    topped_up = a.node.channels.view(pair.b_id).our_deposit
    assert topped_up == 2 * DEPOSIT  # the target remaining again: 10,000,000 used + 10,000,000
    last = a.node.claims.latest_acknowledged(pair.b_id, pair.channel_id)
    assert last.transferred_amount == 11_700_000 <= topped_up
    assert b.node.claims.best_received(pair.a_id, pair.channel_id).claim == last.claim
    assert a.node.ledger.snapshot(pair.b_id).balance == 0
    assert b.node.ledger.snapshot(pair.a_id).balance == 0
    # One signal for the used-up deposit, however many attempts and payments waited on it.
    assert await signals(temporal_client, workflow_id, ids.SIGNAL_TOP_UP) == 1
    # a's only transactions are the top-up's; b sent none.
    after = await wallet_nonces(anvil_w3, list(nonces))
    assert after[pair.b_account.address] == nonces[pair.b_account.address]
    assert after[pair.a_account.address] > nonces[pair.a_account.address]
