from __future__ import annotations

import pytest

from connector.errors import Unreachable
from connector.routing import RoutingTable
from connector.services.interface import LOCAL
from connector.services.router import RouterService

TABLE = RoutingTable(
    [
        ("test.downstream", "downstream"),
        ("test.upstream", "upstream"),
        ("test.me", LOCAL),
        ("test.me.child", "child"),
    ]
)


async def test_routes_to_the_matching_peer(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    assert await RouterService(TABLE, inner, terminal(None)).handle_request(incoming()) is fulfill
    (sent,) = inner.seen
    assert (sent.from_peer, sent.to_peer, sent.amount) == ("upstream", "downstream", 1000)


async def test_no_route_is_f02_with_ilp_connectors_message(terminal, incoming, fulfill) -> None:
    service = RouterService(TABLE, terminal(fulfill), terminal(None))
    with pytest.raises(Unreachable) as raised:
        await service.handle_request(incoming(destination="test.nowhere.alice"))
    assert raised.value.message == "no route found. source=upstream destination=test.nowhere.alice"


async def test_never_routes_back_to_the_sender(terminal, incoming, fulfill) -> None:
    service = RouterService(TABLE, terminal(fulfill), terminal(None))
    with pytest.raises(Unreachable):
        await service.handle_request(incoming(destination="test.upstream.carol"))


async def test_peer_protocol_destinations_are_not_forwarded(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    service = RouterService(RoutingTable([("", "downstream")]), inner, inner)
    with pytest.raises(Unreachable):
        await service.handle_request(incoming(destination="peer.route.control"))
    assert inner.seen == []


async def test_this_nodes_address_goes_to_the_local_receiver(
    terminal, incoming, fulfill, reject
) -> None:
    onward, receiver = terminal(reject), terminal(fulfill)
    service = RouterService(TABLE, onward, receiver)
    for destination in ("test.me", "test.me.invoice"):
        assert await service.handle_request(incoming(destination=destination)) is fulfill
    assert await service.handle_request(incoming(destination="test.me.child.x")) is reject
    assert [r.to_peer for r in onward.seen] == ["child"]
    assert len(receiver.seen) == 2
