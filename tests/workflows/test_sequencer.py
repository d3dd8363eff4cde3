"""WalletSequencer on the real Temporal dev server, with its chain activities replaced by
fakes under the real names (the workflow's own logic is what is tested here)."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.worker import Worker

from workflows import ids
from workflows.messages import (
    BroadcastOutcome,
    SequencerParams,
    SignedTx,
    SignInput,
    SubmitBatch,
    SubmitRequest,
)
from workflows.provisioning.commands import SendKind, TxIntent
from workflows.sequencer import WalletSequencer


class FakeWallet:
    """Signs with made-up hashes; broadcasts only once `release` is set."""

    def __init__(self) -> None:
        self.signed: list[SignInput] = []
        self.broadcasting = asyncio.Event()
        self.release = asyncio.Event()

    @activity.defn(name=ids.READ_NEXT_NONCE)
    async def read_next_nonce(self) -> int:
        return 7

    @activity.defn(name=ids.SIGN_TRANSACTIONS)
    async def sign_transactions(self, request: SignInput) -> list[SignedTx]:
        self.signed.append(request)
        return [
            SignedTx(intent, request.first_nonce + i, f"0x{request.first_nonce + i:064x}", "0x")
            for i, intent in enumerate(request.intents)
        ]

    @activity.defn(name=ids.BROADCAST_TRANSACTIONS)
    async def broadcast_transactions(self, txs: list[SignedTx]) -> list[BroadcastOutcome]:
        self.broadcasting.set()
        await self.release.wait()
        return [BroadcastOutcome(tx.tx_hash, tx.nonce) for tx in txs]


def request(name: str) -> SubmitRequest:
    return SubmitRequest(name, (TxIntent(SendKind.APPROVE), TxIntent(SendKind.OPEN_CHANNEL)))


async def test_repeat_of_a_submission_being_broadcast_signs_nothing_new(
    temporal_client: Client,
) -> None:
    """A submitter retried after a crash repeats its request while the sequencer is still
    broadcasting it: the repeat gets the same transactions and no second batch is signed."""
    wallet = FakeWallet()
    queue = f"wallet-{uuid.uuid4().hex}"
    async with Worker(
        temporal_client,
        task_queue=queue,
        workflows=[WalletSequencer],
        activities=[
            wallet.read_next_nonce,
            wallet.sign_transactions,
            wallet.broadcast_transactions,
        ],
    ):
        handle = await temporal_client.start_workflow(
            WalletSequencer.run, SequencerParams(node_id="n"), id=queue, task_queue=queue
        )
        first = await handle.start_update(
            WalletSequencer.submit_all,
            SubmitBatch((request("peer/send-1"),)),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await asyncio.wait_for(wallet.broadcasting.wait(), 10)
        repeat = await handle.start_update(
            WalletSequencer.submit_all,
            SubmitBatch((request("peer/send-1"),)),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        wallet.release.set()
        assert await repeat.result() == await first.result()
        # A later submission is queued behind anything the repeat may have queued.
        (later,) = await handle.execute_update(
            WalletSequencer.submit_all, SubmitBatch((request("peer/send-2"),))
        )
        await handle.terminate()
    assert [len(signed.intents) for signed in wallet.signed] == [2, 2]
    (result,) = await first.result()
    assert [tx.nonce for tx in result.txs] == [7, 8]
    assert [tx.nonce for tx in later.txs] == [9, 10]
