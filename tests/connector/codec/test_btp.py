"""BTP packet codec against every BTP vector in ../shared/vectors, plus generated frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.codec import btp
from connector.codec.errors import (
    CodecError,
    InvalidField,
    InvalidVarUInt,
    TrailingBytes,
    Truncated,
    UnknownType,
)

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"


def _load(relative: str) -> dict:
    return json.loads((VECTORS / relative).read_text())


UPSTREAM = _load("btp-packet/btp-packet-vectors.json")["vectors"]
INTERLEDGER_RS = _load("interledger-rs/btp-packets.json")["vectors"]
GENERATED = _load("generated/btp-edge-cases.json")["vectors"]
SESSION = _load("captured/btp-wire-session.json")["frames"]
HANDSHAKES = _load("captured/raw-btp-handshake.json")

TYPE_NAMES = {
    "TYPE_RESPONSE": btp.Response,
    "TYPE_ERROR": btp.Error,
    "TYPE_MESSAGE": btp.Message,
    "TYPE_TRANSFER": btp.Transfer,
}
FRAME_CLASSES = {1: btp.Response, 2: btp.Error, 6: btp.Message, 7: btp.Transfer}


def _entries(recorded: list[dict]) -> tuple[btp.ProtocolData, ...]:
    return tuple(
        btp.ProtocolData(e["protocolName"], e["contentType"], bytes.fromhex(e["dataHex"]))
        for e in recorded
    )


def _expected(fields: dict) -> btp.Frame:
    data = fields["data"]
    if "protocolDataRule" in data:
        assert data["protocolDataRule"].startswith("200 entries, protocolName 'p0'..'p199'")
        protocol_data = tuple(
            btp.ProtocolData(f"p{i}", btp.ContentType.OCTET_STREAM, b"") for i in range(200)
        )
    else:
        protocol_data = _entries(data["protocolData"])
    kind, request_id = fields["type"], fields["requestId"]
    if kind == btp.MessageType.ERROR:
        moment = datetime.fromisoformat(data["triggeredAt"].replace("Z", "+00:00"))
        return btp.Error(
            request_id,
            data["code"],
            data["name"],
            btp.format_generalized_time(moment),
            data["data"].encode(),
            protocol_data,
        )
    if kind == btp.MessageType.TRANSFER:
        return btp.Transfer(request_id, int(data["amount"]), protocol_data)
    return FRAME_CLASSES[kind](request_id, protocol_data)


FILE_VECTORS = [
    *[(f"upstream-{v['name']}", v) for v in UPSTREAM],
    *[(f"rs-{v['name']}", v) for v in INTERLEDGER_RS],
    *[(f"gen-{v['name']}", v) for v in GENERATED],
]


@pytest.mark.parametrize("vector", [v for _, v in FILE_VECTORS], ids=[n for n, _ in FILE_VECTORS])
def test_vector_decodes_to_its_fields_and_round_trips(vector: dict) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = _expected(vector["json"])
    assert btp.decode(data) == expected
    assert btp.encode(expected) == data


@pytest.mark.parametrize(
    "frame", SESSION, ids=[f"wire#{i}-{f['btpType']}" for i, f in enumerate(SESSION)]
)
def test_captured_session_frames_decode_as_recorded(frame: dict) -> None:
    data = bytes.fromhex(frame["hex"])
    decoded = btp.decode(data)
    assert type(decoded) is TYPE_NAMES[frame["btpType"]]
    assert decoded.request_id == frame["requestId"]
    assert decoded.protocol_data == _entries(frame["protocolData"])
    if isinstance(decoded, btp.Error):
        assert (decoded.code, decoded.name) == (frame["code"], frame["name"])
        assert decoded.data == frame["data"].encode()
    assert btp.encode(decoded) == data


HANDSHAKE_FRAMES = [
    (f"handshake{n}#{i}", frame)
    for n, case in enumerate(HANDSHAKES)
    for i, frame in enumerate(case["frames"])
]


@pytest.mark.parametrize(
    "frame", [f for _, f in HANDSHAKE_FRAMES], ids=[n for n, _ in HANDSHAKE_FRAMES]
)
def test_captured_handshake_frames_decode_as_recorded(frame: dict) -> None:
    data = bytes.fromhex(frame["hex"])
    decoded = btp.decode(data)
    if "type" in frame:
        assert type(decoded) is TYPE_NAMES[frame["type"]]
        assert decoded.request_id == frame["requestId"]
    if "error" in frame:
        assert isinstance(decoded, btp.Error)
        assert decoded.code == frame["error"]["code"]
        assert decoded.name == frame["error"]["name"]
        assert decoded.data == frame["error"]["data"].encode()
    assert btp.encode(decoded) == data


def test_find_returns_the_first_entry_with_that_name() -> None:
    frame = btp.decode(bytes.fromhex(UPSTREAM[2]["hex"]))
    assert btp.find(frame.protocol_data, "beep") == btp.ProtocolData(
        "beep", btp.ContentType.TEXT_PLAIN_UTF8, b"boop"
    )
    assert btp.find(frame.protocol_data, "missing") is None


def test_generalized_time_is_written_like_the_reference() -> None:
    moment = datetime(2017, 8, 28, 20, 32, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    assert btp.format_generalized_time(moment) == "20170828183200.000Z"
    assert btp.format_generalized_time(datetime(2018, 8, 31, 2, 53, 24, 899000, tzinfo=UTC)) == (
        "20180831025324.899Z"
    )


# --- failures ------------------------------------------------------------------------

MESSAGE = bytes.fromhex(UPSTREAM[2]["hex"])


def test_bytes_after_the_envelope_are_refused() -> None:
    with pytest.raises(TrailingBytes):
        btp.decode(MESSAGE + b"\x00")


def test_bytes_after_the_protocol_data_inside_the_envelope_are_ignored() -> None:
    empty = bytes.fromhex("06ffffffff020100")
    extended = bytes.fromhex("06ffffffff040100abcd")
    assert btp.decode(extended) == btp.decode(empty)


@pytest.mark.parametrize("cut", range(1, len(MESSAGE)))
def test_every_truncation_is_refused(cut: int) -> None:
    with pytest.raises(Truncated):
        btp.decode(MESSAGE[:cut])


@pytest.mark.parametrize("kind", [0, 3, 4, 5, 8, 255])
def test_types_other_than_1_2_6_7_are_unknown(kind: int) -> None:
    with pytest.raises(UnknownType):
        btp.decode(bytes((kind,)) + bytes.fromhex("00000001020100"))


def test_zero_length_protocol_data_count_is_refused() -> None:
    with pytest.raises(InvalidVarUInt):
        btp.decode(bytes.fromhex("060000000101" + "00"))


def test_non_ascii_protocol_name_is_refused() -> None:
    with pytest.raises(InvalidField):
        btp.decode(bytes.fromhex("0600000001060101" + "01ff" + "0000"))


def test_unknown_content_types_are_kept_as_numbers() -> None:
    frame = btp.Message(5, (btp.ProtocolData("x", 9, b"\x01"),))
    decoded = btp.decode(btp.encode(frame))
    assert decoded == frame
    assert decoded.protocol_data[0].content_type == 9


@pytest.mark.parametrize(
    "frame",
    [
        btp.Message(2**32, ()),
        btp.Message(-1, ()),
        btp.Transfer(1, 2**64, ()),
        btp.Error(1, "F0", "x", "20170828183200.000Z", b"", ()),
        btp.Message(1, (btp.ProtocolData("é", btp.ContentType.OCTET_STREAM, b""),)),
        btp.Message(1, (btp.ProtocolData("x", 256, b""),)),
    ],
)
def test_encoding_out_of_range_values_raises(frame: btp.Frame) -> None:
    with pytest.raises(InvalidField):
        btp.encode(frame)


# --- generated frames and random bytes -------------------------------------------------

ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30)
ENTRIES = st.lists(
    st.builds(
        btp.ProtocolData,
        protocol_name=ASCII,
        content_type=st.sampled_from(list(btp.ContentType)) | st.integers(0, 255),
        data=st.binary(max_size=200),
    ),
    max_size=5,
).map(tuple)
REQUEST_IDS = st.integers(min_value=0, max_value=2**32 - 1)
FRAMES = (
    st.builds(btp.Message, REQUEST_IDS, ENTRIES)
    | st.builds(btp.Response, REQUEST_IDS, ENTRIES)
    | st.builds(btp.Transfer, REQUEST_IDS, st.integers(0, 2**64 - 1), ENTRIES)
    | st.builds(
        btp.Error,
        REQUEST_IDS,
        st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=3, max_size=3),
        ASCII,
        ASCII,
        st.binary(max_size=100),
        ENTRIES,
    )
)


@given(FRAMES)
def test_generated_frames_round_trip(frame: btp.Frame) -> None:
    encoded = btp.encode(frame)
    assert btp.decode(encoded) == frame


def _decodes_consistently(data: bytes) -> None:
    try:
        frame = btp.decode(data)
    except CodecError:
        return
    assert btp.decode(btp.encode(frame)) == frame


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    _decodes_consistently(data)


@given(
    st.sampled_from([bytes.fromhex(v["hex"]) for _, v in FILE_VECTORS]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0, max_value=3),
)
def test_mutated_vectors_raise_only_codec_errors(
    data: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    _decodes_consistently(bytes(mutated[: len(mutated) - cut]))
