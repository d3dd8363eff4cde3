"""Routing table: longest-prefix match over whole segments; peer.* never routed."""

from __future__ import annotations

import pytest

from connector.routing import RoutingTable, is_peer_protocol


def table() -> RoutingTable:
    return RoutingTable(
        [
            ("g.peer2", "peer2"),
            ("g.peer2.kid", "kid"),
            ("g.peer3", "peer3"),
            ("test.downstream", "downstream"),
        ]
    )


@pytest.mark.parametrize(
    ("destination", "next_hop"),
    [
        ("g.peer2", "peer2"),
        ("g.peer2.alice", "peer2"),
        ("g.peer2.kid", "kid"),
        ("g.peer2.kid.bob", "kid"),
        ("g.peer2.kidney", "peer2"),
        ("g.peer3.x.y.z", "peer3"),
        ("test.downstream.bob", "downstream"),
    ],
)
def test_longest_prefix_wins(destination: str, next_hop: str) -> None:
    assert table().resolve(destination) == next_hop


@pytest.mark.parametrize("destination", ["g.peer22", "g.peer", "g", "test.nowhere.alice", "g.peer"])
def test_prefix_matches_whole_segments_only(destination: str) -> None:
    assert table().resolve(destination) is None


def test_default_route_catches_the_rest() -> None:
    routes = RoutingTable([("", "parent"), ("g.peer2", "peer2")])
    assert routes.resolve("g.anything.else") == "parent"
    assert routes.resolve("g.peer2.bob") == "peer2"
    assert routes.entries() == {"g.peer2": "peer2", "": "parent"}


@pytest.mark.parametrize("destination", ["peer.config", "peer.route.control", "peer"])
def test_peer_protocol_destinations_never_resolve(destination: str) -> None:
    assert is_peer_protocol(destination)
    assert RoutingTable([("", "parent")]).resolve(destination) is None


def test_peerless_prefix_is_not_a_peer_protocol_address() -> None:
    assert not is_peer_protocol("peers.example")
    assert RoutingTable([("", "parent")]).resolve("peers.example") == "parent"


@pytest.mark.parametrize("prefix", ["peer.route", "peer", "g.", ".g", "g..x"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        RoutingTable([(prefix, "p")])


def test_conflicting_duplicate_is_refused() -> None:
    with pytest.raises(ValueError):
        RoutingTable([("g.a", "p1"), ("g.a", "p2")])
