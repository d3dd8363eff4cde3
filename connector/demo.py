"""`paychan demo`: the embedded default, end to end, on one machine.

Temporal dev server (with its web UI) + anvil (`--block-time 1`) + the contracts + five
funded wallets + the 5-node line peer1…peer5 from `examples/` as real `paychan connector`
processes (each hosting its worker). It waits until every link's channel is READY on both
ends, and only then sends the first payment, so the output shows channels ready before any
packet. Everything started here is stopped on exit (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities import token_network as tn
from activities.deployment import deploy, fund, write_deployment
from activities.token_network import Deployment
from connector.devstack import (
    ANVIL_KEYS,
    PROJECT_ROOT,
    Anvil,
    TemporalDevServer,
    free_port,
    run_anvil,
    run_temporal,
)
from connector.http import HealthReport

NODES = ("peer1", "peer2", "peer3", "peer4", "peer5")
LINKS = tuple(itertools.pairwise(NODES))
M2M_PER_WALLET = 1_000_000 * 10**18
PAYMENT_AMOUNT = 1_000


@dataclass
class DemoNode:
    node_id: str
    index: int
    btp_port: int
    health_port: int
    admin_port: int
    process: subprocess.Popen | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/health"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/admin"

    @property
    def admin_token(self) -> str:
        return f"dev-admin-token-{self.node_id}"

    @property
    def key(self) -> str:
        return ANVIL_KEYS[self.index + 1]


@dataclass
class DemoStack:
    workdir: Path
    temporal: TemporalDevServer
    anvil: Anvil
    deployment: Deployment
    nodes: list[DemoNode]
    health: dict[str, HealthReport] = field(default_factory=dict)

    def all_links_ready(self) -> bool:
        for left, right in LINKS:
            for node, peer in ((left, right), (right, left)):
                report = self.health.get(node)
                if report is None or report.peers[peer].stage != "READY":
                    return False
        return True


def _node_env(stack_env: dict[str, str], nodes: list[DemoNode]) -> dict[str, str]:
    env = dict(stack_env)
    for node in nodes:
        upper = node.node_id.upper()
        env[f"{upper}_BTP_PORT"] = str(node.btp_port)
        env[f"{upper}_HEALTH_PORT"] = str(node.health_port)
        env[f"{upper}_ADMIN_PORT"] = str(node.admin_port)
        env[f"{upper}_TREASURY_EVM_PRIVATE_KEY"] = node.key
        env[f"{upper}_EVM_ADDRESS"] = Account.from_key(node.key).address
    return env


def _port(preferred: int, fixed: bool) -> int:
    if fixed:
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", preferred))
            return preferred
    return free_port()


@contextlib.asynccontextmanager
async def demo_stack(workdir: Path, *, fixed_ports: bool = True) -> AsyncIterator[DemoStack]:
    """Start everything, yield it, stop everything (connectors first, then the services)."""
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    nodes = [
        DemoNode(
            node_id=name,
            index=index,
            btp_port=_port(3001 + index, fixed_ports),
            health_port=_port(8081 + index, fixed_ports),
            admin_port=_port(9091 + index, fixed_ports),
        )
        for index, name in enumerate(NODES)
    ]
    db_file = workdir / "temporal.sqlite3"
    db_file.unlink(missing_ok=True)
    with (
        run_temporal(
            port=_port(7233, fixed_ports),
            ui_port=_port(8233, fixed_ports),
            db_file=db_file,
            log_file=logs / "temporal.log",
        ) as temporal,
        run_anvil(
            port=_port(8545, fixed_ports), block_time=1, log_file=logs / "anvil.log"
        ) as anvil,
    ):
        w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
        deployer = Account.from_key(ANVIL_KEYS[0])
        deployment = await deploy(w3, deployer, rpc_url=anvil.url)
        deployment_file = workdir / "deployment.json"
        write_deployment(deployment_file, deployment)
        wallets = [Account.from_key(node.key).address for node in nodes]
        await fund(w3, deployer, deployment, wallets, eth_wei=0, m2m_wei=M2M_PER_WALLET)
        await w3.provider.disconnect()
        env = _node_env(
            {
                **os.environ,
                "PAYCHAN_RPC_URL": anvil.url,
                "PAYCHAN_DEPLOYMENT": str(deployment_file),
                "PAYCHAN_DATA_DIR": str(workdir / "data"),
                "TEMPORAL_ADDRESS": temporal.target,
                "PAYCHAN_LOG_FORMAT": "json",
            },
            nodes,
        )
        stack = DemoStack(workdir, temporal, anvil, deployment, nodes)
        try:
            for node in nodes:
                node.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "connector.cli",
                        "connector",
                        "--config",
                        str(PROJECT_ROOT / "examples" / f"{node.node_id}.yaml"),
                    ],
                    env=env,
                    cwd=workdir,
                    stdout=open(logs / f"{node.node_id}.log", "ab"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            yield stack
        finally:
            _stop_nodes(nodes)


def _stop_nodes(nodes: list[DemoNode]) -> None:
    for node in nodes:
        if node.process and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


async def poll_health(stack: DemoStack, session: aiohttp.ClientSession) -> None:
    for node in stack.nodes:
        if node.process is not None and node.process.poll() is not None:
            raise RuntimeError(
                f"{node.node_id} exited with code {node.process.returncode}; "
                f"see {stack.workdir / 'logs' / (node.node_id + '.log')}"
            )
        try:
            async with session.get(node.health_url, timeout=aiohttp.ClientTimeout(2)) as resp:
                stack.health[node.node_id] = HealthReport.model_validate_json(await resp.read())
        except (aiohttp.ClientError, TimeoutError):
            stack.health.pop(node.node_id, None)


async def send_payment(
    session: aiohttp.ClientSession, node: DemoNode, destination: str, amount: int
) -> dict:
    async with session.post(
        node.admin_url + "/payments",
        json={"destination": destination, "amount": str(amount)},
        headers={"Authorization": f"Bearer {node.admin_token}"},
        timeout=aiohttp.ClientTimeout(35),
    ) as resp:
        resp.raise_for_status()
        return await resp.json()


def status_table(stack: DemoStack) -> str:
    header = (
        f"{'node':6} {'peer':6} {'link':5} {'stage':18} {'channel':14} {'ours':>10} {'theirs':>10}"
    )
    lines = [header, "-" * len(header)]
    for node in NODES:
        report = stack.health.get(node)
        if report is None:
            lines.append(f"{node:6} (starting)")
            continue
        for peer_id, peer in sorted(report.peers.items()):
            channel = (peer.channel_id[:10] + "…") if peer.channel_id else "-"
            lines.append(
                f"{node:6} {peer_id:6} {'up' if peer.connected else 'down':5} "
                f"{peer.stage or '-':18} {channel:14} "
                f"{_amount(peer.our_deposit):>10} {_amount(peer.their_deposit):>10}"
            )
    return "\n".join(lines)


def _amount(base_units: int | None) -> str:
    return "-" if base_units is None else str(base_units)


@dataclass
class DemoResult:
    seconds_to_ready: float
    fulfilled: int
    rejected: int
    # Per link, from the chain itself: channels ever opened for the pair, and both deposits.
    on_chain: list[LinkOnChain] = field(default_factory=list)


@dataclass(frozen=True)
class LinkOnChain:
    left: str
    right: str
    channels_opened: int
    left_deposit: int
    right_deposit: int


async def read_links_on_chain(stack: DemoStack) -> list[LinkOnChain]:
    """What the chain says of each link, independently of what the connectors report."""
    w3 = AsyncWeb3(AsyncHTTPProvider(stack.anvil.url))
    by_id = {node.node_id: Account.from_key(node.key).address for node in stack.nodes}
    links = []
    for left, right in LINKS:
        a, b = by_id[left], by_id[right]
        channel_id = await tn.get_channel_id(w3, stack.deployment, a, b)
        deposits = [0, 0]
        if channel_id is not None:
            for index, address in enumerate((a, b)):
                side = await tn.get_participant(w3, stack.deployment, channel_id, address)
                deposits[index] = side.deposit
        links.append(
            LinkOnChain(
                left=left,
                right=right,
                channels_opened=await tn.get_pair_counter(w3, stack.deployment, a, b),
                left_deposit=deposits[0],
                right_deposit=deposits[1],
            )
        )
    await w3.provider.disconnect()
    return links


async def run_demo(
    workdir: Path,
    *,
    payments: int = 100,
    fixed_ports: bool = True,
    ready_timeout: float = 180.0,
    keep_running: asyncio.Event | None = None,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; with `keep_running`, keep showing status until that event is set."""
    started = time.monotonic()
    async with (
        demo_stack(workdir, fixed_ports=fixed_ports) as stack,
        aiohttp.ClientSession() as session,
    ):
        out(f'Temporal UI:  {stack.temporal.ui_url}  (filter: NodeId = "peer2")')
        out(f"Temporal:     {stack.temporal.target}    anvil: {stack.anvil.url}")
        out(f"Contracts:    registry {stack.deployment.registry}")
        out(
            f"              token {stack.deployment.token}  network {stack.deployment.token_network}"
        )
        for node in stack.nodes:
            out(f"{node.node_id} health: {node.health_url}")
        deadline = started + ready_timeout
        last_table = 0.0
        while not stack.all_links_ready():
            if time.monotonic() > deadline:
                raise TimeoutError("channels not READY in time:\n" + status_table(stack))
            await poll_health(stack, session)
            if time.monotonic() - last_table > 2:
                out(status_table(stack))
                last_table = time.monotonic()
            await asyncio.sleep(0.25)
        to_ready = time.monotonic() - started
        out(status_table(stack))
        out(f"All {len(LINKS)} links READY on both ends after {to_ready:.1f}s; no packet sent yet.")
        on_chain = await read_links_on_chain(stack)
        for link in on_chain:
            out(
                f"on-chain {link.left}-{link.right}: {link.channels_opened} channel opened, "
                f"deposits {link.left_deposit} / {link.right_deposit}"
            )
        sender = stack.nodes[0]
        results = await asyncio.gather(
            *(send_payment(session, sender, "g.peer5", PAYMENT_AMOUNT) for _ in range(payments))
        )
        fulfilled = sum(1 for result in results if result["fulfilled"])
        out(
            f"Sent {payments} payments peer1 -> peer5: {fulfilled} fulfilled, "
            f"{payments - fulfilled} rejected."
        )
        if keep_running is not None:
            out("Running; Ctrl-C stops everything.")
            while not keep_running.is_set():
                await poll_health(stack, session)
                out(status_table(stack))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(keep_running.wait(), 5)
        return DemoResult(to_ready, fulfilled, payments - fulfilled, on_chain)


def demo_command(args: argparse.Namespace) -> int:
    async def main() -> DemoResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await run_demo(
            args.workdir,
            payments=args.payments,
            keep_running=None if args.exit_after_traffic else stop,
        )

    try:
        asyncio.run(main())
    except (TimeoutError, RuntimeError, OSError) as err:
        print(f"paychan demo: {err}", file=sys.stderr)
        return 1
    return 0
