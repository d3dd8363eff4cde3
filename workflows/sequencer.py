"""WalletSequencer: the one place nonces of a treasury wallet are allocated.

One workflow per (chain, address). Channel workflows submit batches of intents by Update;
the sequencer queues them, and for everything queued so far assigns consecutive nonces in
its own history, signs them in one activity (raw bytes and hashes land in history) and
broadcasts them in a second one, so many peers provisioning at once pipeline into the same
block without ever colliding on a nonce. A transaction the node refuses outright leaves a
hole; the sequencer fills it with a zero-value self-transfer so later nonces still mine.

Once its history is long it refuses new submissions (the submitter sends them again), answers
what it has admitted and continues as new with the next nonce and its recent answers: under
steady submissions its queue never empties, so waiting for a quiet moment never ended.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import ids
    from workflows.messages import (
        BroadcastOutcome,
        FillNoncesInput,
        SequencerParams,
        SignedTx,
        SignInput,
        SubmitBatch,
        SubmitRequest,
        SubmitResult,
    )
    from workflows.policies import CHAIN_RETRY, HEARTBEAT_TIMEOUT

# Answers kept for repeated submissions (a submitter retried after a crash).
REMEMBERED_RESULTS = 500
MAX_HISTORY_EVENTS = 5_000
# Before it, a repeat arriving while its batch was being sent was queued and sent again.
PATCH_REPEAT_WHILE_SENDING = "repeat-while-sending-is-not-queued"
# The error type of a submission refused while the sequencer continues as new.
CONTINUING_AS_NEW = "SequencerContinuingAsNew"


@workflow.defn(name=ids.SEQUENCER_WORKFLOW)
class WalletSequencer:
    @workflow.init
    def __init__(self, params: SequencerParams) -> None:
        self._next_nonce = params.next_nonce
        self._queue: list[SubmitRequest] = []
        # Request ids of the batch being signed and broadcast: neither queued nor answered.
        self._sending: frozenset[str] = frozenset()
        self._results: dict[str, SubmitResult] = dict(params.remembered)
        # Set once the history is long: new submissions are refused until the new run.
        self._continuing = False

    @workflow.update(name=ids.UPDATE_SUBMIT_ALL)
    async def submit_all(self, batch: SubmitBatch) -> list[SubmitResult]:
        for request in batch.requests:
            self._enqueue(request)
        await workflow.wait_condition(
            lambda: all(request.request_id in self._results for request in batch.requests)
        )
        return [self._results[request.request_id] for request in batch.requests]

    @submit_all.validator
    def _admit(self, batch: SubmitBatch) -> None:
        # Refused before history: the submitter sends the batch again and the new run,
        # which remembers recent answers, takes it.
        if self._continuing:
            raise ApplicationError("the sequencer is continuing as new", type=CONTINUING_AS_NEW)

    def _enqueue(self, request: SubmitRequest) -> None:
        # A repeat (a submitter retried after a crash) gets the first answer, no new nonce,
        # whether that answer is given, queued, or being signed and broadcast right now.
        request_id = request.request_id
        if request_id in self._results or any(q.request_id == request_id for q in self._queue):
            return
        if request_id in self._sending and workflow.patched(PATCH_REPEAT_WHILE_SENDING):
            return
        self._queue.append(request)

    @workflow.run
    async def run(self, params: SequencerParams) -> None:
        if self._next_nonce is None:
            self._next_nonce = await workflow.execute_activity(
                ids.READ_NEXT_NONCE,
                result_type=int,
                start_to_close_timeout=timedelta(seconds=15),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=CHAIN_RETRY,
            )
        while True:
            await workflow.wait_condition(lambda: bool(self._queue) or self._history_is_long())
            if self._history_is_long():
                # From here only admitted submissions are answered; the commands are the
                # same with or without this flag (validators do not run on replay).
                self._continuing = True
            if not self._queue:
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or bool(self._queue)
                )
                if not self._queue:
                    workflow.continue_as_new(
                        SequencerParams(
                            node_id=params.node_id,
                            next_nonce=self._next_nonce,
                            remembered=self._recent_results(),
                        )
                    )
            batch, self._queue = self._queue, []
            self._sending = frozenset(request.request_id for request in batch)
            await self._process(batch)
            self._sending = frozenset()

    async def _process(self, batch: list[SubmitRequest]) -> None:
        intents = tuple(intent for request in batch for intent in request.intents)
        signed: list[SignedTx] = await workflow.execute_activity(
            ids.SIGN_TRANSACTIONS,
            SignInput(intents, self._next_nonce),
            result_type=list[SignedTx],
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CHAIN_RETRY,
        )
        # The signer may skip ahead if the chain shows the wallet used elsewhere.
        self._next_nonce = signed[-1].nonce + 1
        outcomes: list[BroadcastOutcome] = await workflow.execute_activity(
            ids.BROADCAST_TRANSACTIONS,
            signed,
            result_type=list[BroadcastOutcome],
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CHAIN_RETRY,
        )
        refused = {o.tx_hash: o.error for o in outcomes if o.error is not None}
        if refused:
            await workflow.execute_activity(
                ids.FILL_NONCE_GAPS,
                FillNoncesInput(tuple(o.nonce for o in outcomes if o.error is not None)),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=CHAIN_RETRY,
            )
        position = 0
        for request in batch:
            txs = tuple(signed[position : position + len(request.intents)])
            position += len(request.intents)
            errors = [refused[tx.tx_hash] for tx in txs if tx.tx_hash in refused]
            self._results[request.request_id] = SubmitResult(
                txs=txs, refused="; ".join(errors) if errors else None
            )

    def _recent_results(self) -> tuple[tuple[str, SubmitResult], ...]:
        return tuple(self._results.items())[-REMEMBERED_RESULTS:]

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > (
            MAX_HISTORY_EVENTS
        )
