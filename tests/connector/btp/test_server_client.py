"""BtpServer / BtpClient / BtpLink over real websockets on 127.0.0.1 (free ports).

Garbage after auth: an unreadable *request* with a readable id gets a BTP Error F01 and
the link stays open; any other unreadable frame is ignored (RFC 0023 "Flow"); see
connector/btp/protocol.py. Garbage before auth closes the connection.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from connector.btp.client import BtpClient
from connector.btp.connection import BtpLink
from connector.btp.errors import BtpRefused, LinkDown, LinkTimeout
from connector.btp.server import BtpServer
from connector.codec import btp, ilp
from connector.codec.btp import ContentType, ProtocolData

SECRET = "alice-secret"
CONDITION = bytes(32)


class EchoHandler:
    """Answers every Prepare with a Fulfill whose data echoes the Prepare's data.

    Destinations ending in `.slow` wait `slow_seconds`; `.boom` raises (a handler bug).
    Messages echo their protocol data; a primary entry `refuse` is answered with F00.
    """

    def __init__(self, slow_seconds: float = 1.0, jitter: float = 0.0) -> None:
        self.slow_seconds = slow_seconds
        self.jitter = jitter
        self.prepares: list[tuple[str, ilp.Prepare]] = []

    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        prepare = ilp.decode_prepare(packet)
        self.prepares.append((peer_id, prepare))
        if prepare.destination.endswith(".slow"):
            await asyncio.sleep(self.slow_seconds)
        if prepare.destination.endswith(".boom"):
            raise RuntimeError("handler bug")
        if self.jitter:
            await asyncio.sleep(random.uniform(0, self.jitter))
        return ilp.encode(ilp.Fulfill(bytes(32), prepare.data))

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        if protocol_data and protocol_data[0].protocol_name == "refuse":
            raise BtpRefused("F00", "refused on purpose")
        return protocol_data


class LinkEvents:
    """on_link_up / on_link_down recorder with waits."""

    def __init__(self) -> None:
        self.log: list[tuple[str, BtpLink]] = []
        self._changed = asyncio.Condition()

    async def up(self, link: BtpLink) -> None:
        async with self._changed:
            self.log.append(("up", link))
            self._changed.notify_all()

    async def down(self, link: BtpLink) -> None:
        async with self._changed:
            self.log.append(("down", link))
            self._changed.notify_all()

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> BtpLink:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self._count(kind) >= count), timeout
            )
            return [link for k, link in self.log if k == kind][count - 1]

    def _count(self, kind: str) -> int:
        return sum(1 for k, _ in self.log if k == kind)


def _prepare(destination: str = "test.bob", data: bytes = b"") -> bytes:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    return ilp.encode(ilp.Prepare(1000, expires, CONDITION, destination, data))


def _auth(token: str, username: str = "alice", request_id: int = 1) -> bytes:
    return btp.encode(
        btp.Message(
            request_id,
            (
                ProtocolData("auth", ContentType.OCTET_STREAM, b""),
                ProtocolData("auth_username", ContentType.TEXT_PLAIN_UTF8, username.encode()),
                ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, token.encode()),
            ),
        )
    )


def _ilp_message(request_id: int, packet: bytes) -> bytes:
    return btp.encode(
        btp.Message(request_id, (ProtocolData("ilp", ContentType.OCTET_STREAM, packet),))
    )


async def _raw(server: BtpServer) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{server.port}", proxy=None, max_size=None)


async def _closed(ws: ClientConnection, timeout: float = 3.0) -> None:
    """Wait until the server closes `ws`, failing if a frame arrives instead."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            frame = await ws.recv()
            pytest.fail(f"expected a close, got {frame!r}")


@pytest.fixture
async def handler() -> EchoHandler:
    return EchoHandler()


@pytest.fixture
async def server_events() -> LinkEvents:
    return LinkEvents()


@pytest.fixture
async def server(handler: EchoHandler, server_events: LinkEvents) -> AsyncIterator[BtpServer]:
    server = BtpServer(
        "127.0.0.1",
        0,
        {"alice": SECRET, "carol": "carol-secret"},
        handler,
        server_events.up,
        server_events.down,
        max_frame_size=4096,
        auth_timeout=0.5,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client_events() -> LinkEvents:
    return LinkEvents()


@pytest.fixture
async def client(
    server: BtpServer, handler: EchoHandler, client_events: LinkEvents
) -> AsyncIterator[BtpClient]:
    client = BtpClient(
        f"btp+ws://127.0.0.1:{server.port}",
        "hub",
        "alice",
        SECRET,
        handler,
        client_events.up,
        client_events.down,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


# --- auth ---------------------------------------------------------------------------------


async def test_client_authenticates_and_both_sides_can_send_prepares(
    server: BtpServer,
    client: BtpClient,
    server_events: LinkEvents,
    client_events: LinkEvents,
    handler: EchoHandler,
) -> None:
    inbound = await server_events.wait_for("up")
    outbound = await client_events.wait_for("up")
    assert (inbound.peer_id, inbound.direction) == ("alice", "inbound")
    assert (outbound.peer_id, outbound.direction) == ("hub", "outbound")
    assert server.links == {"alice": inbound}
    assert client.link is outbound

    reply = ilp.decode(await outbound.send_ilp(_prepare(data=b"up"), timeout=2))
    assert reply == ilp.Fulfill(bytes(32), b"up")
    reply = ilp.decode(await inbound.send_ilp(_prepare(data=b"down"), timeout=2))
    assert reply == ilp.Fulfill(bytes(32), b"down")
    assert [(peer, p.data) for peer, p in handler.prepares] == [("alice", b"up"), ("hub", b"down")]


async def test_wrong_token_gets_f00_invalid_auth_token_then_close(server: BtpServer) -> None:
    ws = await _raw(server)
    await ws.send(_auth("wrong"))
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Error)
    assert (reply.request_id, reply.code, reply.data) == (1, "F00", b"invalid auth_token")
    await _closed(ws)


async def test_unknown_username_is_refused(server: BtpServer) -> None:
    ws = await _raw(server)
    await ws.send(_auth(SECRET, username="mallory"))
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Error) and reply.code == "F00"
    await _closed(ws)


async def test_empty_username_is_named_by_its_token_like_ilp_plugin_btp(
    server: BtpServer, server_events: LinkEvents
) -> None:
    ws = await _raw(server)
    await ws.send(_auth("carol-secret", username=""))
    assert btp.decode(await ws.recv()) == btp.Response(1, ())
    link = await server_events.wait_for("up")
    assert link.peer_id == "carol"
    await ws.close()


async def test_no_auth_is_closed_after_the_auth_timeout(server: BtpServer) -> None:
    ws = await _raw(server)
    started = asyncio.get_running_loop().time()
    await _closed(ws, timeout=3.0)
    assert 0.4 < asyncio.get_running_loop().time() - started < 2.5


async def test_ilp_before_auth_gets_f00_then_close(server: BtpServer, handler: EchoHandler) -> None:
    ws = await _raw(server)
    await ws.send(_ilp_message(1, _prepare()))
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Error) and reply.code == "F00"
    await _closed(ws)
    assert handler.prepares == []


async def test_client_with_a_wrong_token_never_comes_up_and_keeps_retrying(
    server: BtpServer, handler: EchoHandler
) -> None:
    attempts = 0
    original = server.authenticate

    def counting(username: str, token: str) -> str | None:
        nonlocal attempts
        attempts += 1
        return original(username, token)

    server.authenticate = counting  # type: ignore[method-assign]
    events = LinkEvents()
    client = BtpClient(
        f"ws://127.0.0.1:{server.port}",
        "hub",
        "alice",
        "wrong",
        handler,
        events.up,
        min_backoff=0.05,
        max_backoff=0.1,
    )
    await client.start()
    try:
        await asyncio.sleep(0.6)
        assert attempts >= 3
        assert events.log == [] and client.link is None
    finally:
        await client.stop()


# --- requests -----------------------------------------------------------------------------


async def test_many_concurrent_requests_each_get_their_own_answer(
    server: BtpServer, client_events: LinkEvents, client: BtpClient, handler: EchoHandler
) -> None:
    handler.jitter = 0.01
    link = await client_events.wait_for("up")
    payloads = [f"packet-{i}".encode() for i in range(300)]
    replies = await asyncio.gather(
        *(link.send_ilp(_prepare(data=payload), timeout=5) for payload in payloads)
    )
    assert [ilp.decode(reply).data for reply in replies] == payloads


async def test_a_slow_request_does_not_hold_up_the_others(
    server: BtpServer, client_events: LinkEvents, client: BtpClient
) -> None:
    link = await client_events.wait_for("up")
    slow = asyncio.create_task(link.send_ilp(_prepare("test.bob.slow", b"slow"), timeout=5))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    fast = await asyncio.gather(
        *(link.send_ilp(_prepare(data=b"%d" % i), timeout=5) for i in range(10))
    )
    assert asyncio.get_running_loop().time() - started < 0.5
    assert not slow.done()
    assert [ilp.decode(r).data for r in fast] == [b"%d" % i for i in range(10)]
    assert ilp.decode(await slow).data == b"slow"


async def test_a_timed_out_request_raises_and_the_link_stays_usable(
    server: BtpServer, client_events: LinkEvents, client: BtpClient
) -> None:
    link = await client_events.wait_for("up")
    with pytest.raises(LinkTimeout):
        await link.send_ilp(_prepare("test.bob.slow"), timeout=0.2)
    assert ilp.decode(await link.send_ilp(_prepare(data=b"after"), timeout=2)).data == b"after"


async def test_a_handler_bug_still_answers_the_prepare_with_an_ilp_reject(
    server: BtpServer, client_events: LinkEvents, client: BtpClient
) -> None:
    link = await client_events.wait_for("up")
    reply = ilp.decode(await link.send_ilp(_prepare("test.bob.boom"), timeout=2))
    assert isinstance(reply, ilp.Reject) and reply.code == "T00"


async def test_messages_are_answered_or_refused_by_the_handler(
    server: BtpServer, client_events: LinkEvents, client: BtpClient
) -> None:
    link = await client_events.wait_for("up")
    claim = (ProtocolData("payment-channel-claim", ContentType.APPLICATION_JSON, b'{"nonce":1}'),)
    assert await link.send_message(claim, timeout=2) == claim
    with pytest.raises(BtpRefused) as refused:
        await link.send_message((ProtocolData("refuse", ContentType.OCTET_STREAM, b""),), timeout=2)
    assert (refused.value.code, refused.value.message) == ("F00", "refused on purpose")


async def test_transfers_are_refused_with_f00(server: BtpServer) -> None:
    ws = await _raw(server)
    await ws.send(_auth(SECRET))
    await ws.recv()
    await ws.send(btp.encode(btp.Transfer(2, 100, ())))
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Error) and (reply.request_id, reply.code) == (2, "F00")
    await ws.close()


async def test_pending_requests_fail_with_link_down_when_the_link_closes(
    server: BtpServer, server_events: LinkEvents, client_events: LinkEvents, client: BtpClient
) -> None:
    link = await client_events.wait_for("up")
    inbound = await server_events.wait_for("up")
    pending = asyncio.create_task(link.send_ilp(_prepare("test.bob.slow"), timeout=5))
    await asyncio.sleep(0.05)
    await inbound.close()
    with pytest.raises(LinkDown):
        await pending
    with pytest.raises(LinkDown):
        await link.send_ilp(_prepare(), timeout=1)


# --- garbage ------------------------------------------------------------------------------


async def test_garbage_after_auth_does_not_break_the_link(server: BtpServer) -> None:
    ws = await _raw(server)
    await ws.send(_auth(SECRET))
    assert btp.decode(await ws.recv()) == btp.Response(1, ())

    for garbage in (b"", b"\xff", b"\x01\x00\x00\x00\x07\x09", random.randbytes(300), "text frame"):
        await ws.send(garbage)
    await ws.send(bytes.fromhex("060000002a05ffffff"))  # a request with a readable id
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Error)
    assert (reply.request_id, reply.code) == (42, "F01")

    await ws.send(_ilp_message(43, _prepare(data=b"still here")))
    reply = btp.decode(await ws.recv())
    assert isinstance(reply, btp.Response) and reply.request_id == 43
    assert ilp.decode(btp.find(reply.protocol_data, "ilp").data).data == b"still here"
    await ws.close()


async def test_garbage_before_auth_closes_only_that_connection(
    server: BtpServer, client_events: LinkEvents, client: BtpClient
) -> None:
    ws = await _raw(server)
    await ws.send(b"\x00\x01")
    await _closed(ws)
    link = await client_events.wait_for("up")
    assert ilp.decode(await link.send_ilp(_prepare(data=b"ok"), timeout=2)).data == b"ok"


async def test_frames_over_the_size_limit_close_the_connection(server: BtpServer) -> None:
    ws = await _raw(server)
    await ws.send(_auth(SECRET))
    await ws.recv()
    await ws.send(_ilp_message(2, _prepare(data=b"\xaa" * 3000)))  # fits in 4096
    assert isinstance(btp.decode(await ws.recv()), btp.Response)
    await ws.send(_ilp_message(3, _prepare(data=b"\xaa" * 5000)))
    await _closed(ws)
    assert ws.close_code == 1009  # message too big


# --- lifecycle ----------------------------------------------------------------------------


async def test_client_reconnects_after_the_server_restarts(handler: EchoHandler) -> None:
    server_events, client_events = LinkEvents(), LinkEvents()
    first = BtpServer("127.0.0.1", 0, {"alice": SECRET}, handler, server_events.up)
    await first.start()
    port = first.port
    client = BtpClient(
        f"ws://127.0.0.1:{port}",
        "hub",
        "alice",
        SECRET,
        handler,
        client_events.up,
        client_events.down,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    await client.start()
    second = BtpServer("127.0.0.1", port, {"alice": SECRET}, handler, server_events.up)
    try:
        await client_events.wait_for("up")
        await first.stop()
        await client_events.wait_for("down")
        assert client.link is None
        await asyncio.sleep(0.3)  # the client retries against a closed port meanwhile
        await second.start()
        link = await client_events.wait_for("up", count=2)
        assert ilp.decode(await link.send_ilp(_prepare(data=b"again"), timeout=2)).data == b"again"
        assert [kind for kind, _ in client_events.log] == ["up", "down", "up"]
    finally:
        await client.stop()
        await second.stop()
        await first.stop()


async def test_a_peer_reconnecting_replaces_its_old_link_down_before_up(
    server: BtpServer, server_events: LinkEvents
) -> None:
    first = await _raw(server)
    await first.send(_auth(SECRET))
    await first.recv()
    old = await server_events.wait_for("up")
    second = await _raw(server)
    await second.send(_auth(SECRET))
    await second.recv()
    new = await server_events.wait_for("up", count=2)
    assert [(kind, link) for kind, link in server_events.log] == [
        ("up", old),
        ("down", old),
        ("up", new),
    ]
    assert server.links == {"alice": new}
    await _closed(first)
    await second.close()


async def test_stop_fires_link_down_for_every_link(
    handler: EchoHandler,
) -> None:
    events = LinkEvents()
    server = BtpServer("127.0.0.1", 0, {"alice": SECRET}, handler, events.up, events.down)
    await server.start()
    ws = await _raw(server)
    await ws.send(_auth(SECRET))
    await ws.recv()
    await events.wait_for("up")
    await server.stop()
    assert [kind for kind, _ in events.log] == ["up", "down"]
    await _closed(ws)
