"""Record the workflow histories that `test_replay.py` replays.

    .venv/bin/python -m tests.workflows.record_histories [--only SCENARIO ...]

Starts its own Temporal dev server and anvil (automine), runs each provisioning scenario
with in-process workers, and writes every ChannelWorkflow and WalletSequencer history it
produced to `tests/workflows/histories/<scenario>--<workflow>.json` (Temporal's JSON
history format, the same as `temporal workflow show --output json`). Re-record after a
deliberate, patched workflow change only; the committed files are what replay guards.
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
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import deploy
from activities.rpc import connect_rpc
from activities.token_network import Deployment
from connector.devstack import ANVIL_KEYS, run_anvil, run_temporal
from tests.integration.keeper_node import SETTLE_TIMEOUT as KEEPER_SETTLE_TIMEOUT
from tests.integration.keeper_node import TARGET as KEEPER_TARGET
from tests.integration.keeper_node import KeeperNode, mine, until
from tests.integration.provisioning_node import TARGET, Node
from workflows import ids
from workflows.messages import CloseChannel

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

    async def save(self, scenario: str, name: str, workflow_id: str) -> None:
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
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


async def _deposit_at_least(recorder: Recorder, channel_id: str, address: str, total: int) -> bool:
    side = await tn.get_participant(recorder.w3, recorder.deployment, channel_id, address)
    return side.deposit >= total


def random_address() -> str:
    return Account.from_key(secrets.token_bytes(32)).address


async def record(only: Sequence[str] = ()) -> list[Path]:
    HISTORIES.mkdir(exist_ok=True)
    with run_temporal(ui=False) as server, run_anvil() as chain:
        client = await Client.connect(server.target, data_converter=pydantic_data_converter)
        w3 = await connect_rpc(chain.url)
        try:
            recorder = Recorder(client, w3, await deploy(w3, Account.from_key(ANVIL_KEYS[0])))
            scenarios: list[Callable[[], Awaitable[None]]] = [
                recorder.happy_path,
                recorder.awaiting_funds_then_retry,
                recorder.skipped,
                recorder.failed_then_retry,
                recorder.race,
                recorder.keeper_close,
            ]
            for scenario in scenarios:
                if not only or scenario.__name__ in only:
                    await scenario()
            return recorder.written
        finally:
            await w3.provider.disconnect()


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
