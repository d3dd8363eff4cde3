from __future__ import annotations

import pytest

from connector.codec import ilp
from connector.errors import BadRequest, InvalidPacket
from connector.services.interface import IncomingRequest
from connector.services.peer_protocol import PEER_PROTOCOL_CONDITION, PeerProtocolService


def test_condition_is_ilp_connectors() -> None:
    assert PEER_PROTOCOL_CONDITION.hex() == (
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    )


async def test_route_broadcasts_are_acknowledged_and_not_forwarded(terminal, fulfill) -> None:
    # The peer.route.control Prepare ilp-connector@23.0.2 sent, and the reply it got.
    raw = bytes.fromhex(
        "0c640000000000000000323032363131323430333037303235313866687aadf862bd776c8fc18b8e9f8e20"
        "089714856ee233b3902a591d0d5f292512706565722e726f7574652e636f6e74726f6c17010000000000"
        "0000000000000000000000000000000100"
    )
    inner = terminal(fulfill)
    answer = await PeerProtocolService(inner).handle_request(
        IncomingRequest("conn2", ilp.decode_prepare(raw), raw)
    )
    assert ilp.encode(answer).hex() == "0d21" + "00" * 33
    assert inner.seen == []


async def test_wrong_condition_is_f01(terminal, incoming, fulfill) -> None:
    with pytest.raises(InvalidPacket) as raised:
        await PeerProtocolService(terminal(fulfill)).handle_request(
            incoming(destination="peer.config")
        )
    assert raised.value.message == "condition must be peer protocol condition."


async def test_other_peer_protocols_are_refused(terminal, incoming, fulfill) -> None:
    with pytest.raises(BadRequest):
        await PeerProtocolService(terminal(fulfill)).handle_request(
            incoming(destination="peer.config", condition=PEER_PROTOCOL_CONDITION)
        )


async def test_other_destinations_pass(terminal, incoming, fulfill) -> None:
    assert await PeerProtocolService(terminal(fulfill)).handle_request(incoming()) is fulfill
