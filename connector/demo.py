"""`paychan demo`: the embedded default, end to end, on one machine.

Temporal dev server (with its web UI) + anvil (`--block-time 1`) + the contracts + five
funded wallets + the 5-node line peer1…peer5 from `examples/` as real `paychan connector`
processes (each hosting its worker). It waits until every link's channel is READY on both
ends, and only then sends the first payment, so the output shows channels ready before any
packet; then it shows the claims that settle every link arrive, and keeps each node's
/metrics in `<workdir>/metrics/`. While it runs it prints a progress line and a status table
(stages and deposits from /health, balances from the admin API, latest claims from /health).
Everything started here is stopped on exit (Ctrl-C at any point included).
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
import urllib.parse
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
from workflows.ids import CHANNEL_WORKFLOW

NODES = ("peer1", "peer2", "peer3", "peer4", "peer5")
LINKS = tuple(itertools.pairwise(NODES))
M2M_PER_WALLET = 1_000_000 * 10**18
# The examples' threshold: what a node may owe its neighbour before it sends a claim. The
# deposit target is 10 times it (initialDepositMultiplier).
SETTLEMENT_THRESHOLD = 1_000_000
# 100 payments of 50,000 move 5,000,000 over every link: about five claims per link.
PAYMENT_AMOUNT = 50_000


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
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/metrics"

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
    settlement_threshold: int = SETTLEMENT_THRESHOLD
    health: dict[str, HealthReport] = field(default_factory=dict)
    # node id -> peer id -> ledger balance (positive: the peer owes the node)
    balances: dict[str, dict[str, int]] = field(default_factory=dict)

    def ready_link_ends(self) -> int:
        ready = 0
        for left, right in LINKS:
            for node, peer in ((left, right), (right, left)):
                report = self.health.get(node)
                if report is not None and report.peers[peer].stage == "READY":
                    ready += 1
        return ready

    def all_links_ready(self) -> bool:
        return self.ready_link_ends() == 2 * len(LINKS)

    def link_claims(self) -> list[LinkClaims]:
        """Per link, the latest claim its left end sent and its right end received."""
        links = []
        for left, right in LINKS:
            sent = self.health.get(left)
            received = self.health.get(right)
            sent_peer = sent.peers[right] if sent else None
            received_peer = received.peers[left] if received else None
            links.append(
                LinkClaims(
                    left=left,
                    right=right,
                    sent_nonce=sent_peer.sent_claim_nonce if sent_peer else None,
                    acknowledged=bool(sent_peer and sent_peer.sent_claim_acknowledged),
                    received_nonce=received_peer.received_claim_nonce if received_peer else None,
                    received_amount=received_peer.received_claim_amount if received_peer else None,
                )
            )
        return links


@dataclass(frozen=True)
class LinkClaims:
    left: str
    right: str
    sent_nonce: int | None
    acknowledged: bool
    received_nonce: int | None
    received_amount: int | None


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
                "PAYCHAN_SETTLEMENT_THRESHOLD": str(SETTLEMENT_THRESHOLD),
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


# --- watching the nodes ------------------------------------------------------------------------


async def poll(stack: DemoStack, session: aiohttp.ClientSession, *, balances: bool) -> None:
    """Read every node's /health (and, with `balances`, its ledger from the admin API)."""
    for node in stack.nodes:
        if node.process is not None and node.process.poll() is not None:
            raise RuntimeError(
                f"{node.node_id} exited with code {node.process.returncode}; "
                f"see {stack.workdir / 'logs' / (node.node_id + '.log')}"
            )
        try:
            async with session.get(node.health_url, timeout=aiohttp.ClientTimeout(2)) as resp:
                stack.health[node.node_id] = HealthReport.model_validate_json(await resp.read())
            if balances:
                async with session.get(
                    node.admin_url + "/balances",
                    headers={"Authorization": f"Bearer {node.admin_token}"},
                    timeout=aiohttp.ClientTimeout(2),
                ) as resp:
                    accounts = await resp.json() if resp.status == 200 else []
                stack.balances[node.node_id] = {
                    account["peerId"]: int(account["balance"]) for account in accounts
                }
        except (aiohttp.ClientError, TimeoutError, ValueError):
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


async def save_metrics(stack: DemoStack, session: aiohttp.ClientSession) -> dict[str, Path]:
    """Each node's /metrics as it is now, kept in `<workdir>/metrics/<node>.prom`."""
    folder = stack.workdir / "metrics"
    folder.mkdir(exist_ok=True)
    saved = {}
    for node in stack.nodes:
        async with session.get(node.metrics_url, timeout=aiohttp.ClientTimeout(5)) as resp:
            resp.raise_for_status()
            path = folder / f"{node.node_id}.prom"
            path.write_bytes(await resp.read())
            saved[node.node_id] = path
    return saved


# --- what is shown (pure) ----------------------------------------------------------------------

TABLE_NOTE = (
    "Amounts in M2M base units (k = 10^3, M = 10^6). BALANCE > 0: the peer owes the node.\n"
    "CLAIM: #nonce and cumulative amount of the latest claim; + once acknowledged."
)


def short_amount(value: int | None) -> str:
    """`12.5M`, `-50k`, `900`: amounts that fit a narrow column."""
    if value is None:
        return "-"
    for size, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def _claim(nonce: int | None, amount: int | None, acknowledged: bool | None = None) -> str:
    if not nonce:
        return "-"
    return f"#{nonce} {short_amount(amount)}" + ("+" if acknowledged else "")


def status_table(stack: DemoStack) -> str:
    columns = (
        f"{'NODE':5} {'PEER':5} {'LINK':4} {'STAGE':17} {'CHANNEL':11} {'OURS':>6} "
        f"{'THEIRS':>6} {'BALANCE':>7} {'CLAIM SENT':>11} {'CLAIM RECV':>10}"
    )
    lines = [columns]
    for node in NODES:
        report = stack.health.get(node)
        if report is None:
            lines.append(f"{node:5} (starting)")
            continue
        balances = stack.balances.get(node, {})
        for peer_id, peer in sorted(report.peers.items()):
            channel = (peer.channel_id[:10] + "…") if peer.channel_id else "-"
            sent = _claim(
                peer.sent_claim_nonce, peer.sent_claim_amount, peer.sent_claim_acknowledged
            )
            received = _claim(peer.received_claim_nonce, peer.received_claim_amount)
            lines.append(
                f"{node:5} {peer_id:5} {'up' if peer.connected else 'down':4} "
                f"{peer.stage or '-':17} {channel:11} {short_amount(peer.our_deposit):>6} "
                f"{short_amount(peer.their_deposit):>6} "
                f"{short_amount(balances.get(peer_id)):>7} {sent:>11} {received:>10}"
            )
    return "\n".join(lines)


@dataclass
class Progress:
    """What the one-line progress report counts."""

    payments: int
    answered: int = 0
    fulfilled: int = 0

    def line(self, stack: DemoStack, elapsed: float) -> str:
        ends = stack.ready_link_ends()
        settled = sum(1 for claims in stack.link_claims() if claims.received_nonce)
        return (
            f"[{elapsed:6.1f}s] READY {ends}/{2 * len(LINKS)} link ends | payments "
            f"{self.answered}/{self.payments} answered, {self.fulfilled} fulfilled | "
            f"claims on {settled}/{len(LINKS)} links"
        )


# --- the demo ----------------------------------------------------------------------------------


@dataclass
class DemoResult:
    seconds_to_ready: float
    fulfilled: int
    rejected: int
    # Per link, from the chain itself: channels ever opened for the pair, and both deposits.
    on_chain: list[LinkOnChain] = field(default_factory=list)
    # Per link, the claims its left end sent and its right end received, at the end.
    claims: list[LinkClaims] = field(default_factory=list)
    # Each node's /metrics at the end of the traffic.
    metrics: dict[str, Path] = field(default_factory=dict)


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


def _urls(stack: DemoStack) -> list[str]:
    ui = stack.temporal.ui_url
    listing = f"{ui}/namespaces/default/workflows?query=" + urllib.parse.quote(
        f'WorkflowType = "{CHANNEL_WORKFLOW}"'
    )
    lines = [
        f"Temporal UI  {listing}",
        '             filters: NodeId = "peer2" | Stage = "AWAITING_FUNDS" | PeerId = "peer3"',
        f"Temporal     {stack.temporal.target}    anvil {stack.anvil.url} (block time 1 s)",
        f"Contracts    registry {stack.deployment.registry}",
        f"             token {stack.deployment.token}  network {stack.deployment.token_network}",
    ]
    for node in stack.nodes:
        lines.append(f"{node.node_id}        {node.health_url}   {node.metrics_url}")
    return lines


async def _watch(
    stack: DemoStack,
    session: aiohttp.ClientSession,
    done: Callable[[], bool],
    progress: Progress,
    started: float,
    out: Callable[[str], None],
    *,
    deadline: float,
    what: str,
) -> None:
    """Poll the nodes until `done()`; the progress line every 2 s, the table when it changes."""
    last_line = last_table_at = 0.0
    last_table = ""
    while True:
        await poll(stack, session, balances=time.monotonic() - last_line > 2)
        if done():
            return
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{what} not reached in time:\n" + status_table(stack))
        if now - last_line > 2:
            table = status_table(stack)
            if table != last_table or now - last_table_at > 15:
                out(table)
                last_table, last_table_at = table, now
            out(progress.line(stack, now - started))
            last_line = now
        await asyncio.sleep(0.25)


async def run_demo(
    workdir: Path,
    *,
    payments: int = 100,
    amount: int = PAYMENT_AMOUNT,
    fixed_ports: bool = True,
    ready_timeout: float = 180.0,
    settle_timeout: float = 90.0,
    keep_running: asyncio.Event | None = None,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; with `keep_running`, keep showing status until that event is set."""
    started = time.monotonic()
    progress = Progress(payments)
    out(f"paychan demo: the line {' - '.join(NODES)}; state and logs in {workdir}")
    async with (
        demo_stack(workdir, fixed_ports=fixed_ports) as stack,
        aiohttp.ClientSession() as session,
    ):
        for line in _urls(stack):
            out(line)
        out(TABLE_NOTE)
        await _watch(
            stack,
            session,
            stack.all_links_ready,
            progress,
            started,
            out,
            deadline=started + ready_timeout,
            what="every link READY on both ends",
        )
        to_ready = time.monotonic() - started
        await poll(stack, session, balances=True)
        out(status_table(stack))
        out(f"All {len(LINKS)} links READY on both ends after {to_ready:.1f}s; no packet sent yet.")
        on_chain = await read_links_on_chain(stack)
        for link in on_chain:
            out(
                f"on-chain {link.left}-{link.right}: {link.channels_opened} channel opened, "
                f"deposits {link.left_deposit} / {link.right_deposit}"
            )

        out(f"Sending {payments} payments of {amount} peer1 -> peer5 (g.peer5)...")
        sender = stack.nodes[0]

        async def pay() -> dict:
            result = await send_payment(session, sender, "g.peer5", amount)
            progress.answered += 1
            progress.fulfilled += bool(result["fulfilled"])
            return result

        sending = asyncio.gather(*(pay() for _ in range(payments)))
        try:
            await _watch(
                stack,
                session,
                sending.done,
                progress,
                started,
                out,
                deadline=time.monotonic() + 60,
                what="every payment answered",
            )
            results = await sending
        finally:
            if not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
        fulfilled = sum(1 for result in results if result["fulfilled"])
        out(
            f"Sent {payments} payments peer1 -> peer5: {fulfilled} fulfilled, "
            f"{payments - fulfilled} rejected."
        )
        if fulfilled * amount >= stack.settlement_threshold:
            # Enough was paid across every link for each to owe a claim: show them arrive.
            await _watch(
                stack,
                session,
                lambda: all(claims.received_nonce for claims in stack.link_claims()),
                progress,
                started,
                out,
                deadline=time.monotonic() + settle_timeout,
                what="a claim on every link",
            )
        await poll(stack, session, balances=True)
        out(status_table(stack))
        claims = stack.link_claims()
        for link in claims:
            out(
                f"settled {link.left} -> {link.right}: claim #{link.received_nonce or 0} for "
                f"{link.received_amount or 0} received by {link.right}"
            )
        metrics = await save_metrics(stack, session)
        out(f"Each node's /metrics now: {stack.workdir / 'metrics'}/<node>.prom")
        if keep_running is not None:
            out("Running; Ctrl-C stops everything.")
            while not keep_running.is_set():
                await poll(stack, session, balances=True)
                out(status_table(stack))
                out(progress.line(stack, time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(keep_running.wait(), 5)
        return DemoResult(to_ready, fulfilled, payments - fulfilled, on_chain, claims, metrics)


def demo_command(args: argparse.Namespace) -> int:
    async def main() -> DemoResult | None:
        stop = asyncio.Event()
        demo = asyncio.current_task()
        assert demo is not None
        traffic_done = False

        def on_signal() -> None:
            # Before the traffic is done the demo is cancelled where it is; after, the status
            # loop ends. Either way every process it started is stopped on the way out.
            stop.set()
            if not traffic_done:
                demo.cancel()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)

        def out(line: str) -> None:
            nonlocal traffic_done
            traffic_done = traffic_done or line.startswith("Running;")
            print(line, flush=True)

        try:
            return await run_demo(
                args.workdir,
                payments=args.payments,
                fixed_ports=not args.any_ports,
                keep_running=None if args.exit_after_traffic else stop,
                out=out,
            )
        except asyncio.CancelledError:
            print("paychan demo: stopped; every process it started has exited.", flush=True)
            return None

    try:
        asyncio.run(main())
    except (TimeoutError, RuntimeError, OSError) as err:
        print(f"paychan demo: {err}", file=sys.stderr)
        return 1
    return 0
