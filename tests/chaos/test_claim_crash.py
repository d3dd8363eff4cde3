"""Claim crash tests on the real Temporal dev server and real anvil: one end of a link is a
real connector process (`tests/chaos/claim_node.py`, i.e. `paychan connector`) that SIGKILLs
itself at a deterministic point of settlement; the other end runs in-process.

- The receiver dies after storing and crediting a claim, before acknowledging it: the sender
  sends the same claim again to the restarted receiver, which acknowledges it without a
  second credit.
- The sender dies after signing and storing a claim, before sending it: the restarted
  sender sends that same claim (no new amount, no new nonce), and it is credited once.

Both end with each ledger at zero and exactly one claim (nonce 1) on each side.
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from eth_account.signers.local import LocalAccount
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncWeb3

from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.devstack import free_port
from tests.chaos.node_process import NodeProcess, Record
from tests.integration.settlement_nodes import (
    KEY_ENV,
    PeerLink,
    config_of,
    is_ready,
    node_yaml,
    run_in_process,
    settled,
    wait_for,
    wallet_nonces,
    write_node_yaml,
)

pytestmark = pytest.mark.timeout(180)

NewAccount = Callable[..., Awaitable[LocalAccount]]
PAYMENT = 600_000  # two of them cross the 1,000,000 threshold: one claim of 1,200,000


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def claim_node(config: Path, key: str, log_file: Path, crash_after: str | None) -> NodeProcess:
    argv = [sys.executable, "-m", "tests.chaos.claim_node", str(config)]
    if crash_after:
        argv += ["--crash-after", crash_after]
    return NodeProcess(
        argv, started_event="SETTLEMENT_STARTED", log_file=log_file, env={KEY_ENV: key}
    )


def events(process: NodeProcess, name: str) -> list[Record]:
    return [record for record in process.records if record.get("event") == name]


async def wait_event(process: NodeProcess, name: str, timeout: float = 30.0) -> Record:
    return await process.wait_for(lambda record: record.get("event") == name, timeout=timeout)


async def wait_exit(process: NodeProcess) -> None:
    with pytest.raises(EOFError):
        await process.wait_for(lambda record: False, after=len(process.records), timeout=30)


def ledger_of(path: Path) -> tuple[dict[str, int], list[tuple[str, int, int, int]]]:
    """Balances and claims (direction, nonce, transferred, acknowledged), as a restart reads."""
    with sqlite3.connect(path) as connection:
        balances = {
            p: int(b) for p, b in connection.execute("SELECT peer_id, balance FROM balances")
        }
        claims = sorted(
            (d, int(n), int(t), k)
            for d, n, t, k in connection.execute(
                "SELECT direction, nonce, transferred_amount, acknowledged FROM claims"
            )
        )
    return balances, claims


def link_documents(
    tmp_path: Path,
    temporal_env: WorkflowEnvironment,
    anvil,
    deployment: Deployment,
    sender: LocalAccount,
    receiver: LocalAccount,
) -> tuple[str, str, dict, dict]:
    """YAML documents of a sender (dials in) and a receiver (listens); the sender has an
    admin API so a test can pay from it when it is a process of its own."""
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    suffix = uuid.uuid4().hex[:6]
    sender_id, receiver_id = f"s{suffix}", f"r{suffix}"
    receiver_port = free_port()
    common = {
        "data_dir": tmp_path,
        "deployment_file": deployment_file,
        "temporal_address": temporal_env.client.service_client.config.target_host,
        "rpc_url": anvil.url,
    }
    sender_doc = node_yaml(
        sender_id,
        port=free_port(),
        peers=[PeerLink(receiver_id, receiver.address, receiver_port)],
        admin_port=free_port(),
        **common,
    )
    receiver_doc = node_yaml(
        receiver_id, port=receiver_port, peers=[PeerLink(sender_id, sender.address)], **common
    )
    return sender_id, receiver_id, sender_doc, receiver_doc


async def test_receiver_killed_between_storing_and_acknowledging_is_credited_once(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    sender_account, receiver_account = await new_account(), await new_account()
    sender_id, receiver_id, sender_doc, receiver_doc = link_documents(
        tmp_path, temporal_env, anvil, deployment, sender_account, receiver_account
    )
    receiver_file = write_node_yaml(tmp_path / f"{receiver_id}.yaml", receiver_doc)
    receiver_ledger = Path(receiver_doc["ledgerPath"])
    receiver_key = receiver_account.key.hex()
    receiver = claim_node(receiver_file, receiver_key, tmp_path / "receiver.log", "record_received")
    stack.push_async_callback(receiver.kill)
    await receiver.start()
    sender = await run_in_process(stack, config_of(sender_doc, sender_account.key.hex()))
    await wait_for(lambda: is_ready(sender, receiver_id), what="sender READY")
    await wait_event(receiver, "Payment channel ready")
    nonces = await wallet_nonces(anvil_w3, [sender_account.address, receiver_account.address])

    for _ in range(2):
        assert (await sender.node.send_payment(f"g.{receiver_id}", PAYMENT)).fulfilled
    await wait_exit(receiver)
    assert events(receiver, "CLAIM_TEST_CRASH")[0]["after"] == "record_received"
    # The receiver stored and credited the claim; the sender never heard back.
    assert ledger_of(receiver_ledger) == ({sender_id: 0}, [("received", 1, 1_200_000, 1)])
    pending = sender.node.claims.pending_sent(receiver_id)
    assert pending is not None and pending.nonce == 1
    assert sender.node.ledger.snapshot(receiver_id).balance == -2 * PAYMENT

    restarted = claim_node(receiver_file, receiver_key, tmp_path / "receiver.log", None)
    stack.push_async_callback(restarted.kill)
    await restarted.start()
    await wait_for(lambda: settled(sender, receiver_id), what="claim acknowledged")
    await wait_event(restarted, "CLAIM_RECEIVED_AGAIN")
    assert events(restarted, "CLAIM_RECEIVED") == []  # not credited a second time
    await restarted.stop()

    assert ledger_of(receiver_ledger) == ({sender_id: 0}, [("received", 1, 1_200_000, 1)])
    assert sender.node.ledger.snapshot(receiver_id).balance == 0
    assert sender.node.claims.latest_acknowledged(receiver_id, pending.channel_id) is not None
    assert sender.node.claims.latest_sent(receiver_id, pending.channel_id).nonce == 1
    assert await wallet_nonces(anvil_w3, list(nonces)) == nonces


async def test_sender_killed_between_signing_and_sending_sends_the_same_claim(
    stack: AsyncExitStack,
    temporal_env: WorkflowEnvironment,
    anvil,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account: NewAccount,
    tmp_path: Path,
) -> None:
    sender_account, receiver_account = await new_account(), await new_account()
    sender_id, receiver_id, sender_doc, receiver_doc = link_documents(
        tmp_path, temporal_env, anvil, deployment, sender_account, receiver_account
    )
    sender_file = write_node_yaml(tmp_path / f"{sender_id}.yaml", sender_doc)
    sender_ledger = Path(sender_doc["ledgerPath"])
    sender_key = sender_account.key.hex()
    receiver = await run_in_process(stack, config_of(receiver_doc, receiver_account.key.hex()))
    sender = claim_node(sender_file, sender_key, tmp_path / "sender.log", "record_sent")
    stack.push_async_callback(sender.kill)
    await sender.start()
    await wait_for(lambda: is_ready(receiver, sender_id), what="receiver READY")
    await wait_event(sender, "Payment channel ready")
    nonces = await wallet_nonces(anvil_w3, [sender_account.address, receiver_account.address])

    admin = sender_doc["admin"]
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            try:
                async with session.post(
                    f"http://127.0.0.1:{admin['port']}/admin/payments",
                    json={"destination": f"g.{receiver_id}", "amount": str(PAYMENT)},
                    headers={"Authorization": f"Bearer {admin['token']}"},
                ) as response:
                    assert (await response.json())["fulfilled"]
            except aiohttp.ClientError:
                pass  # the sender may die while answering the second one: it was fulfilled
    await wait_exit(sender)
    crash = events(sender, "CLAIM_TEST_CRASH")[0]
    assert (crash["after"], crash["nonce"]) == ("record_sent", "1")
    # Signed and stored, never sent: the receiver knows nothing of it.
    balances, claims = ledger_of(sender_ledger)
    assert (balances, claims) == ({receiver_id: -2 * PAYMENT}, [("sent", 1, 1_200_000, 0)])
    assert receiver.node.claims.summary(sender_id).received is None
    assert receiver.node.ledger.snapshot(sender_id).balance == 2 * PAYMENT
    assert events(sender, "CLAIM_SENT") == []

    restarted = claim_node(sender_file, sender_key, tmp_path / "sender.log", None)
    stack.push_async_callback(restarted.kill)
    await restarted.start()
    acknowledged = await wait_event(restarted, "CLAIM_ACKNOWLEDGED")
    assert (acknowledged["nonce"], acknowledged["transferredAmount"]) == ("1", "1200000")
    await restarted.stop()

    assert ledger_of(sender_ledger) == ({receiver_id: 0}, [("sent", 1, 1_200_000, 1)])
    assert receiver.node.ledger.snapshot(sender_id).balance == 0
    received = receiver.node.claims.summary(sender_id).received
    assert (received.nonce, received.transferred_amount) == (1, 1_200_000)
    assert await wallet_nonces(anvil_w3, list(nonces)) == nonces
