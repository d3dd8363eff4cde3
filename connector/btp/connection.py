"""One BTP link over a websocket, either direction: `BtpProtocol` plus futures and tasks.

The integration contract of a sans-I/O protocol: feed every websocket message to
`BtpProtocol.receive_message`, act on `events_received()`, and write `data_to_send()`
after every call that may queue frames.

- Incoming requests run concurrently, one task each, so a slow request never holds up
  the others. A Message carrying `ilp` goes to `PeerHandler.handle_ilp` and is *always*
  answered with a Response carrying `ilp` (Fulfill or Reject), never a BTP Error; other
  Messages go to `PeerHandler.handle_message`. BTP Transfers are refused (F00): settlement
  travels as Message protocol data (`payment-channel-claim`).
- Outgoing requests wait on a future keyed by request id; closing the link fails them
  with `LinkDown`.
- `on_link_up` / `on_link_down` run inline, in that order, at most once each per link;
  keep them short (spawn a task for slow work such as a Temporal signal).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as SocketState

from connector.btp.errors import BtpRefused, InvalidResponse, LinkDown, LinkTimeout
from connector.btp.protocol import (
    ILP,
    AuthRefused,
    BtpErrorCode,
    BtpProtocol,
    ErrorReceived,
    Event,
    FrameIgnored,
    MessageReceived,
    ResponseReceived,
    SessionClosed,
    State,
    TransferReceived,
)
from connector.codec import btp, ilp
from connector.codec.btp import ContentType, ProtocolData

log = structlog.get_logger(__name__)

# ILP data is at most 32767 bytes, so a Prepare wrapped in BTP fits twice over.
DEFAULT_MAX_FRAME_SIZE = 64 * 1024
DEFAULT_AUTH_TIMEOUT = 5.0


class PeerHandler(Protocol):
    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        """An encoded ILP Prepare from the peer -> the encoded Fulfill or Reject."""
        ...

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        """Non-ILP protocol data (e.g. `payment-channel-claim`) -> the Response's protocol
        data. Raise `BtpRefused(code, message)` to answer with a BTP Error instead."""
        ...


LinkCallback = Callable[["BtpLink"], Awaitable[None] | None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class BtpLink:
    """One authenticated BTP connection; created by `BtpServer` or `BtpClient`."""

    def __init__(
        self,
        websocket: Connection,
        protocol: BtpProtocol,
        handler: PeerHandler,
        *,
        direction: str,
        on_link_up: LinkCallback | None = None,
        on_link_down: LinkCallback | None = None,
    ) -> None:
        self.direction = direction  # "inbound" (our server) or "outbound" (our client)
        self._ws = websocket
        self._protocol = protocol
        self._handler = handler
        self._on_link_up = on_link_up
        self._on_link_down = on_link_down
        self._waiting: dict[int, asyncio.Future[ResponseReceived | ErrorReceived]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._announced = False
        self._finished = asyncio.Event()
        self._finishing_task: asyncio.Task[object] | None = None

    def __repr__(self) -> str:
        return f"BtpLink(peer_id={self.peer_id!r}, direction={self.direction!r})"

    @property
    def peer_id(self) -> str:
        return self._protocol.peer_id or ""

    @property
    def is_open(self) -> bool:
        return self._protocol.state is State.OPEN and self._ws.state is SocketState.OPEN

    # --- outgoing requests -------------------------------------------------------------

    async def send_ilp(self, packet: bytes, timeout: float) -> bytes:
        """Send an encoded ILP Prepare; return the encoded Fulfill or Reject."""
        reply = await self._request(lambda: self._protocol.send_ilp(packet), timeout)
        if isinstance(reply, ErrorReceived):
            raise _refused(reply)
        entry = btp.find(reply.protocol_data, ILP)
        if entry is None:
            raise InvalidResponse(f"peer {self.peer_id} answered an ILP Prepare without ilp data")
        return entry.data

    async def send_message(
        self, protocol_data: Sequence[ProtocolData], timeout: float
    ) -> tuple[ProtocolData, ...]:
        """Send a BTP Message; return the Response's protocol data (`BtpRefused` on Error)."""
        reply = await self._request(lambda: self._protocol.send_message(protocol_data), timeout)
        if isinstance(reply, ErrorReceived):
            raise _refused(reply)
        return reply.protocol_data

    async def _request(
        self, send: Callable[[], int], timeout: float
    ) -> ResponseReceived | ErrorReceived:
        if not self.is_open:
            raise LinkDown(f"BTP link to {self.peer_id} is not open")
        request_id = send()
        future: asyncio.Future[ResponseReceived | ErrorReceived] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._flush()
                return await future
        except TimeoutError:
            raise LinkTimeout(f"no answer from {self.peer_id} within {timeout}s") from None
        except ConnectionClosed:
            raise LinkDown(f"BTP link to {self.peer_id} closed") from None
        finally:
            self._waiting.pop(request_id, None)
            self._protocol.forget(request_id)

    # --- driving the link --------------------------------------------------------------

    async def run(self, auth_timeout: float) -> bool:
        """Authenticate, then process frames until the socket closes.

        Returns whether the link was ever open (the client resets its backoff on that).
        """
        try:
            await self._flush()  # the client's auth Message
            try:
                async with asyncio.timeout(auth_timeout):
                    while self._protocol.state is State.AWAITING_AUTH:
                        await self._receive(await self._ws.recv())
            except TimeoutError:
                log.warning("BTP_AUTH_TIMEOUT", direction=self.direction, timeout=auth_timeout)
                self._protocol.close("auth timeout")
                return False
            if self._protocol.state is not State.OPEN:
                return False
            self._announced = True
            log.info("BTP_LINK_UP", peer_id=self.peer_id, direction=self.direction)
            await _call(self._on_link_up, self, "on_link_up")
            async for message in self._ws:
                await self._receive(message)
                if self._protocol.state is State.CLOSED:
                    break
            return True
        except ConnectionClosed:
            return self._announced
        finally:
            await self._finish()

    async def close(self) -> None:
        """Close the link; pending requests fail with `LinkDown`, callbacks run."""
        self._protocol.close("closed locally")
        await self._ws.close()
        await self._finish()

    async def cancel_requests_in_progress(self) -> None:
        """Shutdown only: cancel the tasks still serving the peer's requests."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _finish(self) -> None:
        if self._finishing_task is not None:
            # A callback that closes its own link must not wait for itself.
            if asyncio.current_task() is not self._finishing_task:
                await self._finished.wait()
            return
        self._finishing_task = asyncio.current_task()
        try:
            self._protocol.close("link closed")
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(LinkDown(f"BTP link to {self.peer_id} closed"))
            self._waiting.clear()
            await self._ws.close()
            if self._announced:
                log.info("BTP_LINK_DOWN", peer_id=self.peer_id, direction=self.direction)
                await _call(self._on_link_down, self, "on_link_down")
        finally:
            self._finished.set()

    async def _receive(self, message: bytes | str) -> None:
        data = message if isinstance(message, bytes) else message.encode("utf-8")
        self._protocol.receive_message(data)
        close = False
        for event in self._protocol.events_received():
            close = self._dispatch(event) or close
        await self._flush()
        if close:
            await self._ws.close()

    def _dispatch(self, event: Event) -> bool:
        """Act on one event; True when the session must close."""
        match event:
            case MessageReceived():
                task = asyncio.create_task(self._serve(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case TransferReceived(request_id=request_id):
                self._protocol.respond_error(
                    request_id,
                    BtpErrorCode.F00_NOT_ACCEPTED,
                    "BTP Transfer is not supported; send settlement as Message protocol data",
                )
            case ResponseReceived() | ErrorReceived():
                future = self._waiting.get(event.request_id)
                if future is not None and not future.done():
                    future.set_result(event)
            case FrameIgnored(reason=reason):
                log.debug("BTP_FRAME_IGNORED", peer_id=self.peer_id, reason=reason)
            case AuthRefused(code=code, message=message):
                log.warning("BTP_AUTH_REFUSED", peer_id=self.peer_id, code=code, message=message)
            case SessionClosed(reason=reason):
                log.info("BTP_SESSION_CLOSED", peer_id=self.peer_id, reason=reason)
                return True
        return False

    async def _serve(self, event: MessageReceived) -> None:
        request_id = event.request_id
        entry = btp.find(event.protocol_data, ILP)
        if entry is not None:
            try:
                reply = await self._handler.handle_ilp(self.peer_id, entry.data)
            except Exception:
                # The packet path turns its own failures into Rejects; reaching here is a bug.
                log.exception("BTP_ILP_HANDLER_FAILED", peer_id=self.peer_id)
                reply = _internal_error_reject()
            self._protocol.respond(
                request_id, (ProtocolData(ILP, ContentType.OCTET_STREAM, reply),)
            )
        else:
            try:
                answer = await self._handler.handle_message(self.peer_id, event.protocol_data)
            except BtpRefused as exc:
                self._protocol.respond_error(request_id, exc.code, exc.message)
            except Exception:
                log.exception("BTP_MESSAGE_HANDLER_FAILED", peer_id=self.peer_id)
                self._protocol.respond_error(
                    request_id, BtpErrorCode.T00_UNREACHABLE, "internal error"
                )
            else:
                self._protocol.respond(request_id, answer)
        try:
            await self._flush()
        except ConnectionClosed:
            pass  # the peer left while we served it; nobody to answer

    async def _flush(self) -> None:
        for frame in self._protocol.data_to_send():
            await self._ws.send(frame)


def _refused(reply: ErrorReceived) -> BtpRefused:
    return BtpRefused(reply.error.code, reply.error.data.decode("utf-8", errors="replace"))


def _internal_error_reject() -> bytes:
    # The link does not know the node's address; an empty triggeredBy is valid on the wire.
    return ilp.encode(ilp.Reject(ilp.ErrorCode.T00_INTERNAL_ERROR, "", "internal error", b""))


async def _call(callback: LinkCallback | None, link: BtpLink, name: str) -> None:
    if callback is None:
        return
    try:
        result = callback(link)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("BTP_CALLBACK_FAILED", callback=name, peer_id=link.peer_id)
