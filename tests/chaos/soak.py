"""The chaos soak: rounds of one SIGKILL each, while peers come and go, channels provision and
settle and test payments flow; the invariants of `tests/chaos/soak_invariants.py` after
every round. `bench/chaos.py` runs it for many rounds and records the figures;
`tests/chaos/test_chaos_short.py` runs a few rounds in `make test`.

A round (seeded: the same `--seed` makes the same choices):

1. churn (`Soak._churn`): extra peers connect for the first time (a first provisioning), have
   their channel workflow cancelled and come back (provisioning again), come and go, have
   their channel closed by the hub's keeper and come back with a new one once it settled;
2. traffic: `lanes` loops of test payments through the admin API of a random node to a random
   node or extra peer, for `traffic_seconds`;
3. the fault, after a random delay: SIGKILL one of a hub worker, a connector, the Temporal
   dev server, anvil (`tests/chaos/soak_stack.py`: anvil keeps its mined chain, loses its
   mempool), and after a random downtime start it again in place (same ports, files);
4. recovery: from the restart, until every process answers and every connected peer is
   READY at both ends (extra peers that want a link have one) — the round's recovery time;
   not within `recovery_bound`: each peer still waiting is a violation;
5. once every payment is answered: every node's balances (admin API) and claim store (its
   ledger file, read in one transaction) and the extra peers' accepted claims, read twice
   around a read of the chain, and the soak's record of payments go through the invariant
   checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from pathlib import Path

import aiohttp
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from activities import token_network as tn
from tests.chaos.crash_link import CHANNEL_OPENED
from tests.chaos.soak_invariants import (
    ClaimRow,
    LedgerSnapshot,
    PairOnChain,
    Payment,
    PeerState,
    ReadTwice,
    Violation,
    check_channels,
    check_claims,
    check_ledger,
    not_ready,
)
from tests.chaos.soak_stack import HUB, LINKS, NODES, TARGET, SoakStack
from workflows import ids
from workflows.messages import CloseChannel

TOKEN = "M2M"
_RUNNING_CHANNELS = f'WorkflowType = "{ids.CHANNEL_WORKFLOW}" AND ExecutionStatus = "Running"'


class Fault(StrEnum):
    WORKER = "worker"
    CONNECTOR = "connector"
    TEMPORAL = "temporal"
    ANVIL = "anvil"


@dataclass(frozen=True)
class SoakTiming:
    traffic_seconds: float = 6.0
    lanes: int = 3
    # Pause of each lane between two payments.
    payment_gap: float = 0.15
    amounts: tuple[int, int] = (50_000, 250_000)
    kill_after: tuple[float, float] = (0.5, 2.5)
    downtime: tuple[float, float] = (0.3, 2.0)
    # Now and then the Temporal server stays down past its clients' own retries (~10 s).
    long_temporal_outage: float = 1 / 3
    long_downtime: tuple[float, float] = (12.0, 16.0)
    recovery_bound: float = 90.0
    initial_ready_bound: float = 180.0
    initially_connected: int = 4
    # Chance per round that an extra peer's channel is closed (unilaterally, by the hub's
    # keeper: close, settle window, settle) while none is being closed; once settled the
    # peer comes back and a new channel is provisioned.
    close_chance: float = 0.5
    close_bound: float = 180.0


@dataclass
class SentPayment:
    source: str
    destination: str
    amount: int
    hops: tuple[tuple[str, str], ...]
    started: float
    ended: float | None = None
    outcome: str = "pending"  # fulfilled | rejected | unknown
    code: str | None = None  # the Reject's ILP error code

    @property
    def nodes(self) -> set[str]:
        return {end for hop in self.hops for end in hop}


@dataclass
class RoundReport:
    number: int
    fault: Fault
    victim: str
    downtime: float
    # From starting the victim again (its own start-up included) until every process
    # answers and every connected peer is READY; None: not within the bound.
    recovery_seconds: float | None
    payments: int
    fulfilled: int
    churn: list[str]
    violations: list[Violation]
    seconds: float


@dataclass
class SoakReport:
    seed: int
    setup_seconds: float
    initial_ready_seconds: float
    rounds: list[RoundReport] = field(default_factory=list)
    # Filled by the last check.
    claims_accepted: int = 0
    topped_up_deposits: int = 0
    channels: int = 0
    uncertain_payments: int = 0
    link_ends_explained: int = 0
    closes_asked: int = 0
    closes_settled: int = 0

    @property
    def faults(self) -> Counter[str]:
        return Counter(str(report.fault) for report in self.rounds)

    @property
    def violations(self) -> list[Violation]:
        return [v for report in self.rounds for v in report.violations]

    @property
    def worst_recovery(self) -> float | None:
        """Worst recovery time; None when some round did not recover within its bound."""
        times = [report.recovery_seconds for report in self.rounds]
        if not times or any(t is None for t in times):
            return None
        return max(times)

    def worst_recovery_by_fault(self) -> dict[str, float | None]:
        worst: dict[str, float | None] = {}
        for report in self.rounds:
            key, seconds = str(report.fault), report.recovery_seconds
            if seconds is None or worst.get(key, 0.0) is None:
                worst[key] = None
            else:
                worst[key] = max(worst.get(key) or 0.0, seconds)
        return worst

    @property
    def payments(self) -> int:
        return sum(report.payments for report in self.rounds)

    @property
    def fulfilled(self) -> int:
        return sum(report.fulfilled for report in self.rounds)


def hops_of(source: str, destination: str) -> tuple[tuple[str, str], ...]:
    """The links a payment from node `source` to a node or extra peer crosses, in order."""
    target = destination if destination in NODES else HUB
    i, j = NODES.index(source), NODES.index(target)
    step = 1 if j >= i else -1
    path = [NODES[k] for k in range(i, j + step, step)]
    hops = list(pairwise(path))
    if destination not in NODES:
        hops.append((HUB, destination))
    return tuple(hops)


class Soak:
    def __init__(
        self,
        stack: SoakStack,
        seed: int,
        timing: SoakTiming | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.timing = timing or SoakTiming()
        self.out = out
        self.payments: list[SentPayment] = []
        # (monotonic time, node) of every connector SIGKILL: payments in flight through that
        # node then may be committed at one end of a link and not at the other.
        self.connector_kills: list[tuple[float, str]] = []
        self.report = SoakReport(seed, stack.setup_seconds, 0.0)
        self._never_connected = [peer.peer_id for peer in stack.extras]
        # Extra peer id -> (when the soak asked its channel to close, that run's id); closes
        # asked per peer.
        self._closing: dict[str, tuple[float, str]] = {}
        self.closes_asked: Counter[str] = Counter()
        self.closes_settled = 0
        self._close_violations: list[Violation] = []

    # --- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the first extra peers; wait until every link and them are READY."""
        began = time.monotonic()
        self.client = await Client.connect(
            self.stack.temporal.target, data_converter=pydantic_data_converter
        )
        for _ in range(self.timing.initially_connected):
            await self.stack.extra(self._never_connected.pop(0)).connect()
        pending = await self._wait_recovered(self.timing.initial_ready_bound)
        if pending:
            raise RuntimeError("not READY at start: " + "; ".join(map(str, pending)))
        self.report.initial_ready_seconds = time.monotonic() - began
        violations = await self.check()
        if violations:
            raise RuntimeError("invariants broken at start: " + "; ".join(map(str, violations)))

    # --- a round --------------------------------------------------------------------------------

    async def round(self, number: int, fault: Fault | None = None) -> RoundReport:
        began = time.monotonic()
        rng, timing = self.rng, self.timing
        fault = fault or rng.choice(list(Fault))
        churn: list[str] = []
        payments_before = len(self.payments)
        traffic = asyncio.create_task(self._traffic(timing.traffic_seconds))
        churning = asyncio.create_task(self._churn(churn))
        try:
            await asyncio.sleep(rng.uniform(*timing.kill_after))
            victim, restart = await self._kill(fault)
            long = fault is Fault.TEMPORAL and rng.random() < timing.long_temporal_outage
            downtime = rng.uniform(*(timing.long_downtime if long else timing.downtime))
            await asyncio.sleep(downtime)
            restarted = time.monotonic()
            await restart()
            # The peers that came and went during the fault count towards its recovery.
            await churning
            pending = await self._wait_recovered(timing.recovery_bound)
            recovery = None if pending else time.monotonic() - restarted
            await traffic
        finally:
            for task in (traffic, churning):
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        # Traffic over: every connected peer READY again before the books are read.
        pending = pending or await self._wait_recovered(timing.recovery_bound)
        violations = [
            Violation(v.invariant + f" within {timing.recovery_bound:.0f}s", v.where, v.detail)
            for v in pending
        ]
        violations += self._close_violations
        self._close_violations = []
        violations += await self.check()
        sent = self.payments[payments_before:]
        report = RoundReport(
            number=number,
            fault=fault,
            victim=victim,
            downtime=downtime,
            recovery_seconds=recovery,
            payments=len(sent),
            fulfilled=sum(p.outcome == "fulfilled" for p in sent),
            churn=churn,
            violations=violations,
            seconds=time.monotonic() - began,
        )
        self.report.rounds.append(report)
        return report

    async def _churn(self, changes: list[str]) -> None:
        """Three changes at random moments around the round's fault: the next extra peer
        that never connected connects (a first provisioning); a connected extra peer
        disconnects, has its channel workflow cancelled (`paychan cancel`, done before the
        fault) and connects again later (a new run finds its channel and adopts it:
        provisioning again, no transaction); one more extra peer comes or goes."""
        stack, rng = self.stack, self.rng
        window = self.timing.kill_after[1]
        actions = []
        await self._follow_closes(changes, actions)
        if self._never_connected:
            actions.append(("+", stack.extra(self._never_connected.pop(0))))
        linked = [
            peer for peer in stack.extras if peer.wants_link and peer not in {p for _, p in actions}
        ]
        if linked:
            peer = rng.choice(linked)
            changes.append(f"~{peer.peer_id}")
            await self._cancel_run(peer.peer_id)
            actions.append(("+", peer))
            linked.remove(peer)
        if linked and not self._closing and rng.random() < self.timing.close_chance:
            peer = rng.choice(linked)
            changes.append(f"x{peer.peer_id}")
            await self._close(peer.peer_id)
        taken = {peer for _, peer in actions} | {stack.extra(p) for p in self._closing}
        other = rng.choice([peer for peer in stack.extras if peer not in taken])
        actions.append(("-" if other.wants_link else "+", other))
        rng.shuffle(actions)
        for action, peer in actions:
            await asyncio.sleep(rng.uniform(0.0, window))
            if peer.peer_id in self._never_connected:
                self._never_connected.remove(peer.peer_id)
            changes.append(f"{action}{peer.peer_id}")
            if action == "+":
                await peer.connect()
            else:
                await peer.disconnect()

    async def _close(self, peer_id: str) -> None:
        """Disconnect the extra peer and ask the hub's keeper to close its channel
        unilaterally (`paychan close`): close, settle window, settle, the run ends."""
        await self.stack.extra(peer_id).disconnect()
        workflow_id = ids.channel_workflow_id(HUB, peer_id, TOKEN)
        try:
            # This very run is followed: settlement may start the next one at once.
            run_id = (await self.client.get_workflow_handle(workflow_id).describe()).run_id
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            await handle.signal(ids.SIGNAL_CLOSE, CloseChannel(reason="chaos soak"))
        except (RPCError, RuntimeError):
            # Temporal down: no close this time; the peer comes back with the churn.
            return
        self._closing[peer_id] = (time.monotonic(), run_id)
        self.closes_asked[peer_id] += 1

    async def _follow_closes(self, changes: list[str], actions: list) -> None:
        """A closed channel whose run ended (SETTLED): its peer comes back (a new channel).
        Not settled within the bound: a violation."""
        for peer_id, (asked, run_id) in list(self._closing.items()):
            workflow_id = ids.channel_workflow_id(HUB, peer_id, TOKEN)
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            try:
                description = await handle.describe()
            except (RPCError, RuntimeError):
                continue
            if description.status == WorkflowExecutionStatus.COMPLETED:
                del self._closing[peer_id]
                self.closes_settled += 1
                changes.append(f"={peer_id}")
                actions.append(("+", self.stack.extra(peer_id)))
            elif time.monotonic() - asked > self.timing.close_bound:
                del self._closing[peer_id]
                self._close_violations.append(
                    Violation(
                        f"closed channel settled within {self.timing.close_bound:.0f}s",
                        f"{HUB}->{peer_id}",
                        f"run {description.status.name if description.status else '?'}, "
                        f"stage {description.typed_search_attributes.get(ids.STAGE)}",
                    )
                )
                actions.append(("+", self.stack.extra(peer_id)))

    async def _cancel_run(self, peer_id: str) -> None:
        """Disconnect the extra peer and cancel its running channel workflow, until the run
        has ended."""
        await self.stack.extra(peer_id).disconnect()
        handle = self.client.get_workflow_handle(ids.channel_workflow_id(HUB, peer_id, TOKEN))
        deadline = time.monotonic() + self.timing.recovery_bound
        while time.monotonic() < deadline:
            try:
                if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                    return
                await handle.cancel()
            except (RPCError, RuntimeError):
                pass
            await asyncio.sleep(0.2)

    async def _kill(self, fault: Fault) -> tuple[str, Callable[[], object]]:
        """SIGKILL the round's victim; return its name and how to start it again."""
        stack = self.stack
        match fault:
            case Fault.WORKER:
                worker = self.rng.choice(stack.workers)
                worker.kill()
                return worker.name, worker.start
            case Fault.CONNECTOR:
                node = self.rng.choice(NODES)
                connector = stack.connectors[node]
                self.connector_kills.append((time.monotonic(), node))
                connector.kill()
                return node, lambda: connector.start(stack.session)
            case Fault.TEMPORAL:
                stack.temporal.kill()
                return "temporal", stack.temporal.start
            case Fault.ANVIL:
                await stack.anvil.crash()
                return "anvil", stack.anvil.start
        raise ValueError(fault)

    # --- traffic --------------------------------------------------------------------------------

    async def _traffic(self, seconds: float) -> None:
        end = time.monotonic() + seconds

        async def lane() -> None:
            while time.monotonic() < end:
                source = self.rng.choice(NODES)
                # Extra peers that are away get a payment now and then (rejected T01).
                extras = [
                    peer.peer_id
                    for peer in self.stack.extras
                    if peer.wants_link or self.rng.random() < 0.1
                ]
                destination = self.rng.choice([d for d in (*NODES, *extras) if d != source])
                await self._pay(source, destination, self.rng.randrange(*self.timing.amounts))
                await asyncio.sleep(self.timing.payment_gap)

        await asyncio.gather(*(lane() for _ in range(self.timing.lanes)))

    async def _pay(self, source: str, destination: str, amount: int) -> None:
        connector = self.stack.connectors[source]
        payment = SentPayment(
            source, destination, amount, hops_of(source, destination), time.monotonic()
        )
        self.payments.append(payment)
        try:
            async with self.stack.session.post(
                connector.admin_url + "/payments",
                json={"destination": f"g.{destination}", "amount": str(amount)},
                headers={"Authorization": f"Bearer {connector.admin_token}"},
                timeout=aiohttp.ClientTimeout(40),
            ) as response:
                result = await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            result = None
        payment.ended = time.monotonic()
        if result is None:
            payment.outcome = "unknown"
        else:
            payment.outcome = "fulfilled" if result.get("fulfilled") else "rejected"
            payment.code = result.get("code")

    def _uncertain(self, payment: SentPayment) -> bool:
        if payment.outcome == "fulfilled":
            return False
        ended = payment.ended if payment.ended is not None else float("inf")
        return any(
            node in payment.nodes and payment.started <= at <= ended
            for at, node in self.connector_kills
        )

    # --- recovery -------------------------------------------------------------------------------

    async def peer_states(self) -> dict[str, dict[str, PeerState]] | None:
        """Node -> peer -> (connected, stage) from every /health; None while a node does not
        answer. An extra peer counts as connected when it wants its link (the hub must then
        show it connected and READY)."""
        stack = self.stack
        reports = await asyncio.gather(
            *(stack.connectors[node].health(stack.session) for node in NODES)
        )
        workflows = await self._workflow_stages()
        if workflows is None or any(report is None for report in reports):
            return None
        states = {}
        for node, report in zip(NODES, reports, strict=True):
            assert report is not None
            states[node] = {
                peer: PeerState(health.connected, health.stage, workflows.get((node, peer)))
                for peer, health in report.peers.items()
            }
        for peer in stack.extras:
            shown = states[HUB][peer.peer_id]
            if peer.wants_link and not shown.connected:
                stage = f"{shown.stage} (not linked)"
                states[HUB][peer.peer_id] = PeerState(True, stage, shown.workflow_stage)
        # The line's links are configured both ways: a link down is a peer waiting too.
        for left, right in LINKS:
            shown = states[left][right]
            if not shown.connected:
                stage = f"{shown.stage} (link down)"
                states[left][right] = PeerState(True, stage, shown.workflow_stage)
        return states

    async def _workflow_stages(self) -> dict[tuple[str, str], str] | None:
        """(node, peer) -> Stage of its running channel workflow; None while Temporal does
        not answer."""
        stages = {}
        try:
            async for execution in self.client.list_workflows(_RUNNING_CHANNELS):
                attributes = execution.typed_search_attributes
                node, peer = attributes.get(ids.NODE_ID), attributes.get(ids.PEER_ID)
                stage = attributes.get(ids.STAGE)
                if node is not None and peer is not None and stage is not None:
                    stages[(node, peer)] = stage
        except (RPCError, RuntimeError):
            return None
        return stages

    async def _wait_recovered(self, bound: float) -> list[Violation]:
        deadline = time.monotonic() + bound
        pending: list[Violation] = []
        while time.monotonic() < deadline:
            down = [c.name for c in self.stack.all_processes() if not c.alive]
            states = await self.peer_states()
            if down:
                pending = [Violation("process up", name, "not running") for name in down]
            elif states is None:
                pending = [Violation("process up", "connector/temporal", "does not answer")]
            else:
                pending = not_ready(states)
                if not pending:
                    return []
            await asyncio.sleep(0.25)
        return pending

    # --- the books -------------------------------------------------------------------------------

    async def check(self) -> list[Violation]:
        """Every invariant, on two passes over the books with the chain read in between (see
        `ReadTwice`): the ledgers are checked on the second pass."""
        states = await self.peer_states()
        if states is None:
            return [Violation("process up", "connector/temporal", "does not answer")]
        violations: list[Violation] = []
        first = await self._books(violations)
        pairs = await self._pairs()
        then = await self._books(violations)
        channel_of = {frozenset(pair.ends): pair.channel_id for pair in pairs}
        links = [*LINKS, *((b, a) for a, b in LINKS)]
        links += [(HUB, peer.peer_id) for peer in self.stack.extras]
        latest_sent = {}
        claims_accepted = 0
        for payer, payee in links:
            if not {payer, payee} <= set(first) & set(then):
                continue  # a ledger that could not be read is a violation already
            sent = ReadTwice(first[payer].rows(payee, "sent"), then[payer].rows(payee, "sent"))
            received = ReadTwice(
                first[payee].rows(payer, "received"), then[payee].rows(payer, "received")
            )
            claims_accepted += len(received.then)
            channel = channel_of.get(frozenset((payer, payee)))
            latest_sent[(payer, payee)] = max(
                (row.transferred for row in sent.then if row.channel_id == channel), default=0
            )
            payer_deposits = {
                pair.channel_id: pair.deposits[payer]
                for pair in pairs
                if payer in pair.ends and pair.channel_id is not None
            }
            returned = first[payer].rows(payee, "received")
            violations += check_claims(payer, payee, sent, received, payer_deposits, returned)
        ready_ends = {
            (node, peer)
            for node, peers in states.items()
            for peer, state in peers.items()
            if state.is_ready
        }
        violations += check_channels(
            pairs,
            ready_ends=ready_ends,
            depositors=set(NODES),
            target=TARGET,
            latest_sent=latest_sent,
        )
        payments = [
            Payment(p.hops, p.amount, p.outcome == "fulfilled", self._uncertain(p))
            for p in self.payments
        ]
        explained = 0
        for node in NODES:
            if node in then:
                found, figures = check_ledger(then[node].ledger, payments)
                violations += found
                explained += figures.explained_by_uncertain
        report = self.report
        report.claims_accepted = claims_accepted
        report.channels = sum(1 for pair in pairs if pair.channel_id is not None)
        report.topped_up_deposits = sum(
            1
            for pair in pairs
            for end, deposit in pair.deposits.items()
            if end in NODES and deposit > TARGET
        )
        report.uncertain_payments = sum(p.uncertain for p in payments)
        report.link_ends_explained = explained
        report.closes_asked = sum(self.closes_asked.values())
        report.closes_settled = self.closes_settled
        return violations

    async def _books(self, violations: list[Violation]) -> dict[str, Books]:
        """One pass: every node's ledger snapshot, then every extra peer's accepted claims.
        A node whose admin balances never match its file is a violation."""
        books: dict[str, Books] = {}
        for node in NODES:
            snapshot = await self._ledger(node)
            if snapshot is None:
                violations.append(
                    Violation("ledger readable", node, "admin balances never matched the file")
                )
            else:
                books[node] = Books(snapshot, list(snapshot.claims))
        for peer in self.stack.extras:
            rows = [
                ClaimRow(
                    "received",
                    HUB,
                    accepted.claim.channel_id,
                    accepted.claim.nonce,
                    accepted.claim.transferred_amount,
                    accepted.amount,
                    True,
                )
                for accepted in list(peer.accepted)
            ]
            books[peer.peer_id] = Books(LedgerSnapshot(peer.peer_id, {}, rows), rows)
        return books

    async def _ledger(self, node: str, attempts: int = 40) -> LedgerSnapshot | None:
        """Balances from the admin API equal to the ledger file's, with the file's claims
        read in the same transaction: a consistent snapshot even while claims move."""
        connector = self.stack.connectors[node]
        for _ in range(attempts):
            before = await connector.balances(self.stack.session)
            try:
                on_disk, claims, adjustments = await asyncio.to_thread(
                    read_ledger_file, connector.ledger_path
                )
            except sqlite3.Error:
                on_disk, claims, adjustments = None, [], {}
            after = await connector.balances(self.stack.session)
            if before is not None and before == after and on_disk is not None:
                if all(on_disk.get(peer, 0) == balance for peer, balance in before.items()):
                    return LedgerSnapshot(node, before, claims, adjustments)
            await asyncio.sleep(0.25)
        return None

    async def _pairs(self) -> list[PairOnChain]:
        stack, w3, deployment = self.stack, self.stack.w3, self.stack.deployment
        addresses = stack.addresses
        pairs = [*LINKS, *((HUB, peer.peer_id) for peer in stack.extras)]
        opened = Counter()
        logs = await w3.eth.get_logs(
            {
                "address": deployment.token_network,
                "fromBlock": deployment.deployed_block,
                "toBlock": "latest",
                "topics": ["0x" + CHANNEL_OPENED.hex()],
            }
        )
        codec = tn.contract_abi("TokenNetwork")
        for log in logs:
            event = codec.decode_log(log["address"], log["topics"], log["data"])
            if event is not None:
                opened[frozenset((event.args["participant1"], event.args["participant2"]))] += 1
        found = []
        for a, b in pairs:
            address_a, address_b = addresses[a], addresses[b]
            channel_id = await tn.get_channel_id(w3, deployment, address_a, address_b)
            counter = await tn.get_pair_counter(w3, deployment, address_a, address_b)
            states = []
            for number in range(counter):
                numbered = tn.compute_channel_id(
                    deployment.chain_id, deployment.token_network, address_a, address_b, number
                )
                states.append((await tn.get_channel(w3, deployment, numbered)).state.name)
            deposits, is_open = {a: 0, b: 0}, False
            if channel_id is not None:
                channel = await tn.get_channel(w3, deployment, channel_id)
                is_open = channel.state == tn.ChannelState.OPENED
                for end, address in ((a, address_a), (b, address_b)):
                    side = await tn.get_participant(w3, deployment, channel_id, address)
                    deposits[end] = side.deposit
            found.append(
                PairOnChain(
                    ends=(a, b),
                    pair_counter=counter,
                    opened_events=opened[frozenset((address_a, address_b))],
                    channel_id=channel_id,
                    is_open=is_open,
                    deposits=deposits,
                    states=tuple(states),
                    closes_asked=self.closes_asked[b],
                )
            )
        return found


@dataclass(frozen=True)
class Books:
    """What one pass read of a node (or an extra peer: claims only)."""

    ledger: LedgerSnapshot
    claims: list[ClaimRow]

    def rows(self, peer: str, direction: str) -> list[ClaimRow]:
        return [row for row in self.claims if row.peer_id == peer and row.direction == direction]


def read_ledger_file(path: Path) -> tuple[dict[str, int], list[ClaimRow], dict[str, int]]:
    """Balances, claims and settled-payout corrections (per peer) of a node's ledger file,
    read-only, in one transaction."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        connection.execute("BEGIN")
        balances = {
            peer: int(balance)
            for peer, balance in connection.execute("SELECT peer_id, balance FROM balances")
        }
        claims = [
            ClaimRow(
                direction=direction,
                peer_id=peer_id,
                channel_id=channel_id,
                nonce=int(nonce),
                transferred=int(transferred),
                amount=int(amount),
                acknowledged=acknowledged == 1,  # 2: void, its channel settled without it
            )
            for direction, peer_id, channel_id, nonce, transferred, amount, acknowledged in (
                connection.execute(
                    "SELECT direction, peer_id, channel_id, nonce, transferred_amount, amount,"
                    " acknowledged FROM claims"
                )
            )
        ]
        adjustments: dict[str, int] = defaultdict(int)
        with contextlib.suppress(sqlite3.OperationalError):  # no channel settled yet
            for peer, adjustment in connection.execute(
                "SELECT peer_id, adjustment FROM channel_payouts"
            ):
                adjustments[peer] += int(adjustment)
        connection.execute("COMMIT")
    finally:
        connection.close()
    return balances, claims, dict(adjustments)
