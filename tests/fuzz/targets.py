"""Fuzz targets: one function per decoder that takes raw bytes and checks the decoder's contract.

A target returns normally for every input the code under test handles as documented, and
raises (an `AssertionError`, or whatever the decoder let escape) only when it did not:

- `oer`: the three readers raise only `CodecError`; what they accept is canonical, so
  re-encoding the value gives back exactly the bytes read.
- `ilp`: `ilp.decode` raises only `CodecError`; an accepted packet re-encodes to bytes that
  decode to the same packet and are no longer than the input (extension bytes inside the
  envelope are dropped); `decode_prepare` / `decode_fulfill_or_reject` agree with `decode`;
  the forwarding patch with the packet's own amount and expiry is the identity, and with
  other values changes nothing else.
- `btp`: the same for BTP frames, and every `ilp` entry they carry goes through `ilp`.
- `btp_session`: `BtpProtocol` fed a sequence of websocket messages (split from the input)
  never raises; server role before auth opens only on a valid auth Message and otherwise
  closes; after auth it never closes, sends only Responses/Errors to requests it received or
  Errors to unreadable requests, reports answers only to requests it sent, once each, and
  still delivers a well-formed ILP Message at the end. Client role likewise.
- `claim`: `Claim.from_json` / `ClaimAck.from_json` raise only `InvalidClaim`; an accepted
  claim round-trips through its JSON, and the receiver's `check_claim` answers with a refusal
  or None, never an exception.

Shared by the hypothesis tests in this package and the atheris harness `bench/fuzz.py`.
`SEEDS` holds valid inputs of each target (the atheris seed corpus; hypothesis mutates them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from activities.balance_proof import ZERO_BYTES32
from connector.btp.protocol import (
    AuthRefused,
    BtpProtocol,
    ErrorReceived,
    FrameIgnored,
    LinkOpened,
    MessageReceived,
    ResponseReceived,
    SessionClosed,
    State,
    TransferReceived,
)
from connector.btp.server import BtpServer
from connector.claims import (
    Claim,
    ClaimAck,
    ClaimDomain,
    ClaimSigner,
    InvalidClaim,
    Refusal,
    check_claim,
)
from connector.codec import btp, ilp, oer
from connector.codec.btp import ContentType, ProtocolData
from connector.codec.errors import CodecError, UnknownType

Target = Callable[[bytes], None]

PEER = "alice"
PEER_TOKEN = "alice-token"
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
LATER = datetime(2031, 6, 7, 8, 9, 10, 111000, tzinfo=UTC)
CLOCK_AT = datetime(2026, 11, 24, tzinfo=UTC)

CLAIM_DOMAIN = ClaimDomain(31337, "0x" + "ab" * 20)


# A throwaway key for signing seed claims (not any node's key).
_SEED_KEY = bytes([7]) * 32


def _signer_address() -> str:
    import coincurve
    from eth_utils import keccak, to_checksum_address

    public = coincurve.PrivateKey(_SEED_KEY).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak(public)[-20:])


CLAIM_SIGNER_ADDRESS = _signer_address()
_SIGNER = ClaimSigner(_SEED_KEY, CLAIM_SIGNER_ADDRESS)


def _refuses(decoder: Callable[[bytes], object], data: bytes) -> None:
    try:
        decoder(data)
    except CodecError:
        return
    raise AssertionError(f"{decoder.__name__} accepted what ilp.decode refused")


# --- oer ---------------------------------------------------------------------------------


def oer_target(data: bytes) -> None:
    """First byte: the position to read at (0-7); the rest: the buffer."""
    if not data:
        return
    pos, buf = data[0] % 8, data[1:]
    readers: tuple[tuple[Callable, Callable], ...] = (
        (oer.read_length_prefix, oer.encode_length_prefix),
        (oer.read_var_uint, oer.encode_var_uint),
        (oer.read_var_octets, oer.encode_var_octets),
    )
    for read, write in readers:
        try:
            value, end = read(buf, pos)
        except CodecError:
            continue
        assert pos < end <= len(buf), (read.__name__, pos, end)
        assert write(value) == buf[pos:end], f"{read.__name__} accepted a non-canonical form"


# --- ilp ---------------------------------------------------------------------------------


def ilp_target(data: bytes) -> None:
    try:
        packet = ilp.decode(data)
    except CodecError:
        _refuses(ilp.decode_prepare, data)
        _refuses(ilp.decode_fulfill_or_reject, data)
        return
    encoded = ilp.encode(packet)
    assert ilp.decode(encoded) == packet
    assert len(encoded) <= len(data)
    if type(packet) is ilp.Prepare:
        assert ilp.decode_prepare(data) == packet
        _refuses(ilp.decode_fulfill_or_reject, data)
        assert ilp.encode_prepare_forward(data, packet.amount, packet.expires_at) == data
        amount = (packet.amount * 31 + 7) % (ilp.MAX_AMOUNT + 1)
        forwarded = ilp.decode_prepare(ilp.encode_prepare_forward(data, amount, LATER))
        assert forwarded == ilp.Prepare(
            amount, LATER, packet.execution_condition, packet.destination, packet.data
        )
    else:
        assert ilp.decode_fulfill_or_reject(data) == packet
        try:
            ilp.decode_prepare(data)
        except UnknownType:
            pass
        else:
            raise AssertionError("decode_prepare accepted a Fulfill/Reject")
        if type(packet) is ilp.Reject:
            ilp.error_class(packet.code)
            if packet.code == "F08":
                try:
                    ilp.decode_f08_data(packet.data)
                except CodecError:
                    pass


# --- btp ---------------------------------------------------------------------------------


def btp_target(data: bytes) -> None:
    try:
        frame = btp.decode(data)
    except CodecError:
        return
    encoded = btp.encode(frame)
    assert btp.decode(encoded) == frame
    assert len(encoded) <= len(data)
    assert encoded[:5] == data[:5]  # type and request id survive as received
    for entry in frame.protocol_data:
        if entry.protocol_name == "ilp":
            ilp_target(entry.data)


# --- btp session ---------------------------------------------------------------------------


def split_messages(data: bytes) -> list[bytes]:
    """Websocket messages from one input: each is a 2-byte big-endian length, then that many
    bytes (the last one takes what is left)."""
    messages = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 2], "big")
        messages.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return messages


def join_messages(messages: list[bytes]) -> bytes:
    return b"".join(len(message).to_bytes(2, "big") + message for message in messages)


_AUTHENTICATOR = BtpServer("127.0.0.1", 0, {PEER: PEER_TOKEN, "bob": "bob-token"}, handler=None)  # type: ignore[arg-type]


def _clock() -> datetime:
    return CLOCK_AT


def is_valid_auth(message: bytes) -> bool:
    """Independent oracle: does this first message authenticate as a configured peer?"""
    try:
        frame = btp.decode(message)
    except CodecError:
        return False
    if not isinstance(frame, btp.Message) or not frame.protocol_data:
        return False
    if frame.protocol_data[0].protocol_name != "auth":
        return False
    token = btp.find(frame.protocol_data, "auth_token")
    username = btp.find(frame.protocol_data, "auth_username")
    if token is None:
        return False
    name = username.data if username is not None else b""
    tokens = {b"alice": b"alice-token", b"bob": b"bob-token"}
    if name:
        return tokens.get(name) == token.data
    return list(tokens.values()).count(token.data) == 1


def _answer(protocol: BtpProtocol, request_ids: set[int], answered: set[int]) -> None:
    """Play the application: one answer per delivered request, as BtpLink gives."""
    for request_id in sorted(request_ids):
        protocol.respond(request_id, ())
        answered.add(request_id)


def _check_open_session(
    protocol: BtpProtocol, messages: list[bytes], ours: set[int], *, closes_allowed: bool
) -> None:
    """Feed messages to an OPEN session; check events and frames; end with a good request.

    Requests are answered one message late, so a request id reused while its first request
    is still unanswered is exercised too (it must not be delivered again)."""
    pending: set[int] = set()  # delivered, not answered yet
    answered: set[int] = set()
    settled: set[int] = set()
    for message in messages:
        protocol.receive_message(message)
        delivered: set[int] = set()
        for event in protocol.events_received():
            if isinstance(event, MessageReceived | TransferReceived):
                assert event.request_id not in pending, "request id delivered while unanswered"
                delivered.add(event.request_id)
            elif isinstance(event, ResponseReceived | ErrorReceived):
                assert event.request_id in ours, "answer reported for a request we never sent"
                assert event.request_id not in settled, "one request answered twice"
                settled.add(event.request_id)
            elif isinstance(event, LinkOpened | AuthRefused):
                raise AssertionError(f"{type(event).__name__} on an open session")
            elif isinstance(event, SessionClosed) and not closes_allowed:
                raise AssertionError(f"session closed after auth: {event.reason}")
        _answer(protocol, pending, answered)
        pending = delivered
        for frame in protocol.data_to_send():
            reply = btp.decode(frame)
            assert isinstance(reply, btp.Response | btp.Error), "unprompted request sent"
            if isinstance(reply, btp.Response):
                assert reply.request_id in answered, "Response to a request never delivered"
        if protocol.state is not State.OPEN:
            assert closes_allowed
            return
    _answer(protocol, pending, answered)
    protocol.data_to_send()
    # Still usable: a well-formed ILP Message is delivered (every request so far is answered,
    # so any id is free again).
    prepare = ilp.encode(ilp.Prepare(1, EXPIRES, bytes(32), "test.bob", b""))
    entry = ProtocolData("ilp", ContentType.OCTET_STREAM, prepare)
    protocol.receive_message(btp.encode(btp.Message(4242, (entry,))))
    assert protocol.events_received() == [MessageReceived(4242, (entry,))]


def btp_session_target(data: bytes) -> None:
    """First byte: role/phase (0: server before auth, 1: server after auth, 2: client);
    the rest: websocket messages (`split_messages`)."""
    if not data:
        return
    mode, messages = data[0] % 3, split_messages(data[1:])
    if mode == 0:
        server = BtpProtocol.server(_AUTHENTICATOR.authenticate, clock=_clock)
        if not messages:
            return
        first, rest = messages[0], messages[1:]
        server.receive_message(first)
        events = server.events_received()
        frames = [btp.decode(frame) for frame in server.data_to_send()]
        if is_valid_auth(first):
            assert server.state is State.OPEN
            assert len(events) == 1 and isinstance(events[0], LinkOpened)
            assert [type(f) for f in frames] == [btp.Response]
            _check_open_session(server, rest, set(), closes_allowed=False)
        else:
            assert server.state is State.CLOSED
            assert [type(e) for e in events] == [SessionClosed]
            assert all(isinstance(f, btp.Error) and f.code == "F00" for f in frames)
            assert len(frames) <= 1
            for message in rest:
                server.receive_message(message)
                assert server.data_to_send() == []
    elif mode == 1:
        server = BtpProtocol.server(_AUTHENTICATOR.authenticate, clock=_clock)
        server.receive_message(
            btp.encode(
                btp.Message(
                    1,
                    (
                        ProtocolData("auth", ContentType.OCTET_STREAM, b""),
                        ProtocolData("auth_username", ContentType.TEXT_PLAIN_UTF8, b"alice"),
                        ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, b"alice-token"),
                    ),
                )
            )
        )
        assert server.state is State.OPEN
        server.events_received()
        server.data_to_send()
        # Three requests of ours in flight, so answers to them (and to others) are exercised.
        ours = {server.send_ilp(b"\x0c\x00") for _ in range(3)}
        server.data_to_send()
        _check_open_session(server, messages, ours, closes_allowed=False)
    else:
        client = BtpProtocol.client(PEER, PEER, PEER_TOKEN, clock=_clock, first_request_id=1)
        (auth,) = client.data_to_send()
        assert is_valid_auth(auth)
        for index, message in enumerate(messages):
            client.receive_message(message)
            events = client.events_received()
            for frame in client.data_to_send():
                assert isinstance(btp.decode(frame), btp.Response | btp.Error)
            if client.state is State.OPEN:
                assert [type(e) for e in events] == [LinkOpened]
                _check_open_session(client, messages[index + 1 :], set(), closes_allowed=False)
                return
            if client.state is State.CLOSED:
                assert [type(e) for e in events] == [AuthRefused, SessionClosed]
                return
            assert all(isinstance(e, FrameIgnored) for e in events)


# --- claims --------------------------------------------------------------------------------


def claim_target(data: bytes) -> None:
    try:
        claim = Claim.from_json(data)
    except InvalidClaim:
        pass
    else:
        assert Claim.from_json(claim.to_json()) == claim
        for last in (None, claim):
            verdict = check_claim(
                claim, domain=CLAIM_DOMAIN, partner=CLAIM_SIGNER_ADDRESS, last=last
            )
            assert verdict is None or isinstance(verdict, Refusal)
            if last is claim:
                assert verdict is not None, "the same claim accepted twice"
    try:
        ack = ClaimAck.from_json(data)
    except InvalidClaim:
        pass
    else:
        assert ClaimAck.from_json(ack.to_json()) == ack


# --- seeds ---------------------------------------------------------------------------------


def _ilp_seeds() -> list[bytes]:
    return [
        ilp.encode(ilp.Prepare(1000, EXPIRES, bytes(range(32)), "test.bob", b"ping")),
        ilp.encode(ilp.Prepare(2**64 - 1, EXPIRES, bytes(32), "g.example.~stream.x", bytes(300))),
        ilp.encode(ilp.Fulfill(bytes(range(32)), b"hello")),
        ilp.encode(ilp.Reject("F02", "g.conn", "no route", b"")),
        ilp.encode(ilp.Reject("F08", "g.conn", "too much", ilp.f08_data(100, 10))),
    ]


def _btp_seeds() -> list[bytes]:
    ilp_entries = [(ProtocolData("ilp", ContentType.OCTET_STREAM, p),) for p in _ilp_seeds()]
    claim = ProtocolData("payment-channel-claim", ContentType.APPLICATION_JSON, _claim_seed())
    return [
        btp.encode(btp.Message(233823305, ilp_entries[0])),
        btp.encode(btp.Response(233823305, ilp_entries[2])),
        btp.encode(btp.Response(7, ilp_entries[3])),
        btp.encode(btp.Message(2, (claim,))),
        btp.encode(btp.Transfer(3, 1000, (claim,))),
        btp.encode(btp.Error(4, "F00", "NotAcceptedError", "20261124000000.000Z", b"invalid", ())),
    ]


def auth_frame(username: bytes, token: bytes, request_id: int = 1) -> bytes:
    return btp.encode(
        btp.Message(
            request_id,
            (
                ProtocolData("auth", ContentType.OCTET_STREAM, b""),
                ProtocolData("auth_username", ContentType.TEXT_PLAIN_UTF8, username),
                ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, token),
            ),
        )
    )


def _session_seeds() -> list[bytes]:
    frames = _btp_seeds()
    # Answers to our own in-flight requests (ids 1-3 in mode 1; the auth, id 1, in mode 2).
    answers = [btp.encode(btp.Response(1, ())), btp.encode(btp.Error(2, "F00", "E", "", b"", ()))]
    return [
        bytes([0]) + join_messages([auth_frame(b"alice", b"alice-token"), *frames]),
        bytes([0]) + join_messages([auth_frame(b"", b"bob-token", 9), frames[0]]),
        bytes([0]) + join_messages([auth_frame(b"alice", b"wrong"), frames[0]]),
        bytes([1]) + join_messages(frames + answers),
        bytes([2]) + join_messages([frames[0], answers[0], *frames]),
    ]


def _claim_seed() -> bytes:
    return _SIGNER.sign(CLAIM_DOMAIN, "0x" + "12" * 32, 3, 3_000_000).to_json()


def _claim_seeds() -> list[bytes]:
    signed = json.loads(_claim_seed())
    unsigned = {**signed, "lockedAmount": 5, "locksRoot": ZERO_BYTES32, "nonce": 4}
    ack = {"accepted": True, "channelId": signed["channelId"], "nonce": "3"}
    return [_claim_seed(), json.dumps(unsigned).encode(), json.dumps(ack).encode()]


def _oer_seeds() -> list[bytes]:
    return [
        bytes([0]) + oer.encode_var_octets(bytes(200)),
        bytes([0]) + oer.encode_var_uint(2**63 + 5),
        bytes([2]) + b"\x00\x00" + oer.encode_length_prefix(70000),
    ]


TARGETS: dict[str, Target] = {
    "oer": oer_target,
    "ilp": ilp_target,
    "btp": btp_target,
    "btp_session": btp_session_target,
    "claim": claim_target,
}


def seeds() -> dict[str, list[bytes]]:
    return {
        "oer": _oer_seeds(),
        "ilp": _ilp_seeds(),
        "btp": _btp_seeds(),
        "btp_session": _session_seeds(),
        "claim": _claim_seeds(),
    }
