"""Fuzzing the BTP server of a real `ConnectorNode` over real websockets on 127.0.0.1.

Random websocket messages (binary and text; mutated BTP frames, frames carrying damaged or
live ILP Prepares, plain noise) are sent before auth and after it, and raw bytes are written
where an HTTP upgrade or a websocket frame should be. Afterwards the connection still serves
(garbage after auth must not cost an authenticated peer its link) or, when the garbage came
before auth or broke the websocket framing, a fresh connection does: an ILP Prepare gets a
BTP Response carrying `ilp`, the node's packet path's own Reject (F02, no route).

The node runs on its own event loop in a thread, because hypothesis drives sync tests.
`PAYCHAN_FUZZ_EXAMPLES` raises the example count per test for a soak (default 60); the counts
of messages and raw writes sent are printed at the end (`-s`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from connector.codec import btp
from connector.config import NodeConfig
from connector.node import ConnectorNode
from tests.fuzz import targets
from tests.fuzz.btp_node import (
    ANSWER_WITHIN,
    assert_serves,
    authenticate,
    connect_to,
    node_config_data,
)
from tests.fuzz.strategies import AUTH_FIRST, BTP_BYTES, ilp_messages, mutated

EXAMPLES = int(os.environ.get("PAYCHAN_FUZZ_EXAMPLES", "60"))
SERVER_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # each example has its own time bounds (answers within 5 s)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SENT: Counter[str] = Counter()

pytestmark = pytest.mark.timeout(600)

T = TypeVar("T")

# ILP Prepares the packet path acts on: to the node itself, back to us, nowhere.
ILP_MESSAGES = ilp_messages(["g.node", "g.node.x", "g.alice.x", "g.nowhere", "g.bob"])
WS_MESSAGES = st.lists(
    st.one_of(
        mutated(BTP_BYTES),
        ILP_MESSAGES,
        st.binary(max_size=64),
        st.text(max_size=64),  # a text message; the link reads it as its UTF-8 bytes
    ),
    min_size=1,
    max_size=10,
)


class NodeThread:
    """A ConnectorNode on an event loop in a thread; `run` executes a coroutine there."""

    def __init__(self, config: NodeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.node = ConnectorNode(config)

    def __enter__(self) -> NodeThread:
        self._thread.start()
        self.run(self.node.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.node.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.node.btp_port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    tmp: Path = tmp_path_factory.mktemp("btp-fuzz")
    config = NodeConfig.model_validate(node_config_data(tmp))
    with NodeThread(config) as node:
        yield node
    print(f"\nBTP server fuzz: {dict(SENT)}")


# --- talking to the node ----------------------------------------------------------------------


async def _fresh_connection_serves(url: str) -> None:
    ws = await authenticate(url)
    try:
        await assert_serves(ws, set())
    finally:
        await ws.close()


async def _send_all(ws: ClientConnection, messages: list[bytes | str]) -> None:
    for message in messages:
        await ws.send(message)
        SENT["text" if isinstance(message, str) else "binary"] += 1


def _request_ids(messages: list[bytes | str]) -> set[int]:
    raw = [m.encode() if isinstance(m, str) else m for m in messages]
    return {int.from_bytes(m[1:5], "big") for m in raw if len(m) >= 5}


# --- garbage before auth ---------------------------------------------------------------------


async def _before_auth(url: str, first: bytes, rest: list[bytes | str]) -> None:
    ws = await connect_to(url)
    try:
        await ws.send(first)
        SENT["binary"] += 1
        if targets.is_valid_auth(first):
            assert btp.decode(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)) == btp.Response(
                btp.decode(first).request_id, ()
            )
            await _send_all(ws, rest)
            await assert_serves(ws, _request_ids(rest))
            return
        # Refused: at most one BTP Error F00, then the server closes the connection.
        received = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(ANSWER_WITHIN):
                try:
                    await _send_all(ws, rest)
                except ConnectionClosed:
                    pass
                while True:
                    received.append(btp.decode(await ws.recv()))
        assert all(isinstance(f, btp.Error) and f.code == "F00" for f in received), received
        assert len(received) <= 1
    finally:
        await ws.close()
    await _fresh_connection_serves(url)


@SERVER_FUZZ
@given(first=st.one_of(AUTH_FIRST, mutated(BTP_BYTES), st.binary(max_size=40)), rest=WS_MESSAGES)
def test_garbage_before_auth_is_refused_and_the_server_keeps_serving(
    server: NodeThread, first: bytes, rest: list[bytes | str]
) -> None:
    server.run(_before_auth(server.url, first, rest))


@SERVER_FUZZ
@given(text=st.text(min_size=1, max_size=64))
def test_a_text_message_before_auth_is_refused(server: NodeThread, text: str) -> None:
    async def scenario() -> None:
        ws = await connect_to(server.url)
        try:
            await _send_all(ws, [text])
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(ANSWER_WITHIN):
                    while True:
                        assert isinstance(btp.decode(await ws.recv()), btp.Error)
        finally:
            await ws.close()
        await _fresh_connection_serves(server.url)

    server.run(scenario())


# --- garbage after auth ----------------------------------------------------------------------


async def _after_auth(url: str, messages: list[bytes | str]) -> None:
    ws = await authenticate(url)
    try:
        await _send_all(ws, messages)
        # The same connection: garbage never costs an authenticated peer its link.
        await assert_serves(ws, _request_ids(messages) | {1})
    finally:
        await ws.close()


@SERVER_FUZZ
@given(messages=WS_MESSAGES)
def test_garbage_after_auth_leaves_the_link_serving(
    server: NodeThread, messages: list[bytes | str]
) -> None:
    server.run(_after_auth(server.url, messages))


# --- broken websocket framing and HTTP ---------------------------------------------------------


async def _raw(url: str, before_handshake: bytes | None, after_handshake: bytes) -> None:
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if before_handshake is not None:
            writer.write(before_handshake)
        else:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN)
            assert head.startswith(b"HTTP/1.1 101"), head
            writer.write(after_handshake)
        SENT["raw writes"] += 1
        await writer.drain()
        # Whatever the server makes of it (close, 400, waiting for the rest of a frame),
        # read what comes for a moment, then hang up.
        try:
            async with asyncio.timeout(0.05):
                while await reader.read(65536):
                    pass
        except TimeoutError:
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    await _fresh_connection_serves(url)


# Frame headers a websocket parser must survive: reserved opcodes and bits, unmasked client
# frames, 64-bit lengths, control frames that are too long or fragmented, a bad close code.
FRAME_GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda head, length, rest: bytes(head) + bytes([length]) + rest,
        st.lists(st.integers(0, 255), min_size=1, max_size=1),
        st.integers(0, 255),
        st.binary(max_size=140),
    ),
    st.sampled_from(
        [
            b"\x82\x05hello",  # unmasked binary frame
            b"\x83\x80\x00\x00\x00\x00",  # reserved opcode 3
            b"\xc2\x80\x00\x00\x00\x00",  # RSV1 without an extension
            b"\x89\xfe\x01\x00" + bytes(4) + bytes(256),  # ping longer than 125 bytes
            b"\x09\x80\x00\x00\x00\x00",  # fragmented ping
            b"\x88\x82\x00\x00\x00\x00\x03\xe7",  # close with code 999
            b"\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00",  # 2^63 - 1 bytes
            b"\x00\x80\x00\x00\x00\x00",  # continuation with nothing to continue
        ]
    ),
)
HTTP_GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n",
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello
        ]
    ),
)


@SERVER_FUZZ
@given(garbage=FRAME_GARBAGE)
def test_broken_websocket_frames_close_only_that_connection(
    server: NodeThread, garbage: bytes
) -> None:
    server.run(_raw(server.url, None, garbage))


@SERVER_FUZZ
@given(garbage=HTTP_GARBAGE)
def test_garbage_instead_of_the_http_upgrade(server: NodeThread, garbage: bytes) -> None:
    server.run(_raw(server.url, garbage, b""))


def test_an_oversized_message_after_auth_closes_that_link_only(server: NodeThread) -> None:
    """Over the 64 KiB frame limit the websocket layer closes (1009); others are unaffected."""

    async def scenario() -> None:
        bystander = await authenticate(server.url)
        ws = await connect_to(server.url)
        try:
            await ws.send(targets.auth_frame(b"bob", b"bob-token"))
            await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)
            await ws.send(bytes(70_000))
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(ANSWER_WITHIN):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1009
            await assert_serves(bystander, {1})
        finally:
            await ws.close()
            await bystander.close()
        await _fresh_connection_serves(server.url)

    server.run(scenario())


def test_the_node_serves_after_the_fuzzing(server: NodeThread) -> None:
    server.run(_fresh_connection_serves(server.url))
    links = server.run(_links(server.node))
    assert links <= {"alice", "bob"}


async def _links(node: ConnectorNode) -> set[str]:
    return set(node.links)
