"""SoakStack: every process of the chaos soak, each one killable (SIGKILL) and restartable in
place, as `tests/chaos/soak.py` needs them.

    Temporal dev server   SQLite file; restarted on the same file and port
    anvil                 a block every second; restarted from its state file (see below)
    peer1 … peer5         `paychan connector` processes, the 5-node line of examples/, each
                          with settlement on, fixed BTP / health / admin ports and a ledger file
    peer3 (the hub)       `temporal.runWorker: false`: two `paychan worker` processes serve
                          its provisioning; its connector only polls its own queue
    extra01 … extra10     lightweight BTP peers of the hub with wallets of their own
                          (`tests/chaos/extra_peer.py`), run in the calling process

anvil and its state: `--state FILE` loads the file at start and dumps the chain to it on a
clean exit only, so a SIGKILL would lose every block mined since the last dump. A real RPC
node that crashes does not roll its chain back: the chain lives on, the node resyncs to it;
what the node loses is its mempool. `AnvilProcess.crash` models exactly that: it stops the
mining, dumps the chain (`anvil_dumpState`) into the state file, then SIGKILLs anvil, which
then restarts from that file with every mined block (logs and receipts included) and an
empty mempool: transactions broadcast but not mined are gone, and whoever waits for them
must broadcast them again. A rollback of mined blocks (a deep reorg) is not a fault this
soak injects: the workflows act on one receipt, as DESIGN.md's chain model does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.deployment import deploy, fund, write_deployment
from activities.token_network import Deployment
from connector.claims import ClaimDomain
from connector.devstack import (
    ANVIL_KEYS,
    PROJECT_ROOT,
    SEARCH_ATTRIBUTES,
    anvil_binary,
    free_port,
    temporal_binary,
)
from connector.http import HealthReport
from tests.chaos.extra_peer import ExtraPeer
from tests.chaos.node_process import PAYCHAN
from tests.integration.settlement_nodes import (
    DEPOSIT_MULTIPLIER,
    KEY_ENV,
    THRESHOLD,
    PeerLink,
    node_yaml,
    write_node_yaml,
)

NODES = ("peer1", "peer2", "peer3", "peer4", "peer5")
LINKS = tuple(pairwise(NODES))
HUB = "peer3"
HUB_WORKERS = 2
EXTRA_PEERS = 10
TARGET = DEPOSIT_MULTIPLIER * THRESHOLD
EXTRA_TOKEN = "extra-peer-token-of-the-hub"
M2M_PER_WALLET = 10**24
BLOCK_TIME = 1
START_TIMEOUT = 60.0


class ChildProcess:
    """A child in its own session (so a SIGKILL takes its children too), output appended to
    one log file across restarts."""

    def __init__(
        self, name: str, argv: list[str], log_file: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self._argv = argv
        self._log_file = log_file
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        assert not self.alive, f"{self.name} is running"
        with self._log_file.open("ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._argv,
                cwd=PROJECT_ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no last heartbeat."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self, grace: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()


async def _until(check, what: str, child: ChildProcess, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if not child.alive:
            raise RuntimeError(f"{what} exited while starting; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def _rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0) -> dict:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
            timeout=aiohttp.ClientTimeout(timeout),
        ) as response,
    ):
        return await response.json()


class AnvilProcess(ChildProcess):
    def __init__(self, port: int, state_file: Path, log_file: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state_file = state_file
        argv = [
            str(anvil_binary()),
            *("--host", "127.0.0.1", "--port", str(port), "--accounts", str(len(ANVIL_KEYS))),
            *("--silent", "--state", str(state_file)),
        ]
        super().__init__("anvil", argv, log_file)

    async def start(self) -> float:
        began = time.monotonic()
        self.spawn()
        await _until(self._answers, "anvil", self)
        return time.monotonic() - began

    async def mine_every_block_time(self) -> None:
        """From now on (and in every later start) a block every BLOCK_TIME seconds."""
        await _rpc(self.url, "evm_setAutomine", [False])
        await _rpc(self.url, "evm_setIntervalMining", [BLOCK_TIME])
        if "--block-time" not in self._argv:
            self._argv += ["--block-time", str(BLOCK_TIME)]

    async def _answers(self) -> bool:
        try:
            return "result" in await _rpc(self.url, "eth_chainId", timeout=0.5)
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def crash(self) -> int:
        """Keep the mined chain in the state file, then SIGKILL (see the module doc); return
        the last block kept."""
        await _rpc(self.url, "evm_setIntervalMining", [0])
        dumped = await _rpc(self.url, "anvil_dumpState", timeout=30.0)
        state = gzip.decompress(bytes.fromhex(dumped["result"].removeprefix("0x")))
        partial = self.state_file.with_suffix(".partial")
        partial.write_bytes(state)
        os.replace(partial, self.state_file)
        block = int((await _rpc(self.url, "eth_blockNumber"))["result"], 16)
        self.kill()
        return block


class TemporalProcess(ChildProcess):
    def __init__(self, port: int, db_file: Path, log_file: Path) -> None:
        self.port = port
        self.target = f"127.0.0.1:{port}"
        argv = [
            str(temporal_binary()),
            *("server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"),
            *("--log-level", "warn", "--db-filename", str(db_file)),
            *("--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"),
        ]
        for name, kind in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", f"{name}={kind}"]
        super().__init__("temporal", argv, log_file)

    async def start(self) -> float:
        began = time.monotonic()
        self.spawn()
        await _until(self._listens, "temporal dev server", self)
        return time.monotonic() - began

    async def _listens(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


@dataclass
class NodePorts:
    btp: int
    health: int
    admin: int


class ConnectorProcess(ChildProcess):
    def __init__(self, node_id: str, config: Path, ports: NodePorts, key: str, logs: Path) -> None:
        self.node_id = node_id
        self.ports = ports
        self.config = config
        self.account: LocalAccount = Account.from_key(key)
        self.health_url = f"http://127.0.0.1:{ports.health}/health"
        self.admin_url = f"http://127.0.0.1:{ports.admin}/admin"
        self.admin_token = f"admin-token-of-{node_id}"
        super().__init__(
            node_id,
            [str(PAYCHAN), "connector", "--config", str(config)],
            logs / f"{node_id}.log",
            {KEY_ENV: key},
        )

    async def start(self, session: aiohttp.ClientSession) -> float:
        began = time.monotonic()
        self.spawn()
        await _until(lambda: self._healthy(session), self.node_id, self)
        return time.monotonic() - began

    async def _healthy(self, session: aiohttp.ClientSession) -> bool:
        return await self.health(session) is not None

    async def health(self, session: aiohttp.ClientSession) -> HealthReport | None:
        try:
            async with session.get(self.health_url, timeout=aiohttp.ClientTimeout(2)) as resp:
                return HealthReport.model_validate_json(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def balances(self, session: aiohttp.ClientSession) -> dict[str, int] | None:
        try:
            async with session.get(
                self.admin_url + "/balances",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=aiohttp.ClientTimeout(5),
            ) as resp:
                if resp.status != 200:
                    return None
                accounts = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return {account["peerId"]: int(account["balance"]) for account in accounts}

    @property
    def ledger_path(self) -> Path:
        return self.config.parent / self.node_id / "ledger.sqlite3"


class WorkerProcess(ChildProcess):
    def __init__(self, name: str, config: Path, key: str, logs: Path) -> None:
        super().__init__(
            name,
            [str(PAYCHAN), "worker", "--config", str(config)],
            logs / f"{name}.log",
            {KEY_ENV: key},
        )

    async def start(self) -> float:
        """Spawn it; it polls once connected (waiting for Temporal if need be), and the
        soak's recovery check waits for the work it does."""
        self.spawn()
        return 0.0


@dataclass
class SoakStack:
    workdir: Path
    temporal: TemporalProcess
    anvil: AnvilProcess
    deployment: Deployment
    connectors: dict[str, ConnectorProcess]
    workers: list[WorkerProcess]
    extras: list[ExtraPeer]
    session: aiohttp.ClientSession
    w3: AsyncWeb3
    setup_seconds: float = 0.0
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> ClaimDomain:
        return ClaimDomain(self.deployment.chain_id, self.deployment.token_network)

    def all_processes(self) -> list[ChildProcess]:
        return [self.temporal, self.anvil, *self.connectors.values(), *self.workers]

    def extra(self, peer_id: str) -> ExtraPeer:
        (found,) = [peer for peer in self.extras if peer.peer_id == peer_id]
        return found


def _routes(index: int, extra_ids: list[str]) -> list[tuple[str, str]]:
    """Static routes beyond the direct peers: every farther node via the neighbour towards
    it, and the hub's extra peers via the neighbour towards the hub."""
    routes = []
    for other, node in enumerate(NODES):
        if abs(other - index) > 1:
            routes.append((f"g.{node}", NODES[index + (1 if other > index else -1)]))
    hub = NODES.index(HUB)
    if index != hub:
        towards = NODES[index + (1 if hub > index else -1)]
        routes += [(f"g.{extra}", towards) for extra in extra_ids]
    return routes


def write_configs(
    directory: Path,
    *,
    ports: dict[str, NodePorts],
    addresses: dict[str, str],
    extras: list[ExtraPeer],
    deployment_file: Path,
    temporal_address: str,
    rpc_url: str,
) -> dict[str, Path]:
    """The line's five node YAMLs, as an operator writes them (settlement on, fixed ports)."""
    paths = {}
    extra_ids = [peer.peer_id for peer in extras]
    for index, node in enumerate(NODES):
        peers = []
        if index > 0:  # the left neighbour dials in
            left = NODES[index - 1]
            peers.append(PeerLink(left, addresses[left]))
        if index < len(NODES) - 1:  # we dial the right neighbour
            right = NODES[index + 1]
            peers.append(PeerLink(right, addresses[right], ports[right].btp))
        if node == HUB:
            peers += [PeerLink(peer.peer_id, peer.address) for peer in extras]
        document = node_yaml(
            node,
            port=ports[node].btp,
            peers=peers,
            data_dir=directory,
            deployment_file=deployment_file,
            temporal_address=temporal_address,
            rpc_url=rpc_url,
            admin_port=ports[node].admin,
            routes=_routes(index, extra_ids),
        )
        if node == HUB:
            for peer in document["peers"]:
                if peer["id"] in extra_ids:
                    peer["authToken"] = EXTRA_TOKEN
        document["health"] = {"port": ports[node].health}
        document["settlement"]["blockTimeSeconds"] = float(BLOCK_TIME)
        document["temporal"]["runWorker"] = node != HUB
        paths[node] = write_node_yaml(directory / f"{node}.yaml", document)
    return paths


@contextlib.asynccontextmanager
async def soak_stack(workdir: Path) -> AsyncIterator[SoakStack]:
    """Everything started (connectors healthy; no channel waited for); stopped on exit,
    connectors and workers first."""
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    state_file = workdir / "anvil-state.json"
    state_file.unlink(missing_ok=True)
    db_file = workdir / "temporal.sqlite3"
    db_file.unlink(missing_ok=True)
    async with AsyncExitStack() as stack:
        temporal = TemporalProcess(free_port(), db_file, logs / "temporal.log")
        stack.callback(temporal.stop)
        # The contracts go in at automine speed; every later start mines a block a second.
        anvil = AnvilProcess(free_port(), state_file, logs / "anvil.log")
        stack.callback(anvil.stop)
        await asyncio.gather(temporal.start(), anvil.start())
        w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
        stack.push_async_callback(w3.provider.disconnect)
        deployment = await deploy(w3, Account.from_key(ANVIL_KEYS[0]))
        keys = {node: ANVIL_KEYS[index + 1] for index, node in enumerate(NODES)}
        addresses = {node: Account.from_key(key).address for node, key in keys.items()}
        await fund(
            w3,
            Account.from_key(ANVIL_KEYS[0]),
            deployment,
            list(addresses.values()),
            eth_wei=0,
            m2m_wei=M2M_PER_WALLET,
        )
        await anvil.mine_every_block_time()
        deployment_file = workdir / "deployment.json"
        write_deployment(deployment_file, deployment)

        ports = {node: NodePorts(free_port(), free_port(), free_port()) for node in NODES}
        session = await stack.enter_async_context(aiohttp.ClientSession())
        domain = ClaimDomain(deployment.chain_id, deployment.token_network)
        extras = [
            ExtraPeer(
                f"extra{index:02d}",
                node_id=HUB,
                node_url=f"ws://127.0.0.1:{ports[HUB].btp}",
                node_address=addresses[HUB],
                auth_token=EXTRA_TOKEN,
                domain=domain,
            )
            for index in range(1, EXTRA_PEERS + 1)
        ]
        for peer in extras:
            stack.push_async_callback(peer.disconnect)
        configs = write_configs(
            workdir,
            ports=ports,
            addresses=addresses,
            extras=extras,
            deployment_file=deployment_file,
            temporal_address=temporal.target,
            rpc_url=anvil.url,
        )
        connectors = {
            node: ConnectorProcess(node, configs[node], ports[node], keys[node], logs)
            for node in NODES
        }
        workers = [
            WorkerProcess(f"{HUB}-worker{index}", configs[HUB], keys[HUB], logs)
            for index in range(1, HUB_WORKERS + 1)
        ]
        for child in (*connectors.values(), *workers):
            stack.callback(child.stop)
        for worker in workers:
            await worker.start()
        await asyncio.gather(*(c.start(session) for c in connectors.values()))
        yield SoakStack(
            workdir=workdir,
            temporal=temporal,
            anvil=anvil,
            deployment=deployment,
            connectors=connectors,
            workers=workers,
            extras=extras,
            session=session,
            w3=w3,
            setup_seconds=time.monotonic() - began,
            addresses={**addresses, **{peer.peer_id: peer.address for peer in extras}},
        )
        # Exit: extras disconnect, then connectors and workers stop (SIGTERM), then the
        # services (callbacks run in reverse).
