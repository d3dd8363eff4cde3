"""Prometheus metrics of a connector process, served at `/metrics` on the health server.

One registry per process (prometheus_client's default, which also carries the process and
Python GC collectors). Every paychan series has a `node` label, so a process hosting several
nodes (the tests do) still tells them apart; labels are only ever config-bounded values
(node and peer ids, stages, ILP error codes), never addresses, amounts or free text.

Three ways a value gets here:

- Counters and histograms updated where the event happens. On the packet path that is two
  small services (`connector.services.metrics`) with their label children bound once: a
  counter increment per answered packet, and two clock reads and one histogram observation
  per forwarded packet (~2.5 µs per forwarded packet together, against ~130 µs of CPU per hop;
  a histogram of each packet's whole time at the node would add ~1.5 µs and tell little
  more than the hop's own).
- Stage changes the connector sees (`StageTimer`, fed by `connector.channels.ChannelRegistry`):
  time spent in each provisioning stage, time to READY, transitions into FAILED.
- Values read at scrape time from each running node (`NodeCollector`): ledger balances,
  channel deposits, link state and the current stage of every peer. Nothing is kept up to
  date per packet for these.

Claims (`connector.settlement` increments them): `CLAIMS_SENT` / `CLAIMS_RECEIVED` with
labels `node, peer` after a claim was stored and sent / stored and acknowledged;
`CLAIMS_REFUSED` with `node, peer, reason`, reason a short fixed identifier such as
`bad_signature`, `stale_nonce`, `above_deposit`, `not_our_channel`; `CLAIMED_AMOUNT` gauge with
`node, peer, direction` (`sent` | `received`) set to the claim's cumulative transferredAmount
in base units.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connector.codec.ilp import ErrorCode

if TYPE_CHECKING:
    from connector.http import BalanceInfo, HealthSnapshot

# Sub-millisecond hops up to ILP expiry-scale waits.
LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Provisioning stages last from a block (1 s on the demo chain) to hours (AWAITING_FUNDS).
STAGE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0)
READY = "READY"
FAILED = "FAILED"
_KNOWN_CODES = frozenset(code.value for code in ErrorCode)

# No `*_created` series next to every counter and histogram: twice the series for a start
# time that `process_start_time_seconds` already gives.
disable_created_metrics()

# --- packet path -----------------------------------------------------------------------------

PACKETS = Counter(
    "paychan_packets",
    "ILP Prepares answered by this node, by origin (peer: received from a peer; local: "
    "sent by this node), result (fulfilled | rejected) and reject code ('' when fulfilled)",
    ["node", "origin", "result", "code"],
)
HOP_SECONDS = Histogram(
    "paychan_hop_duration_seconds",
    "Round trip of a forwarded Prepare over the BTP link to the next hop (peer), answer "
    "included: the latency of each hop as this node sees it",
    ["node", "peer"],
    buckets=LATENCY_BUCKETS,
)

# --- provisioning, as the connector sees it --------------------------------------------------

STAGE_SECONDS = Histogram(
    "paychan_provisioning_stage_duration_seconds",
    "Time a peer's channel workflow spent in a stage, from the connector's first sighting of "
    "the stage to the next one (stages between two sightings are not seen)",
    ["node", "stage"],
    buckets=STAGE_BUCKETS,
)
TO_READY_SECONDS = Histogram(
    "paychan_provisioning_to_ready_seconds",
    "From the connector's first sighting of a peer's provisioning to READY",
    ["node"],
    buckets=STAGE_BUCKETS,
)
PROVISIONING_FAILURES = Counter(
    "paychan_provisioning_failures",
    "Channel workflows seen entering the FAILED stage (a revert that needs `paychan retry`)",
    ["node"],
)

# --- claims (incremented by connector.settlement) --------------------------------------------

CLAIMS_SENT = Counter(
    "paychan_claims_sent", "Payment-channel claims signed, stored and sent", ["node", "peer"]
)
CLAIMS_RECEIVED = Counter(
    "paychan_claims_received",
    "Payment-channel claims received, verified, stored and acknowledged",
    ["node", "peer"],
)
CLAIMS_REFUSED = Counter(
    "paychan_claims_refused",
    "Payment-channel claims received and refused, by a short fixed reason",
    ["node", "peer", "reason"],
)
CLAIMED_AMOUNT = Gauge(
    "paychan_claimed_amount",
    "Cumulative transferredAmount of the latest claim sent or received (base units)",
    ["node", "peer", "direction"],
)


def reject_code_label(code: str) -> str:
    """The `code` label of a Reject: its ILP code when standard, else `other`, so codes a
    peer makes up cannot grow the number of series."""
    return code if code in _KNOWN_CODES else "other"


def exposition() -> tuple[bytes, str]:
    """The `/metrics` body and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- stage changes -----------------------------------------------------------------------------


class StageTimer:
    """Turns the stage changes the connector sees into durations and failure counts.

    `clock` is monotonic seconds; pure apart from the metric objects it updates.
    """

    def __init__(self, node_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._node_id = node_id
        self._clock = clock
        # peer id -> (stage, seen at)
        self._current: dict[str, tuple[str, float]] = {}
        # peer id -> first sighting of the provisioning that has not reached READY yet
        self._started: dict[str, float] = {}
        self._failures = PROVISIONING_FAILURES.labels(node=node_id)
        self._to_ready = TO_READY_SECONDS.labels(node=node_id)

    def stage_changed(self, peer_id: str, stage: str) -> None:
        now = self._clock()
        previous = self._current.get(peer_id)
        if previous is not None:
            if previous[0] == stage:
                return
            STAGE_SECONDS.labels(node=self._node_id, stage=previous[0]).observe(now - previous[1])
        self._current[peer_id] = (stage, now)
        if stage == READY:
            started = self._started.pop(peer_id, None)
            if started is not None:
                self._to_ready.observe(now - started)
            return
        self._started.setdefault(peer_id, now)
        if stage == FAILED:
            self._failures.inc()


# --- values read at scrape time ----------------------------------------------------------------


class MetricsSource(Protocol):
    """What a running node offers the scrape (`connector.node.ConnectorNode` does)."""

    def health_snapshot(self) -> HealthSnapshot: ...

    def balances(self) -> list[BalanceInfo]: ...


class NodeCollector(Collector):
    """Balances, deposits, links and stages of every attached node, read when scraped."""

    def __init__(self) -> None:
        self._sources: list[MetricsSource] = []

    def attach(self, source: MetricsSource) -> None:
        self._sources.append(source)

    def detach(self, source: MetricsSource) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def collect(self) -> Iterator[Metric]:
        balance = GaugeMetricFamily(
            "paychan_balance",
            "Ledger balance with the peer in base units (positive: the peer owes us)",
            labels=["node", "peer"],
        )
        pending = GaugeMetricFamily(
            "paychan_balance_pending_incoming",
            "Credit held for the peer's Prepares not yet answered (base units)",
            labels=["node", "peer"],
        )
        connected = GaugeMetricFamily(
            "paychan_peer_connected", "1 while the peer's BTP link is up", labels=["node", "peer"]
        )
        deposit = GaugeMetricFamily(
            "paychan_channel_deposit",
            "Total deposit in the peer's payment channel (base units), ours and theirs",
            labels=["node", "peer", "side"],
        )
        stage = GaugeMetricFamily(
            "paychan_channel_stage",
            "1 for the provisioning stage each peer's channel is in, as the connector knows it",
            labels=["node", "peer", "stage"],
        )
        for source in list(self._sources):
            snapshot = source.health_snapshot()
            node = snapshot.node_id
            for account in source.balances():
                balance.add_metric([node, account.peer_id], account.balance)
                pending.add_metric([node, account.peer_id], account.pending_incoming)
            for peer_id, peer in snapshot.peers.items():
                connected.add_metric([node, peer_id], 1 if peer.connected else 0)
                if peer.stage is not None:
                    stage.add_metric([node, peer_id, peer.stage], 1)
                if peer.our_deposit is not None:
                    deposit.add_metric([node, peer_id, "ours"], peer.our_deposit)
                if peer.their_deposit is not None:
                    deposit.add_metric([node, peer_id, "theirs"], peer.their_deposit)
        yield from (balance, pending, connected, deposit, stage)

    def describe(self) -> Iterable[Metric]:
        # Registered before any node attaches: describe the families, not current values.
        return []


NODES = NodeCollector()
REGISTRY.register(NODES)
