"""Record the workflow histories that `test_replay.py` replays.

    .venv/bin/python -m tests.workflows.record_histories [--only SCENARIO ...]

Starts its own anvil (automine) and Temporal dev servers (one with Temporal's defaults, one
that suggests continue-as-new early), runs each scenario with in-process workers, and
writes every ChannelWorkflow and WalletSequencer history it produced to
`tests/workflows/histories/<scenario>--<workflow>.json` (Temporal's JSON history format, the
same as `temporal workflow show --output json`; a workflow continued as new is saved run by
run, `<workflow>-1`, `<workflow>-2`). Record new scenarios with `--only`; re-recording an
existing one replaces a history of older code (runs it started must still replay) with one
of today's, so after a patched change add a scenario that takes the new path.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import deploy
from activities.rpc import connect_rpc
from activities.sequencer import SequencerClientActivities
from activities.token_network import Deployment
from connector.devstack import ANVIL_KEYS, run_anvil, run_temporal
from tests.chaos.workflow_history import accepted_per_run, continued, draining, quiet
from tests.integration.keeper_node import SETTLE_TIMEOUT as KEEPER_SETTLE_TIMEOUT
from tests.integration.keeper_node import TARGET as KEEPER_TARGET
from tests.integration.keeper_node import KeeperNode, mine, until
from tests.integration.provisioning_node import TARGET, Node
from worker.run import connector_worker
from workflows import ids
from workflows.messages import CloseChannel, SubmitBatch, SubmitRequest, SubmitResult
from workflows.provisioning.commands import SendKind, TxIntent
from workflows.sequencer import CONTINUING_AS_NEW

HISTORIES = Path(__file__).resolve().parent / "histories"


class Recorder:
    def __init__(self, client: Client, w3: AsyncWeb3, deployment: Deployment) -> None:
        self.client = client
        self.w3 = w3
        self.deployment = deployment
        self.written: list[Path] = []

    async def account(self, *, eth: int = 10**20, m2m: int = 10 * TARGET) -> LocalAccount:
        account = Account.from_key(secrets.token_bytes(32))
        await self.w3.provider.make_request("anvil_setBalance", [account.address, hex(eth)])
        if m2m:
            minter = Account.from_key(ANVIL_KEYS[0])
            await tn.send_and_wait(
                self.w3, minter, tn.build_mint(self.deployment, account.address, m2m)
            )
        return account

    async def save(
        self, scenario: str, name: str, workflow_id: str, run_id: str | None = None
    ) -> None:
        """The history of `run_id` (default: the current run) of `workflow_id`."""
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        path = HISTORIES / f"{scenario}--{name}.json"
        path.write_text(history.to_json() + "\n")
        self.written.append(path)

    async def save_sequencer(self, scenario: str, node: Node) -> None:
        workflow_id = ids.sequencer_workflow_id(self.deployment.chain_id, node.account.address)
        await self.save(scenario, "sequencer", workflow_id)

    async def happy_path(self) -> None:
        node = Node("happy", await self.account(), self.client)
        async with AsyncExitStack() as stack:
            await node.start(stack, self.w3, self.deployment, {"peer": random_address()})
            await node.provisioner.peer_connected("peer")
            await node.wait_for_stage("peer", "READY")
            await node.registry.wait_ready("peer")
            # A reconnect to a READY channel only tells the connector again.
            await node.provisioner.peer_connected("peer")
            await asyncio.sleep(0.5)
        await self.save("happy_path", "channel", node.handle("peer").id)
        await self.save_sequencer("happy_path", node)

    async def awaiting_funds_then_retry(self) -> None:
        account = await self.account()
        await self.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**9)])
        node = Node("funds", account, self.client)
        async with AsyncExitStack() as stack:
            await node.start(
                stack,
                self.w3,
                self.deployment,
                {"peer": random_address()},
                funds_recheck_seconds=1.0,
            )
            await node.provisioner.peer_connected("peer")
            await node.wait_for_stage("peer", "AWAITING_FUNDS")
            await asyncio.sleep(1.5)  # one durable timer round, still short
            await self.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
            await node.handle("peer").signal(ids.SIGNAL_RETRY)
            await node.wait_for_stage("peer", "READY")
            await node.registry.wait_ready("peer")
        await self.save("awaiting_funds_retry", "channel", node.handle("peer").id)

    async def skipped(self) -> None:
        node = Node("skipped", await self.account(m2m=0), self.client)
        async with AsyncExitStack() as stack:
            await node.start(stack, self.w3, self.deployment, {"peer": None})
            await node.provisioner.peer_connected("peer")
            await node.wait_for_stage("peer", "SKIPPED")
        await self.save("skipped", "channel", node.handle("peer").id)

    async def failed_then_retry(self) -> None:
        node = Node("failed", await self.account(), self.client)
        async with AsyncExitStack() as stack:
            misconfigured = await stack.enter_async_context(AsyncExitStack())
            await node.start(
                misconfigured,
                self.w3,
                self.deployment,
                {"peer": random_address()},
                settle_timeout=1,
            )
            await node.provisioner.peer_connected("peer")
            await node.wait_for_stage("peer", "FAILED")
            await misconfigured.aclose()
            await node.start_workers(stack, self.w3, self.deployment)
            await node.handle("peer").signal(ids.SIGNAL_RETRY)
            await node.wait_for_stage("peer", "READY")
        await self.save("failed_retry", "channel", node.handle("peer").id)
        await self.save_sequencer("failed_retry", node)

    async def keeper_close(self) -> None:
        """Channel keeping to the end: a top-up on the `top_up` signal, a unilateral close on
        the `close` signal with the partner's claim, the settle window mined through, the
        settle, and the run completing SETTLED."""
        ours, partner = await self.account(), await self.account()
        node = KeeperNode("keeper", ours, self.client)
        with tempfile.TemporaryDirectory() as data_dir:
            async with AsyncExitStack() as stack:
                await node.start(
                    stack,
                    self.w3,
                    self.deployment,
                    {"peer": partner.address},
                    Path(data_dir),
                    top_up_below=KEEPER_TARGET // 2,
                    keep_check_seconds=1.0,
                    seconds_per_block=0.2,
                    idle_close_seconds=0,
                )
                await node.provisioner.peer_connected("peer")
                channel_id = (await node.wait_for_stage("peer", "READY")).channel_id
                await node.pay("peer", channel_id, 6 * KEEPER_TARGET // 10)
                signer = KeeperNode("partner", partner, self.client)
                signer.domain = node.domain
                await node.receive("peer", signer.sign(channel_id, 1, KEEPER_TARGET // 10))
                await node.handle("peer").signal(ids.SIGNAL_TOP_UP)
                await until(
                    lambda: _deposit_at_least(self, channel_id, ours.address, KEEPER_TARGET + 1),
                    what="top-up",
                )
                await node.handle("peer").signal(ids.SIGNAL_CLOSE, CloseChannel())
                await node.wait_for_stage("peer", "SETTLE_WINDOW")
                await mine(self.w3, KEEPER_SETTLE_TIMEOUT + 1)
                await node.handle("peer").result()
        await self.save("keeper_close", "channel", node.handle("peer").id)

    async def race(self) -> None:
        a = Node("race-a", await self.account(), self.client)
        b = Node("race-b", await self.account(), self.client)
        async with AsyncExitStack() as stack:
            await a.start(stack, self.w3, self.deployment, {"race-b": b.account.address})
            await b.start(stack, self.w3, self.deployment, {"race-a": a.account.address})
            await asyncio.gather(
                a.provisioner.peer_connected("race-b"), b.provisioner.peer_connected("race-a")
            )
            await a.wait_for_stage("race-b", "READY")
            await b.wait_for_stage("race-a", "READY")
        await self.save("race", "channel-a", a.handle("race-b").id)
        await self.save("race", "channel-b", b.handle("race-a").id)
        await self.save_sequencer("race", a)

    # --- paths of today's code, on a server that suggests continue-as-new at CUT_AT_EVENTS -

    async def awaiting_funds_continued(self) -> None:
        """AWAITING_FUNDS waiting for its recheck timer between changes (the
        `awaiting-funds-timer-between-changes` marker), in a fresh run of today's code
        (`provisioning-fewer-round-trips`: the balance read a local activity): a timer round,
        a reconnect while it waits (it changes nothing; the timer goes on), rounds until the
        server suggests continue-as-new. The next run, started in AWAITING_FUNDS, reads at
        once (it has armed nothing yet), is reconnected, the tokens arrive and its timer, not
        a signal, takes it to READY (the receipt wait reading the pair once mined)."""
        account = await self.account(m2m=0)
        node = Node("funds-cut", account, self.client)
        handle = node.handle("peer")
        async with AsyncExitStack() as stack:
            await node.start(
                stack,
                self.w3,
                self.deployment,
                {"peer": random_address()},
                funds_recheck_seconds=1.0,
            )
            await node.provisioner.peer_connected("peer")
            await node.wait_for_stage("peer", "AWAITING_FUNDS")
            first_run = (await handle.describe()).run_id
            await asyncio.sleep(1.5)  # one timer round
            await node.provisioner.peer_connected("peer")
            await until(lambda: continued(handle, first_run), what="the cut", timeout=60)
            await asyncio.sleep(0.3)
            await node.provisioner.peer_connected("peer")
            await asyncio.sleep(0.3)
            minter = Account.from_key(ANVIL_KEYS[0])
            await tn.send_and_wait(
                self.w3, minter, tn.build_mint(self.deployment, account.address, 2 * TARGET)
            )
            await node.wait_for_stage("peer", "READY", timeout=15)
            await node.registry.wait_ready("peer")
            await until(lambda: quiet(handle), what="the READY notification delivered")
        await self.save("awaiting_funds_continued", "channel-1", handle.id, first_run)
        await self.save("awaiting_funds_continued", "channel-2", handle.id)

    async def keeper_continued(self) -> None:
        """A fresh run of today's code provisions to READY and is paid below its top-up
        threshold; with the connector down, reconnects take it past the server's
        continue-as-new suggestion, so before continuing it waits for their READY
        notifications, and a `top_up` signalled meanwhile goes to the next run in
        `carried_signals`. The next run, started with the carried state, acts on it: a
        channel read (knowing its send sequence), the top-up through the sequencer, the read
        that sees it, the connector told."""
        ours, partner = await self.account(), await self.account()
        node = KeeperNode("keeper-cut", ours, self.client)
        handle = node.handle("peer")
        with tempfile.TemporaryDirectory() as data_dir:
            async with AsyncExitStack() as stack:
                all_workers = await stack.enter_async_context(AsyncExitStack())
                await node.start(
                    stack,
                    self.w3,
                    self.deployment,
                    {"peer": partner.address},
                    Path(data_dir),
                    workers=all_workers,
                    top_up_below=KEEPER_TARGET // 2,
                    # No keeper reads or idle close while recording: only what is sent.
                    idle_close_seconds=0,
                    keep_check_seconds=3600.0,
                )
                await node.provisioner.peer_connected("peer")
                channel_id = (await node.wait_for_stage("peer", "READY")).channel_id
                assert channel_id is not None
                await node.pay("peer", channel_id, 6 * KEEPER_TARGET // 10)
                first_run = (await handle.describe()).run_id
                # The connector goes down; the node's chain workers run on.
                await all_workers.aclose()
                await node.start_workers(stack, self.w3, self.deployment, connector=False)
                while not await _suggested(handle):
                    await handle.signal(ids.SIGNAL_PEER_CONNECTED)
                    await until(lambda: draining(handle), what="the reconnect taken")
                await handle.signal(ids.SIGNAL_TOP_UP)
                await until(lambda: draining(handle), what="the top_up signal taken")
                await stack.enter_async_context(
                    connector_worker(self.client, node.node_id, node.connector)
                )
                await until(lambda: continued(handle, first_run), what="the cut")
                await until(
                    lambda: _deposit_at_least(self, channel_id, ours.address, KEEPER_TARGET + 1),
                    what="the carried top-up",
                )
                await until(lambda: quiet(handle), what="the top-up read and told")
                await self.save("keeper_continued", "channel-1", handle.id, first_run)
                await self.save("keeper_continued", "channel-2", handle.id)

    async def sequencer_continued(self) -> None:
        """Three submitters streaming into one wallet's sequencer until it refuses a batch
        while continuing as new (the `submit_all` validator; a refusal leaves nothing in
        history) and the submitter sends it again. Records the run that refused it (admitted
        submissions answered, then continued as new) and the run that took it, started with
        the next nonce and the remembered answers."""
        node = Node("sequencer-cut", await self.account(), self.client)
        workflow_id = ids.sequencer_workflow_id(self.deployment.chain_id, node.account.address)
        submitter = RefusalCountingSubmitter(
            self.client, node.node_id, self.deployment.chain_id, node.account.address
        )

        async def submit(request_id: str) -> SubmitResult:
            request = SubmitRequest(request_id, (TxIntent(SendKind.APPROVE),))
            return await ActivityEnvironment().run(submitter.submit_transactions, request)

        async def stream(name: str) -> None:
            sent = 0
            while not submitter.refused:
                await submit(f"{name}/{sent}")
                sent += 1

        async with AsyncExitStack() as stack:
            await node.start_workers(stack, self.w3, self.deployment)
            await submit("first")
            first_run = (await self.client.get_workflow_handle(workflow_id).describe()).run_id
            async with asyncio.timeout(60):
                await asyncio.gather(*(stream(name) for name in "xyz"))
        runs = await accepted_per_run(self.client, workflow_id, first_run)
        took = next(i for i, (_, taken) in enumerate(runs) if set(submitter.refused) & set(taken))
        await self.save("sequencer_continued", "sequencer-1", workflow_id, runs[took - 1][0])
        await self.save("sequencer_continued", "sequencer-2", workflow_id, runs[took][0])


class RefusalCountingSubmitter(SequencerClientActivities):
    """The channel workflows' submitter, noting the request ids of batches the sequencer
    refused while continuing as new (it sends them again, as in production)."""

    def __init__(self, client: Client, node_id: str, chain_id: int, wallet: str) -> None:
        super().__init__(client, node_id, chain_id, wallet)
        self.refused: list[str] = []

    async def _update_with_start(self, batch: SubmitBatch) -> list[SubmitResult]:
        try:
            return await super()._update_with_start(batch)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == CONTINUING_AS_NEW:
                self.refused += [request.request_id for request in batch.requests]
            raise


async def _suggested(handle: WorkflowHandle) -> bool:
    """The server suggested continue-as-new to the run's latest workflow task."""
    suggested = False
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_started_event_attributes"):
            suggested = event.workflow_task_started_event_attributes.suggest_continue_as_new
    return suggested


async def _deposit_at_least(recorder: Recorder, channel_id: str, address: str, total: int) -> bool:
    side = await tn.get_participant(recorder.w3, recorder.deployment, channel_id, address)
    return side.deposit >= total


def random_address() -> str:
    return Account.from_key(secrets.token_bytes(32)).address


SCENARIOS: tuple[Callable[[Recorder], Awaitable[None]], ...] = (
    Recorder.happy_path,
    Recorder.awaiting_funds_then_retry,
    Recorder.skipped,
    Recorder.failed_then_retry,
    Recorder.race,
    Recorder.keeper_close,
)
# Continue-as-new, recorded where the server suggests it: the suggestion is in the history
# (each workflow task's start), so the replay cuts where the run did. A lowered
# MAX_HISTORY_EVENTS (as the integration tests lower it) is not: replayed with the real limit,
# such a run would arm a timer where its history continued as new.
CUT_AT_EVENTS = 60
CUTTING = {"limit.historyCount.suggestContinueAsNew": CUT_AT_EVENTS}
CUT_SCENARIOS: tuple[Callable[[Recorder], Awaitable[None]], ...] = (
    Recorder.awaiting_funds_continued,
    Recorder.keeper_continued,
    Recorder.sequencer_continued,
)


async def record(only: Sequence[str] = ()) -> list[Path]:
    HISTORIES.mkdir(exist_ok=True)
    with run_anvil() as chain:
        w3 = await connect_rpc(chain.url)
        try:
            deployment = await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
            written: list[Path] = []
            for dynamic_config, scenarios in (({}, SCENARIOS), (CUTTING, CUT_SCENARIOS)):
                chosen = [s for s in scenarios if not only or s.__name__ in only]
                if chosen:
                    written += await _record_on(dynamic_config, chosen, w3, deployment)
            return written
        finally:
            await w3.provider.disconnect()


async def _record_on(
    dynamic_config: dict[str, int | bool],
    scenarios: Sequence[Callable[[Recorder], Awaitable[None]]],
    w3: AsyncWeb3,
    deployment: Deployment,
) -> list[Path]:
    """Run `scenarios` on a dev server of their own, started with `dynamic_config`."""
    with run_temporal(ui=False, dynamic_config=dynamic_config) as server:
        client = await Client.connect(server.target, data_converter=pydantic_data_converter)
        recorder = Recorder(client, w3, deployment)
        for scenario in scenarios:
            await scenario(recorder)
        return recorder.written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the histories test_replay.py replays.")
    parser.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="SCENARIO",
        help="record only these (Recorder method names); the others stay as committed",
    )
    args = parser.parse_args(argv)
    for path in asyncio.run(record(args.only)):
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
