"""Sans-I/O BTP session: bytes in, events and frames out (no event loop, no sockets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.btp.errors import InvalidState
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
from connector.codec import btp
from connector.codec.btp import ContentType, ProtocolData

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
HANDSHAKES = json.loads((VECTORS / "captured" / "raw-btp-handshake.json").read_text())
GOOD, WRONG_TOKEN, ILP_FIRST = HANDSHAKES


def _clock_at(iso: str):
    moment = datetime.fromisoformat(iso)
    return lambda: moment


def _frames(case: dict, direction: str) -> list[bytes]:
    return [bytes.fromhex(f["hex"]) for f in case["frames"] if f["dir"] == direction]


def _authenticate(username: str, token: str) -> str | None:
    return "upstream" if token == "up_secret" else None


def _open_server() -> BtpProtocol:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T03:02:36.183+00:00"))
    server.receive_message(_frames(GOOD, "out")[0])
    server.data_to_send()
    server.events_received()
    return server


def _open_client() -> BtpProtocol:
    client = BtpProtocol.client(
        "downstream", "", "up_secret", clock=_clock_at("2026-11-24T03:02:36+00:00")
    )
    client.data_to_send()
    client.receive_message(bytes.fromhex("0100000001020100"))
    client.events_received()
    return client


def _ilp(data: bytes) -> tuple[ProtocolData, ...]:
    return (ProtocolData("ilp", ContentType.OCTET_STREAM, data),)


# --- server role, against the captured ilp-connector handshakes -------------------------


def test_server_accepts_good_auth_and_answers_like_ilp_connector() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T03:02:36+00:00"))
    auth, prepare = _frames(GOOD, "out")
    auth_reply, prepare_reply = _frames(GOOD, "in")

    server.receive_message(auth)
    assert server.data_to_send() == [auth_reply]
    assert server.events_received() == [LinkOpened("upstream")]
    assert server.state is State.OPEN and server.peer_id == "upstream"

    server.receive_message(prepare)
    (event,) = server.events_received()
    assert isinstance(event, MessageReceived) and event.request_id == 2
    ilp_entry = btp.find(event.protocol_data, "ilp")
    assert ilp_entry is not None and ilp_entry.data[0] == 12
    expected_reply = btp.decode(prepare_reply)
    server.respond(2, expected_reply.protocol_data)
    assert server.data_to_send() == [prepare_reply]


def test_server_refuses_a_wrong_token_with_the_captured_error_then_closes() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T03:02:36.183+00:00"))
    server.receive_message(_frames(WRONG_TOKEN, "out")[0])
    assert server.data_to_send() == _frames(WRONG_TOKEN, "in")
    assert server.events_received() == [SessionClosed("auth refused for username ''")]
    assert server.state is State.CLOSED


def test_server_refuses_ilp_before_auth_with_the_captured_error_then_closes() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T03:02:36.188+00:00"))
    server.receive_message(_frames(ILP_FIRST, "out")[0])
    assert server.data_to_send() == _frames(ILP_FIRST, "in")
    assert [type(e) for e in server.events_received()] == [SessionClosed]
    assert server.state is State.CLOSED


def test_authenticate_gets_username_and_token() -> None:
    seen: list[tuple[str, str]] = []

    def authenticate(username: str, token: str) -> str | None:
        seen.append((username, token))
        return username

    server = BtpProtocol.server(authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    auth = btp.Message(
        7,
        (
            ProtocolData("auth", ContentType.OCTET_STREAM, b""),
            ProtocolData("auth_username", ContentType.TEXT_PLAIN_UTF8, b"peer3"),
            ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, b"s3cret"),
        ),
    )
    server.receive_message(btp.encode(auth))
    assert seen == [("peer3", "s3cret")]
    assert server.events_received() == [LinkOpened("peer3")]


@pytest.mark.parametrize(
    "first",
    [
        btp.Transfer(1, 5, ()),
        btp.Response(1, ()),
        btp.Message(1, ()),
        btp.Message(1, (ProtocolData("auth", ContentType.OCTET_STREAM, b""),)),
        btp.Message(
            1,
            (
                ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, b"up_secret"),
                ProtocolData("auth", ContentType.OCTET_STREAM, b""),
            ),
        ),
    ],
    ids=["transfer", "response", "empty-message", "no-token", "auth-not-primary"],
)
def test_anything_but_an_auth_message_first_gets_f00_then_close(first: btp.Frame) -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    server.receive_message(btp.encode(first))
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert isinstance(reply, btp.Error)
    assert (reply.request_id, reply.code, reply.name) == (1, "F00", "NotAcceptedError")
    assert server.state is State.CLOSED


def test_non_utf8_token_is_refused() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    auth = btp.Message(
        3,
        (
            ProtocolData("auth", ContentType.OCTET_STREAM, b""),
            ProtocolData("auth_token", ContentType.TEXT_PLAIN_UTF8, b"\xff\xfe"),
        ),
    )
    server.receive_message(btp.encode(auth))
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert isinstance(reply, btp.Error) and reply.data == b"invalid auth_token"
    assert server.state is State.CLOSED


def test_garbage_before_auth_with_a_readable_request_id_gets_f00_then_close() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    server.receive_message(bytes.fromhex("0600000009ff"))
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert isinstance(reply, btp.Error) and (reply.request_id, reply.code) == (9, "F00")
    assert server.state is State.CLOSED


def test_garbage_before_auth_too_short_for_a_request_id_just_closes() -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    server.receive_message(b"\x06\x00")
    assert server.data_to_send() == []
    assert [type(e) for e in server.events_received()] == [SessionClosed]
    assert server.state is State.CLOSED


# --- client role ------------------------------------------------------------------------


def test_client_sends_auth_exactly_as_ilp_plugin_btp_then_the_captured_prepare() -> None:
    client = BtpProtocol.client(
        "conn", "", "up_secret", clock=_clock_at("2026-11-24T00:00:00+00:00")
    )
    auth, prepare = _frames(GOOD, "out")
    auth_reply, prepare_reply = _frames(GOOD, "in")
    assert client.data_to_send() == [auth]
    assert client.state is State.AWAITING_AUTH

    client.receive_message(auth_reply)
    assert client.events_received() == [LinkOpened("conn")]
    assert client.state is State.OPEN

    packet = btp.find(btp.decode(prepare).protocol_data, "ilp").data
    request_id = client.send_ilp(packet)
    assert request_id == 2
    assert client.data_to_send() == [prepare]

    client.receive_message(prepare_reply)
    assert client.events_received() == [
        ResponseReceived(2, btp.decode(prepare_reply).protocol_data)
    ]
    assert client.requests_in_flight == 0


def test_client_closes_when_the_server_refuses_auth() -> None:
    client = BtpProtocol.client(
        "conn", "", "wrong_token", clock=_clock_at("2026-11-24T00:00:00+00:00")
    )
    client.data_to_send()
    client.receive_message(_frames(WRONG_TOKEN, "in")[0])
    events = client.events_received()
    assert events[0] == AuthRefused("F00", "invalid auth_token")
    assert isinstance(events[1], SessionClosed)
    assert client.state is State.CLOSED


def test_client_ignores_frames_before_its_auth_is_answered() -> None:
    client = BtpProtocol.client("conn", "", "x", clock=_clock_at("2026-11-24T00:00:00+00:00"))
    client.data_to_send()
    client.receive_message(btp.encode(btp.Response(99, ())))
    client.receive_message(b"\x00garbage")
    assert [type(e) for e in client.events_received()] == [FrameIgnored, FrameIgnored]
    assert client.data_to_send() == []
    assert client.state is State.AWAITING_AUTH


def test_sending_before_the_link_is_open_is_a_misuse() -> None:
    client = BtpProtocol.client("conn", "", "x", clock=_clock_at("2026-11-24T00:00:00+00:00"))
    with pytest.raises(InvalidState):
        client.send_ilp(b"\x0c\x00")


# --- correlation ------------------------------------------------------------------------


def test_each_response_is_matched_to_its_request_whatever_the_order() -> None:
    client = _open_client()
    ids = [client.send_ilp(bytes([i])) for i in range(50)]
    assert len(set(ids)) == 50
    assert len(client.data_to_send()) == 50
    for request_id in reversed(ids):
        client.receive_message(
            btp.encode(btp.Response(request_id, _ilp(bytes([request_id % 256]))))
        )
    events = client.events_received()
    assert [e.request_id for e in events] == list(reversed(ids))
    assert all(isinstance(e, ResponseReceived) for e in events)
    assert client.requests_in_flight == 0


def test_an_error_answers_a_request() -> None:
    client = _open_client()
    request_id = client.send_message((ProtocolData("foo", ContentType.APPLICATION_JSON, b"{}"),))
    error = btp.Error(request_id, "F00", "NotAcceptedError", "20260101000000.000Z", b"no", ())
    client.receive_message(btp.encode(error))
    assert client.events_received() == [ErrorReceived(request_id, error)]


def test_unexpected_and_repeated_responses_are_ignored_without_reply() -> None:
    client = _open_client()
    request_id = client.send_ilp(b"\x0c\x00")
    client.data_to_send()
    reply = btp.encode(btp.Response(request_id, ()))
    client.receive_message(reply)
    client.receive_message(reply)
    client.receive_message(btp.encode(btp.Response(4242, ())))
    events = client.events_received()
    assert isinstance(events[0], ResponseReceived)
    assert [type(e) for e in events[1:]] == [FrameIgnored, FrameIgnored]
    assert client.data_to_send() == []


def test_a_forgotten_request_ignores_its_late_answer() -> None:
    client = _open_client()
    request_id = client.send_ilp(b"\x0c\x00")
    client.forget(request_id)
    client.receive_message(btp.encode(btp.Response(request_id, ())))
    assert [type(e) for e in client.events_received()] == [FrameIgnored]


def test_request_ids_wrap_and_skip_ids_still_in_flight() -> None:
    client = BtpProtocol.client(
        "conn", "", "x", clock=_clock_at("2026-11-24T00:00:00+00:00"), first_request_id=2**32 - 2
    )
    client.data_to_send()
    client.receive_message(btp.encode(btp.Response(2**32 - 2, ())))
    assert client.send_ilp(b"a") == 2**32 - 1
    assert client.send_ilp(b"b") == 0
    # Wrapping all the way round takes 2**32 requests; set the counter there instead.
    client._next_id = 2**32 - 1
    assert client.send_ilp(b"c") == 1


# --- answering requests -----------------------------------------------------------------


def test_every_request_gets_exactly_one_answer() -> None:
    server = _open_server()
    server.receive_message(btp.encode(btp.Message(10, _ilp(b"\x0c\x00"))))
    server.receive_message(btp.encode(btp.Transfer(11, 500, ())))
    assert server.events_received() == [
        MessageReceived(10, _ilp(b"\x0c\x00")),
        TransferReceived(11, 500, ()),
    ]
    server.respond(10, _ilp(b"\x0d"))
    server.respond_error(11, "F00", "no transfers")
    with pytest.raises(InvalidState):
        server.respond(10, ())
    with pytest.raises(InvalidState):
        server.respond_error(12, "F00", "never asked")
    replies = [btp.decode(frame) for frame in server.data_to_send()]
    assert replies[0] == btp.Response(10, _ilp(b"\x0d"))
    assert isinstance(replies[1], btp.Error)
    assert (replies[1].request_id, replies[1].code, replies[1].data) == (11, "F00", b"no transfers")


def test_a_duplicate_request_id_in_flight_is_not_answered_twice() -> None:
    server = _open_server()
    server.receive_message(btp.encode(btp.Message(10, _ilp(b"a"))))
    server.receive_message(btp.encode(btp.Message(10, _ilp(b"b"))))
    events = server.events_received()
    assert [type(e) for e in events] == [MessageReceived, FrameIgnored]
    server.respond(10, ())
    assert len(server.data_to_send()) == 1


def test_a_second_auth_after_open_is_refused_and_the_link_stays_open() -> None:
    server = _open_server()
    server.receive_message(_frames(GOOD, "out")[0])
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert isinstance(reply, btp.Error) and reply.code == "F00"
    assert server.state is State.OPEN


def test_answers_after_the_session_closed_are_dropped() -> None:
    server = _open_server()
    server.receive_message(btp.encode(btp.Message(10, _ilp(b"a"))))
    server.close("peer went away")
    server.respond(10, _ilp(b"late"))
    assert server.data_to_send() == []
    server.receive_message(btp.encode(btp.Message(11, ())))
    assert [type(e) for e in server.events_received()] == [MessageReceived, FrameIgnored]


# --- garbage after auth -----------------------------------------------------------------


def test_an_unreadable_request_gets_f01_and_the_link_stays_open() -> None:
    server = _open_server()
    server.receive_message(bytes.fromhex("060000002a05ffffff"))
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert isinstance(reply, btp.Error)
    assert (reply.request_id, reply.code, reply.name) == (42, "F01", "InvalidFieldsError")
    assert server.state is State.OPEN
    server.receive_message(btp.encode(btp.Message(43, _ilp(b"x"))))
    assert isinstance(server.events_received()[-1], MessageReceived)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x01",
        b"\x01\x00\x00\x00\x01\xff",
        b"\x02\x00\x00\x00\x01\x00",
        b"\x09" * 40,
        b"hello",
    ],
)
def test_unreadable_responses_and_short_frames_are_ignored_silently(garbage: bytes) -> None:
    server = _open_server()
    server.receive_message(garbage)
    assert server.data_to_send() == []
    assert [type(e) for e in server.events_received()] == [FrameIgnored]
    assert server.state is State.OPEN


@given(st.lists(st.binary(max_size=80), max_size=20))
def test_any_bytes_after_auth_never_raise_and_only_answers_go_out(messages: list[bytes]) -> None:
    server = _open_server()
    for message in messages:
        server.receive_message(message)
    for frame in server.data_to_send():
        assert isinstance(btp.decode(frame), btp.Response | btp.Error)
    assert server.state is State.OPEN


@given(st.lists(st.binary(max_size=80), min_size=1, max_size=5))
def test_any_bytes_before_auth_never_raise(messages: list[bytes]) -> None:
    server = BtpProtocol.server(_authenticate, clock=_clock_at("2026-11-24T00:00:00+00:00"))
    for message in messages:
        server.receive_message(message)
    for frame in server.data_to_send():
        assert isinstance(btp.decode(frame), btp.Error)
    assert server.state is State.CLOSED


def test_clock_sets_triggered_at() -> None:
    server = BtpProtocol.server(
        _authenticate, clock=lambda: datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    )
    server.receive_message(btp.encode(btp.Transfer(1, 1, ())))
    (reply,) = [btp.decode(frame) for frame in server.data_to_send()]
    assert reply.triggered_at == "20300102030405.006Z"
