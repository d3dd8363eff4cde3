from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from connector.codec import ilp
from connector.errors import PeerUnreachable
from connector.services.metrics import HopMetricsService, PacketMetricsService


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def node_id() -> str:
    # Counters live for the whole process: a fresh node label per test keeps counts exact.
    return f"n{uuid.uuid4().hex[:8]}"


async def test_answers_are_counted_by_result_and_code(
    terminal, incoming, fulfill, reject, node_id
) -> None:
    fulfilling = PacketMetricsService(node_id, "peer", terminal(fulfill))
    rejecting = PacketMetricsService(node_id, "peer", terminal(reject))
    for _ in range(3):
        assert await fulfilling.handle_request(incoming()) is fulfill
    assert await rejecting.handle_request(incoming()) is reject
    packets = "paychan_packets_total"
    labels = {"node": node_id, "origin": "peer"}
    assert sample(packets, **labels, result="fulfilled", code="") == 3
    assert sample(packets, **labels, result="rejected", code="F99") == 1


async def test_made_up_reject_codes_share_one_series(terminal, incoming, node_id) -> None:
    for code in ("Q12", "Z99", "F99"):
        answer = ilp.Reject(code, "g.far", "", b"")
        await PacketMetricsService(node_id, "local", terminal(answer)).handle_request(incoming())
    labels = {"node": node_id, "origin": "local", "result": "rejected"}
    assert sample("paychan_packets_total", **labels, code="other") == 2
    assert sample("paychan_packets_total", **labels, code="F99") == 1


async def test_escaping_exceptions_are_not_counted(terminal, incoming, node_id) -> None:
    service = PacketMetricsService(node_id, "peer", terminal(RuntimeError("bug")))
    with pytest.raises(RuntimeError):
        await service.handle_request(incoming())
    labels = {"node": node_id, "origin": "peer", "result": "fulfilled", "code": ""}
    assert sample("paychan_packets_total", **labels) == 0


async def test_hops_are_timed_per_next_peer_failures_included(
    terminal, incoming, fulfill, node_id
) -> None:
    answering = HopMetricsService(node_id, terminal(fulfill))
    await answering.send_request(incoming().to_outgoing("right"))
    await answering.send_request(incoming().to_outgoing("right"))
    failing = HopMetricsService(node_id, terminal(PeerUnreachable("down")))
    with pytest.raises(PeerUnreachable):
        await failing.send_request(incoming().to_outgoing("left"))
    count = "paychan_hop_duration_seconds_count"
    assert sample(count, node=node_id, peer="right") == 2
    assert sample(count, node=node_id, peer="left") == 1
    assert sample("paychan_hop_duration_seconds_sum", node=node_id, peer="right") >= 0
