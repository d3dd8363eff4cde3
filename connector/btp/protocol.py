"""Sans-I/O BTP session (RFC 0023): authentication, request ids, correlation, state.

`BtpProtocol` owns no socket. The I/O layer feeds it whole WebSocket messages with
`receive_message(bytes)`, then reads `events_received()` and writes every frame from
`data_to_send()`; after any `send_*` / `respond*` call it flushes `data_to_send()` again.
Futures, timers and reconnects live in `connection.py`, `server.py`, `client.py`.

State: AWAITING_AUTH -> OPEN -> CLOSED.

- Server role: the first frame must be a Message whose primary protocol data is `auth`
  and which carries `auth_token` (and optionally `auth_username`). `authenticate(username,
  token)` names the peer or refuses. Anything else, or a refused token, is answered with
  an Error F00 (when a request id can be read) and the session closes, as ilp-connector
  does (vectors/captured/raw-btp-handshake.json, same error texts).
- Client role: the auth Message is queued at construction, exactly as ilp-plugin-btp
  sends it; a Response opens the link, an Error closes it.
- Once open, every request received gets exactly one Response or Error (the caller
  answers with `respond` / `respond_error`); responses are matched to our requests by id.
  Responses nobody waits for are ignored (RFC 0023, no feedback loops).
- Unreadable frames after auth: RFC 0023 says send nothing back. We answer one case: a
  frame whose type byte says *request* (Message/Transfer) and whose request id is
  readable gets an Error F01, so the peer does not wait out its timeout; an Error is a
  response, and responses to unknown ids are never answered, so this cannot loop.
  Everything else unreadable is ignored and the link stays open.

Time comes in through `clock` (only for the `triggeredAt` of Errors we send).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum

from connector.btp.errors import InvalidState
from connector.codec import btp
from connector.codec.btp import ContentType, ProtocolData
from connector.codec.errors import CodecError

MAX_REQUEST_ID = 2**32 - 1


class State(Enum):
    AWAITING_AUTH = "awaiting_auth"
    OPEN = "open"
    CLOSED = "closed"


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class BtpErrorCode(StrEnum):
    """BTP Error codes (RFC 0023 "Error Codes"); apart from ILP codes on purpose."""

    T00_UNREACHABLE = "T00"
    F00_NOT_ACCEPTED = "F00"
    F01_INVALID_FIELDS = "F01"
    F03_TRANSFER_NOT_FOUND = "F03"
    F04_INVALID_FULFILLMENT = "F04"
    F05_DUPLICATE_ID = "F05"
    F06_ALREADY_ROLLED_BACK = "F06"
    F07_ALREADY_FULFILLED = "F07"
    F08_INSUFFICIENT_BALANCE = "F08"


BTP_ERROR_NAMES: dict[str, str] = {
    BtpErrorCode.T00_UNREACHABLE: "UnreachableError",
    BtpErrorCode.F00_NOT_ACCEPTED: "NotAcceptedError",
    BtpErrorCode.F01_INVALID_FIELDS: "InvalidFieldsError",
    BtpErrorCode.F03_TRANSFER_NOT_FOUND: "TransferNotFoundError",
    BtpErrorCode.F04_INVALID_FULFILLMENT: "InvalidFulfillmentError",
    BtpErrorCode.F05_DUPLICATE_ID: "DuplicateIdError",
    BtpErrorCode.F06_ALREADY_ROLLED_BACK: "AlreadyRolledBackError",
    BtpErrorCode.F07_ALREADY_FULFILLED: "AlreadyFulfilledError",
    BtpErrorCode.F08_INSUFFICIENT_BALANCE: "InsufficientBalanceError",
}

# Error texts as ilp-connector / ilp-plugin-btp send them (vectors/captured/raw-btp-handshake.json).
MISSING_AUTH = "Auth packet must have auth and auth_token subprotocols"
INVALID_TOKEN = "invalid auth_token"

ILP = "ilp"
AUTH = "auth"
AUTH_USERNAME = "auth_username"
AUTH_TOKEN = "auth_token"

Authenticate = Callable[[str, str], str | None]
"""(username, token) -> peer id, or None to refuse. Must compare tokens in constant time."""


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkOpened:
    peer_id: str


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Client role: the server answered our auth with an Error; the session is closed."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    request_id: int
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class TransferReceived:
    request_id: int
    amount: int
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    request_id: int
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    request_id: int
    error: btp.Error


@dataclass(frozen=True, slots=True)
class FrameIgnored:
    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The protocol ended the session; flush `data_to_send()`, then close the socket."""

    reason: str


Event = (
    LinkOpened
    | AuthRefused
    | MessageReceived
    | TransferReceived
    | ResponseReceived
    | ErrorReceived
    | FrameIgnored
    | SessionClosed
)


class BtpProtocol:
    def __init__(
        self,
        role: Role,
        *,
        clock: Callable[[], datetime],
        authenticate: Authenticate | None = None,
        peer_id: str | None = None,
        first_request_id: int = 1,
    ) -> None:
        if role is Role.SERVER and authenticate is None:
            raise ValueError("a server-role BtpProtocol needs authenticate")
        self.role = role
        self.state = State.AWAITING_AUTH
        self.peer_id = peer_id
        self.close_reason: str | None = None
        self._clock = clock
        self._authenticate = authenticate
        self._next_id = first_request_id & MAX_REQUEST_ID
        self._outgoing: set[int] = set()  # our requests awaiting their Response/Error
        self._incoming: set[int] = set()  # peer requests we have not answered yet
        self._auth_request_id: int | None = None
        self._events: list[Event] = []
        self._frames: list[bytes] = []

    @classmethod
    def server(cls, authenticate: Authenticate, *, clock: Callable[[], datetime]) -> BtpProtocol:
        return cls(Role.SERVER, clock=clock, authenticate=authenticate)

    @classmethod
    def client(
        cls,
        peer_id: str,
        username: str,
        token: str,
        *,
        clock: Callable[[], datetime],
        first_request_id: int = 1,
    ) -> BtpProtocol:
        """A client session with its auth Message already queued in `data_to_send()`."""
        protocol = cls(Role.CLIENT, clock=clock, peer_id=peer_id, first_request_id=first_request_id)
        request_id = protocol._allocate_request_id()
        protocol._auth_request_id = request_id
        protocol._frames.append(
            btp.encode(
                btp.Message(
                    request_id,
                    (
                        ProtocolData(AUTH, ContentType.OCTET_STREAM, b""),
                        ProtocolData(AUTH_USERNAME, ContentType.TEXT_PLAIN_UTF8, username.encode()),
                        ProtocolData(AUTH_TOKEN, ContentType.TEXT_PLAIN_UTF8, token.encode()),
                    ),
                )
            )
        )
        return protocol

    # --- output --------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        frames, self._frames = self._frames, []
        return frames

    @property
    def requests_in_flight(self) -> int:
        return len(self._outgoing)

    # --- input ---------------------------------------------------------------------------

    def receive_message(self, data: bytes) -> None:
        """Process one WebSocket message. Never raises on any input."""
        if self.state is State.OPEN:
            self._receive_open(data)
        elif self.state is State.AWAITING_AUTH:
            if self.role is Role.SERVER:
                self._receive_auth_request(data)
            else:
                self._receive_auth_reply(data)
        else:
            self._events.append(FrameIgnored("session closed"))

    def _receive_auth_request(self, data: bytes) -> None:
        try:
            frame = btp.decode(data)
        except CodecError as exc:
            if len(data) >= 5:
                self._queue_error(_request_id(data), BtpErrorCode.F00_NOT_ACCEPTED, MISSING_AUTH)
            self._close(f"unreadable frame before auth: {exc}")
            return
        entries = _auth_entries(frame)
        if entries is None:
            self._queue_error(frame.request_id, BtpErrorCode.F00_NOT_ACCEPTED, MISSING_AUTH)
            self._close("first frame was not an auth Message")
            return
        try:
            username, token = entries[0].decode("utf-8"), entries[1].decode("utf-8")
        except UnicodeDecodeError:
            peer_id = None
        else:
            assert self._authenticate is not None
            peer_id = self._authenticate(username, token)
        if peer_id is None:
            self._queue_error(frame.request_id, BtpErrorCode.F00_NOT_ACCEPTED, INVALID_TOKEN)
            # The username helps an operator find the misconfigured peer; the token never leaves.
            shown = entries[0].decode("utf-8", errors="replace")
            self._close(f"auth refused for username {shown!r}")
            return
        self._frames.append(btp.encode(btp.Response(frame.request_id, ())))
        self.peer_id = peer_id
        self.state = State.OPEN
        self._events.append(LinkOpened(peer_id))

    def _receive_auth_reply(self, data: bytes) -> None:
        try:
            frame = btp.decode(data)
        except CodecError as exc:
            self._events.append(FrameIgnored(f"unreadable frame before auth completed: {exc}"))
            return
        if (
            not isinstance(frame, btp.Response | btp.Error)
            or frame.request_id != self._auth_request_id
        ):
            self._events.append(FrameIgnored("frame before auth completed"))
            return
        self._auth_request_id = None
        if isinstance(frame, btp.Error):
            message = frame.data.decode("utf-8", errors="replace")
            self._events.append(AuthRefused(frame.code, message))
            self._close(f"auth refused: {frame.code} {message}")
            return
        self.state = State.OPEN
        assert self.peer_id is not None
        self._events.append(LinkOpened(self.peer_id))

    def _receive_open(self, data: bytes) -> None:
        try:
            frame = btp.decode(data)
        except CodecError as exc:
            self._refuse_unreadable(data, exc)
            return
        match frame:
            case btp.Response(request_id, protocol_data):
                if request_id in self._outgoing:
                    self._outgoing.discard(request_id)
                    self._events.append(ResponseReceived(request_id, protocol_data))
                else:
                    self._events.append(FrameIgnored(f"Response to unknown request {request_id}"))
            case btp.Error(request_id=request_id):
                if request_id in self._outgoing:
                    self._outgoing.discard(request_id)
                    self._events.append(ErrorReceived(request_id, frame))
                else:
                    self._events.append(FrameIgnored(f"Error for unknown request {request_id}"))
            case (
                btp.Message(request_id, protocol_data)
                | btp.Transfer(request_id=request_id, protocol_data=protocol_data)
            ):
                if request_id in self._incoming:
                    # Answering would give the first request two replies; the duplicate
                    # is the sender's protocol error (RFC 0023 "Flow"), so it goes unanswered.
                    self._events.append(FrameIgnored(f"duplicate request id {request_id}"))
                    return
                if protocol_data and protocol_data[0].protocol_name == AUTH:
                    self._queue_error(
                        request_id, BtpErrorCode.F00_NOT_ACCEPTED, "already authenticated"
                    )
                    return
                self._incoming.add(request_id)
                if isinstance(frame, btp.Transfer):
                    self._events.append(TransferReceived(request_id, frame.amount, protocol_data))
                else:
                    self._events.append(MessageReceived(request_id, protocol_data))

    def _refuse_unreadable(self, data: bytes, exc: CodecError) -> None:
        if len(data) >= 5 and data[0] in btp.REQUEST_TYPES:
            request_id = _request_id(data)
            if request_id not in self._incoming:
                self._queue_error(
                    request_id, BtpErrorCode.F01_INVALID_FIELDS, f"unreadable BTP packet: {exc}"
                )
                self._events.append(FrameIgnored(f"unreadable request {request_id}: {exc}"))
                return
        self._events.append(FrameIgnored(f"unreadable frame: {exc}"))

    # --- sending requests ----------------------------------------------------------------

    def send_message(self, protocol_data: Sequence[ProtocolData]) -> int:
        request_id = self._start_request()
        self._frames.append(btp.encode(btp.Message(request_id, tuple(protocol_data))))
        return request_id

    def send_ilp(self, packet: bytes) -> int:
        return self.send_message((ProtocolData(ILP, ContentType.OCTET_STREAM, packet),))

    def send_transfer(self, amount: int, protocol_data: Sequence[ProtocolData]) -> int:
        request_id = self._start_request()
        self._frames.append(btp.encode(btp.Transfer(request_id, amount, tuple(protocol_data))))
        return request_id

    def forget(self, request_id: int) -> None:
        """Stop waiting for a request (timed out); a late answer will be ignored."""
        self._outgoing.discard(request_id)

    def _start_request(self) -> int:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send a request while {self.state.value}")
        request_id = self._allocate_request_id()
        self._outgoing.add(request_id)
        return request_id

    def _allocate_request_id(self) -> int:
        request_id = self._next_id
        # Sequential ids (RFC 0023 allows them); skip any still in flight after a wrap.
        while request_id in self._outgoing:
            request_id = (request_id + 1) & MAX_REQUEST_ID
        self._next_id = (request_id + 1) & MAX_REQUEST_ID
        return request_id

    # --- answering requests --------------------------------------------------------------

    def respond(self, request_id: int, protocol_data: Sequence[ProtocolData]) -> None:
        if self._finish_incoming(request_id):
            self._frames.append(btp.encode(btp.Response(request_id, tuple(protocol_data))))

    def respond_error(
        self,
        request_id: int,
        code: str,
        message: str,
        protocol_data: Sequence[ProtocolData] = (),
    ) -> None:
        if self._finish_incoming(request_id):
            self._queue_error(request_id, code, message, protocol_data)

    def _finish_incoming(self, request_id: int) -> bool:
        """True if the answer should be sent; False when the session is gone."""
        if self.state is State.CLOSED:
            return False  # the peer left while we worked on its request; nobody to answer
        if request_id not in self._incoming:
            raise InvalidState(f"request {request_id} is not waiting for an answer")
        self._incoming.discard(request_id)
        return True

    def _queue_error(
        self,
        request_id: int,
        code: str,
        message: str,
        protocol_data: Sequence[ProtocolData] = (),
    ) -> None:
        error = btp.Error(
            request_id,
            code,
            BTP_ERROR_NAMES.get(code, "Error"),
            btp.format_generalized_time(self._clock()),
            message.encode("utf-8"),
            tuple(protocol_data),
        )
        self._frames.append(btp.encode(error))

    # --- closing -------------------------------------------------------------------------

    def close(self, reason: str = "closed locally") -> None:
        """Local close; queued frames may still be flushed before the socket closes."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_reason = reason
            self._outgoing.clear()
            self._incoming.clear()

    def _close(self, reason: str) -> None:
        self.close(reason)
        self._events.append(SessionClosed(reason))


def _request_id(data: bytes) -> int:
    return int.from_bytes(data[1:5], "big")


def _auth_entries(frame: btp.Frame) -> tuple[bytes, bytes] | None:
    """Raw (username, token) of an auth Message; None when the frame is not an auth Message.

    RFC 0023: a Message whose primary protocol data is `auth`, with an `auth_token` entry;
    `auth_username` may be absent (ilp-plugin-btp sends it empty).
    """
    if not isinstance(frame, btp.Message) or not frame.protocol_data:
        return None
    if frame.protocol_data[0].protocol_name != AUTH:
        return None
    token = btp.find(frame.protocol_data, AUTH_TOKEN)
    if token is None:
        return None
    username = btp.find(frame.protocol_data, AUTH_USERNAME)
    return (username.data if username else b"", token.data)
