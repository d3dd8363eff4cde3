"""PeerService against an in-memory link that answers with bytes, or fails as links do."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from connector.btp.errors import BtpRefused, InvalidResponse, LinkDown, LinkTimeout
from connector.codec import ilp
from connector.errors import InvalidPacket, PeerUnreachable, TransferTimedOut, Unreachable
from connector.services.peer import PeerService


class MemoryLink:
    def __init__(self, answer: Callable[[bytes], bytes] | Exception, is_open: bool = True) -> None:
        self.answer = answer
        self.is_open = is_open
        self.sent: list[tuple[bytes, float]] = []

    async def send_ilp(self, packet: bytes, timeout: float) -> bytes:
        self.sent.append((packet, timeout))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(packet)


async def test_sends_received_bytes_with_amount_and_expiry_patched(
    incoming, fulfill, clock, now
) -> None:
    link = MemoryLink(lambda _: ilp.encode(fulfill))
    request = incoming(amount=1000).to_outgoing("down").with_amount(990)
    request = request.with_expiry(now + timedelta(seconds=9))
    assert await PeerService({"down": link}, clock).send_request(request) == fulfill
    ((packet, timeout),) = link.sent
    sent = ilp.decode_prepare(packet)
    assert (sent.amount, sent.expires_at, timeout) == (990, now + timedelta(seconds=9), 9.0)
    assert (sent.destination, sent.data, sent.execution_condition) == (
        request.prepare.destination,
        request.prepare.data,
        request.prepare.execution_condition,
    )


async def test_rejects_from_downstream_keep_their_origin(incoming, reject, clock) -> None:
    link = MemoryLink(lambda _: ilp.encode(reject))
    answer = await PeerService({"down": link}, clock).send_request(incoming().to_outgoing("down"))
    assert answer == reject
    assert answer.triggered_by == "test.downstream"


@pytest.mark.parametrize("links", [{}, {"down": MemoryLink(lambda p: p, is_open=False)}])
async def test_no_open_link_is_t01(links, incoming, clock) -> None:
    with pytest.raises(PeerUnreachable) as raised:
        await PeerService(links, clock).send_request(incoming().to_outgoing("down"))
    assert raised.value.message == "no connection to account. account=down"


@pytest.mark.parametrize(
    ("failure", "error", "code"),
    [
        (LinkDown("closed"), PeerUnreachable, "T01"),
        (LinkTimeout("slow"), TransferTimedOut, "R00"),
        (BtpRefused("F00", "unexpected destination"), Unreachable, "F02"),
        (InvalidResponse("no ilp"), InvalidPacket, "F01"),
    ],
)
async def test_link_failures_become_ilp_errors(failure, error, code, incoming, clock) -> None:
    service = PeerService({"down": MemoryLink(failure)}, clock)
    with pytest.raises(error) as raised:
        await service.send_request(incoming().to_outgoing("down"))
    assert raised.value.code == code


@pytest.mark.parametrize("reply", [b"", b"\x0e\x01", "prepare"])
async def test_unreadable_reply_is_f01(reply, incoming, clock) -> None:
    request = incoming().to_outgoing("down")
    answer = request.raw if reply == "prepare" else reply
    service = PeerService({"down": MemoryLink(lambda _: answer)}, clock)
    with pytest.raises(InvalidPacket):
        await service.send_request(request)
