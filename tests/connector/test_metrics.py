"""connector.metrics: stage timings (pure, pinned clock), and `/metrics` of two real nodes
after traffic, read back with the Prometheus text parser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from connector.channels import ChannelRegistry
from connector.config import NodeConfig
from connector.devstack import free_port
from connector.metrics import StageTimer, reject_code_label
from connector.node import ConnectorNode
from tests.connector.test_node import wait_for

pytestmark = pytest.mark.timeout(60)


def fresh_id() -> str:
    # Counters live for the whole process: a fresh node label per test keeps counts exact.
    return f"n{uuid.uuid4().hex[:8]}"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stage_durations_time_to_ready_and_failures() -> None:
    node, clock = fresh_id(), Clock()
    timer = StageTimer(node, clock)
    for stage, after in (
        ("CHECKING_CONFIG", 0.5),
        ("AWAITING_FUNDS", 30.0),
        ("FAILED", 2.0),
        ("FAILED", 1.0),  # the same stage again is not a change
        ("OPENING", 4.0),
        ("READY", 0.0),
    ):
        timer.stage_changed("p", stage)
        clock.now += after
    stage_sum = "paychan_provisioning_stage_duration_seconds_sum"
    assert value(stage_sum, node=node, stage="CHECKING_CONFIG") == 0.5
    assert value(stage_sum, node=node, stage="AWAITING_FUNDS") == 30.0
    assert value(stage_sum, node=node, stage="FAILED") == 3.0
    assert value(stage_sum, node=node, stage="OPENING") == 4.0
    assert value("paychan_provisioning_to_ready_seconds_sum", node=node) == 37.5
    assert value("paychan_provisioning_to_ready_seconds_count", node=node) == 1
    assert value("paychan_provisioning_failures_total", node=node) == 1


def test_a_peer_already_ready_at_first_sight_adds_no_time_to_ready() -> None:
    # A restarted connector rebuilds READY views: that is not a provisioning it watched.
    node = fresh_id()
    timer = StageTimer(node, Clock())
    timer.stage_changed("p", "READY")
    assert value("paychan_provisioning_to_ready_seconds_count", node=node) == 0


def test_channel_registry_reports_each_stage_change_once() -> None:
    seen: list[tuple[str, str]] = []
    registry = ChannelRegistry(on_stage=lambda peer, stage: seen.append((peer, stage)))
    registry.record_stage("p", "M2M", "CHECKING_CONFIG")
    registry.record_stage("p", "M2M", "CHECKING_CONFIG")
    registry.record_stage("p", "M2M", "OPENING")
    assert seen == [("p", "CHECKING_CONFIG"), ("p", "OPENING")]


def test_reject_codes_outside_the_standard_set_are_other() -> None:
    assert [reject_code_label(code) for code in ("F02", "T04", "R00", "X42", "f02")] == [
        "F02",
        "T04",
        "R00",
        "other",
        "other",
    ]


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[NodeConfig, NodeConfig]]:
    a_id, b_id = fresh_id(), fresh_id()
    b_port = free_port()
    a = NodeConfig.model_validate(
        {
            "nodeId": a_id,
            "ilpAddress": f"g.{a_id}",
            "btpServerPort": 0,
            "ledgerPath": str(tmp_path / "a.sqlite3"),
            "peers": [{"id": b_id, "url": f"ws://127.0.0.1:{b_port}", "authToken": "a-b"}],
            "routes": [{"prefix": f"g.{b_id}", "peer": b_id}, {"prefix": "g.gone", "peer": b_id}],
        }
    )
    b = NodeConfig.model_validate(
        {
            "nodeId": b_id,
            "ilpAddress": f"g.{b_id}",
            "btpServerPort": b_port,
            "ledgerPath": str(tmp_path / "b.sqlite3"),
            "peers": [{"id": a_id, "authToken": "a-b"}],
            "routes": [{"prefix": f"g.{a_id}", "peer": a_id}],
        }
    )
    yield a, b


async def scrape(url: str) -> dict[str, list[Sample]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def find(families: dict[str, list[Sample]], name: str, **labels: str) -> list[Sample]:
    return [
        sample
        for family in families.values()
        for sample in family
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


async def test_metrics_after_traffic_carry_packets_hops_and_balances(
    line: tuple[NodeConfig, NodeConfig],
) -> None:
    a_config, b_config = line
    a_id, b_id = a_config.node_id, b_config.node_id
    a, b = ConnectorNode(a_config), ConnectorNode(b_config)
    try:
        await b.start()
        await a.start()
        await wait_for(lambda: a.is_connected(b_id) and b.is_connected(a_id))
        for _ in range(5):
            assert (await a.send_payment(f"g.{b_id}", 1_000)).fulfilled
        # b has no route back to g.gone: F02 from b, relayed to a's sender.
        unreachable = await a.send_payment("g.gone.somewhere", 10)
        assert unreachable.code == "F02"

        families = await scrape(a.health_url.removesuffix("/") + "/metrics")
        for name in ("python_gc_objects_collected", "process_cpu_seconds"):
            assert name in families
        local = {"node": a_id, "origin": "local"}
        [fulfilled] = find(families, "paychan_packets_total", **local, result="fulfilled")
        assert fulfilled.value == 5
        [f02] = find(families, "paychan_packets_total", **local, result="rejected", code="F02")
        assert f02.value == 1
        [hops] = find(families, "paychan_hop_duration_seconds_count", node=a_id, peer=b_id)
        assert hops.value == 6
        buckets = find(families, "paychan_hop_duration_seconds_bucket", node=a_id, peer=b_id)
        assert [s.value for s in buckets if s.labels["le"] == "+Inf"] == [6]
        # a owes b for the 5 fulfilled payments; b sees it from the other side.
        [a_balance] = find(families, "paychan_balance", node=a_id, peer=b_id)
        assert a_balance.value == -5_000
        [b_balance] = find(families, "paychan_balance", node=b_id, peer=a_id)
        assert b_balance.value == 5_000
        [linked] = find(families, "paychan_peer_connected", node=a_id, peer=b_id)
        assert linked.value == 1
        # b received what a sent: counted on b as packets from a peer.
        from_peer = {"node": b_id, "origin": "peer", "result": "fulfilled"}
        assert [s.value for s in find(families, "paychan_packets_total", **from_peer)] == [5]
    finally:
        await a.stop()
        await b.stop()
    # A stopped node is no longer read at scrape time.
    assert value("paychan_balance", node=a_id, peer=b_id) is None
