"""ILP packet codec against every ILP vector in ../shared/vectors, plus generated packets."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.codec import btp, ilp
from connector.codec.address import is_valid_address
from connector.codec.errors import (
    CodecError,
    InvalidAddress,
    InvalidField,
    InvalidTimestamp,
    TrailingBytes,
    Truncated,
    UnknownType,
)

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"


def _load(relative: str) -> dict:
    return json.loads((VECTORS / relative).read_text())


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the vector files -------------------------------------------------------------------

UPSTREAM = sorted((VECTORS / "ilp-packet").glob("ilp_*/valid/*.json"))
INTERLEDGER_RS = _load("interledger-rs/ilp-packets.json")["vectors"]
GENERATED = _load("generated/ilp-edge-cases.json")
CAPTURED_SESSION = _load("captured/btp-wire-session.json")
CCP_ILDCP = _load("captured/ccp-ildcp-session.json")
HANDSHAKES = _load("captured/raw-btp-handshake.json")
INVALID = _load("ilp-packet/invalid-packets.json")["vectors"]
F08 = _load("ilp-packet/ilp-error-data-f08.json")

# Each vector file and the test module that reads it; a new file fails the inventory test.
VECTOR_FILES = {
    "README.md": None,
    "btp-packet/btp-packet-vectors.json": "test_btp.py",
    "captured/btp-wire-session.json": "test_btp.py, test_ilp.py",
    "captured/ccp-ildcp-session.json": "test_ilp.py",
    "captured/raw-btp-handshake.json": "test_btp.py, test_ilp.py, btp/test_protocol.py",
    "generated/btp-edge-cases.json": "test_btp.py",
    "generated/ilp-edge-cases.json": "test_ilp.py",
    "generated/oer-edge-cases.json": "test_oer.py",
    "ilp-packet/ilp-address-validity.json": "test_address.py",
    "ilp-packet/ilp-error-data-f08.json": "test_ilp.py",
    "ilp-packet/ilp_fulfill/valid/example01.json": "test_ilp.py",
    "ilp-packet/ilp_prepare/valid/example01.json": "test_ilp.py",
    "ilp-packet/ilp_reject/valid/example01.json": "test_ilp.py",
    "ilp-packet/invalid-packets.json": "test_ilp.py",
    "interledger-rs/btp-packets.json": "test_btp.py",
    "interledger-rs/ilp-packets.json": "test_ilp.py",
    "oer-utils/oer-vectors.json": "test_oer.py",
}


def test_every_vector_file_is_read_by_a_codec_test() -> None:
    on_disk = {str(path.relative_to(VECTORS)) for path in VECTORS.rglob("*") if path.is_file()}
    assert on_disk == set(VECTOR_FILES)


def _captured_ilp_packets() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes, str]]]:
    """ILP packets carried in the captured BTP frames and the CCP/ILDCP capture, split into
    (valid, invalid-with-the-recorded-error)."""
    valid: list[tuple[str, bytes]] = []
    invalid: list[tuple[str, bytes, str]] = []
    for i, frame in enumerate(CAPTURED_SESSION["frames"]):
        for entry in frame.get("protocolData", []):
            if entry["protocolName"] != "ilp":
                continue
            if "ilpParseError" in entry:
                invalid.append(
                    (f"wire#{i}", bytes.fromhex(entry["dataHex"]), entry["ilpParseError"])
                )
            else:
                valid.append((f"wire#{i}", bytes.fromhex(entry["dataHex"])))
    for case_no, case in enumerate(HANDSHAKES):
        for i, frame in enumerate(case["frames"]):
            decoded = btp.decode(bytes.fromhex(frame["hex"]))
            entry = btp.find(decoded.protocol_data, "ilp")
            if entry is None:
                continue
            if case["authFirst"]:
                valid.append((f"handshake{case_no}#{i}", entry.data))
            else:  # the ILP-before-auth probe carries a bare "0c00", an empty Prepare
                invalid.append((f"handshake{case_no}#{i}", entry.data, "truncated"))
    for i, exchange in enumerate(CCP_ILDCP["toPeer"]):
        valid.append((f"ccp#{i}-prepare", bytes.fromhex(exchange["prepareHex"])))
        valid.append((f"ccp#{i}-reply", bytes.fromhex(exchange["replyHex"])))
    for key in ("ourRouteControl", "ourRouteUpdate"):
        valid.append((f"{key}-prepare", bytes.fromhex(CCP_ILDCP[key]["prepareHex"])))
        valid.append((f"{key}-reply", bytes.fromhex(CCP_ILDCP[key]["replyHex"])))
    valid.append(("ildcp-request", bytes.fromhex(CCP_ILDCP["ildcp"]["requestHex"])))
    valid.append(("ildcp-response", bytes.fromhex(CCP_ILDCP["ildcp"]["responseHex"])))
    return valid, invalid


CAPTURED_VALID, CAPTURED_INVALID = _captured_ilp_packets()


def _all_valid_packets() -> list[tuple[str, bytes]]:
    packets = [
        (path.parent.parent.name, bytes.fromhex(_load_path(path)["binary"])) for path in UPSTREAM
    ]
    packets += [(f"rs-{v['name']}", bytes.fromhex(v["hex"])) for v in INTERLEDGER_RS]
    for kind in ("prepares", "fulfills", "rejects"):
        packets += [(f"gen-{v['name']}", bytes.fromhex(v["hex"])) for v in GENERATED[kind]]
    return packets + CAPTURED_VALID


def _load_path(path: Path) -> dict:
    return json.loads(path.read_text())


ALL_VALID = _all_valid_packets()


@pytest.mark.parametrize("data", [p for _, p in ALL_VALID], ids=[n for n, _ in ALL_VALID])
def test_every_valid_vector_round_trips(data: bytes) -> None:
    assert ilp.encode(ilp.decode(data)) == data


# --- field values as the files state them ---------------------------------------------


def _hex_or_b64(fields: dict, hex_key: str, b64_key: str) -> bytes:
    if hex_key in fields:
        return bytes.fromhex(fields[hex_key])
    return base64.b64decode(fields[b64_key])


def _expected(kind: str, fields: dict) -> ilp.Packet:
    if kind == "prepare":
        if "dataRule" in fields:
            assert fields["dataRule"] == "32767 x 0xaa"
            data = b"\xaa" * 32767
        else:
            data = _hex_or_b64(fields, "dataHex", "data")
        condition = fields["executionCondition"]
        return ilp.Prepare(
            amount=int(fields["amount"]),
            expires_at=_iso(fields["expiresAt"]),
            execution_condition=(
                bytes.fromhex(condition) if len(condition) == 64 else base64.b64decode(condition)
            ),
            destination=fields["destination"],
            data=data,
        )
    if kind == "fulfill":
        fulfillment = fields["fulfillment"]
        return ilp.Fulfill(
            fulfillment=(
                bytes.fromhex(fulfillment)
                if len(fulfillment) == 64
                else base64.b64decode(fulfillment)
            ),
            data=_hex_or_b64(fields, "dataHex", "data"),
        )
    return ilp.Reject(
        code=fields["code"],
        triggered_by=fields["triggeredBy"],
        message=fields["message"],
        data=_hex_or_b64(fields, "dataHex", "data"),
    )


def _field_cases() -> list[tuple[str, str, dict, str]]:
    cases = []
    for path in UPSTREAM:
        vector = _load_path(path)
        kind = path.parent.parent.name.removeprefix("ilp_")
        cases.append((f"upstream-{kind}", kind, vector["json"], vector["binary"]))
    for vector in INTERLEDGER_RS:
        cases.append((f"rs-{vector['name']}", vector["name"], vector["json"], vector["hex"]))
    for key, kind in (("prepares", "prepare"), ("fulfills", "fulfill"), ("rejects", "reject")):
        for vector in GENERATED[key]:
            cases.append((f"gen-{vector['name']}", kind, vector["json"], vector["hex"]))
    return cases


FIELD_CASES = _field_cases()


@pytest.mark.parametrize(
    ("kind", "fields", "hex_"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_decoded_fields_match_the_vector(kind: str, fields: dict, hex_: str) -> None:
    expected = _expected(kind, fields)
    assert ilp.decode(bytes.fromhex(hex_)) == expected
    assert ilp.encode(expected) == bytes.fromhex(hex_)


@pytest.mark.parametrize("vector", GENERATED["fulfills"], ids=lambda v: v["name"])
def test_generated_fulfillments_hash_to_the_stated_condition(vector: dict) -> None:
    fulfill = ilp.decode(bytes.fromhex(vector["hex"]))
    assert isinstance(fulfill, ilp.Fulfill)
    assert hashlib.sha256(fulfill.fulfillment).hexdigest() == vector["sha256OfFulfillment"]


@pytest.mark.parametrize(
    "vector", [v for v in GENERATED["rejects"] if v["name"][:4] == v["json"]["code"] + "_"]
)
def test_error_code_member_names_match_the_reference(vector: dict) -> None:
    assert ilp.ErrorCode[vector["name"]] == vector["json"]["code"]


def test_captured_results_decode_to_what_the_sender_saw() -> None:
    """The reply to each captured Prepare on the sender's link matches the recorded result."""
    frames = CAPTURED_SESSION["frames"]
    replies = [
        frame
        for frame in frames
        if frame["link"].endswith("(sender side)")
        and frame["dir"] == "in"
        and frame["btpType"] == "TYPE_RESPONSE"
        and frame["protocolData"]
    ]
    assert len(replies) == len(CAPTURED_SESSION["results"])
    for frame, result in zip(replies, CAPTURED_SESSION["results"], strict=True):
        entry = btp.find(btp.decode(bytes.fromhex(frame["hex"])).protocol_data, "ilp")
        packet = ilp.decode(entry.data)
        if result["type"] == "ilp_fulfill":
            assert isinstance(packet, ilp.Fulfill)
            assert packet.fulfillment.hex() == result["fulfillment"]
            assert packet.data == result["data"].encode()
        else:
            assert packet == ilp.Reject(
                result["code"],
                result["triggeredBy"],
                result["message"],
                bytes.fromhex(result["dataHex"]),
            )


def test_captured_prepares_decode_to_their_recorded_fields() -> None:
    for frame in CAPTURED_SESSION["frames"]:
        for entry in frame.get("protocolData", []):
            recorded = entry.get("ilp")
            if not recorded or recorded["type"] != "ilp_prepare":
                continue
            assert ilp.decode(bytes.fromhex(entry["dataHex"])) == ilp.Prepare(
                amount=int(recorded["amount"]),
                expires_at=_iso(recorded["expiresAt"]),
                execution_condition=bytes.fromhex(recorded["executionCondition"]),
                destination=recorded["destination"],
                data=bytes.fromhex(recorded["data"]),
            )


def test_captured_peer_protocol_prepares_use_the_zero_fulfillment_condition() -> None:
    for exchange in CCP_ILDCP["toPeer"]:
        prepare = ilp.decode_prepare(bytes.fromhex(exchange["prepareHex"]))
        assert prepare.destination == exchange["destination"]
        assert prepare.amount == int(exchange["amount"])
        assert prepare.execution_condition.hex() == exchange["condition"]
        assert ilp.decode(bytes.fromhex(exchange["replyHex"])) == ilp.Fulfill(bytes(32), b"")


# --- failures exactly as the files say ---------------------------------------------------

INVALID_ERRORS = {
    "Packet has incorrect type": UnknownType,
    "Packet has invalid destination address": InvalidAddress,
    "truncated": Truncated,
}


@pytest.mark.parametrize(
    ("data", "error"), [c[1:] for c in CAPTURED_INVALID], ids=[c[0] for c in CAPTURED_INVALID]
)
def test_captured_invalid_packets_fail_as_recorded(data: bytes, error: str) -> None:
    with pytest.raises(INVALID_ERRORS[error]):
        ilp.decode(data)


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_invalid_packets_fail_as_the_file_says(vector: dict) -> None:
    assert vector["parseAs"] == "prepare"
    with pytest.raises(INVALID_ERRORS[vector["error"]]):
        ilp.decode_prepare(bytes.fromhex(vector["hex"]))


def test_bytes_after_the_envelope_are_refused() -> None:
    data = bytes.fromhex(GENERATED["fulfills"][0]["hex"])
    with pytest.raises(TrailingBytes):
        ilp.decode(data + b"\x00")


def test_bytes_after_the_last_field_inside_the_envelope_are_ignored() -> None:
    data = bytes.fromhex(GENERATED["fulfills"][0]["hex"])
    content = data[2:] + b"\x01\x02"
    extended = bytes((13, len(content))) + content
    assert ilp.decode(extended) == ilp.decode(data)


@pytest.mark.parametrize("cut", [0, 1, 2, 10, 40, 60, 67])
def test_truncated_prepare_is_refused(cut: int) -> None:
    data = bytes.fromhex(GENERATED["prepares"][0]["hex"])
    with pytest.raises(Truncated):
        ilp.decode(data[:cut])


def test_unknown_type_is_refused() -> None:
    with pytest.raises(UnknownType):
        ilp.decode(b"\x0b\x00")


def test_decode_fulfill_or_reject_refuses_a_prepare() -> None:
    with pytest.raises(UnknownType):
        ilp.decode_fulfill_or_reject(bytes.fromhex(GENERATED["prepares"][0]["hex"]))


# --- timestamps (RFC 0030 "Fixed-length Timestamps" examples) ---------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20171224161432279", "2017-12-24T16:14:32.279+00:00"),
        ("20171224161432270", "2017-12-24T16:14:32.270+00:00"),
        ("20171224161432000", "2017-12-24T16:14:32.000+00:00"),
        ("20161231235959852", "2016-12-31T23:59:59.852+00:00"),
        ("20171225000000000", "2017-12-25T00:00:00.000+00:00"),
        ("99991224161432279", "9999-12-24T16:14:32.279+00:00"),
    ],
)
def test_valid_timestamps_parse(text: str, expected: str) -> None:
    parsed = ilp.parse_timestamp(text.encode())
    assert parsed == datetime.fromisoformat(expected)
    assert ilp.format_timestamp(parsed) == text.encode()


@pytest.mark.parametrize(
    "text",
    [
        "20171224235312.431+0200",
        "201712242153124318",
        "20171324161432200",
        "20171224230000000.",
        "20171224240000000",
        "20171224215300",
        "2017122421531",
        "20161231235960852",
        "00001224161432279",
        "2017122416143227Z",
        "+2017122416143227",
    ],
)
def test_invalid_timestamps_are_refused(text: str) -> None:
    with pytest.raises(InvalidTimestamp):
        ilp.parse_timestamp(text.encode())


def test_timestamps_are_written_in_utc_and_truncated_to_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert (
        ilp.format_timestamp(datetime(2017, 12, 24, 18, 14, 32, 279112, tzinfo=plus_two))
        == b"20171224161432279"
    )


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidTimestamp):
        ilp.format_timestamp(datetime(2017, 12, 24, 16, 14, 32))


# --- encoding refuses bad values --------------------------------------------------------

PREPARE = ilp.decode_prepare(bytes.fromhex(GENERATED["prepares"][0]["hex"]))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"amount": -1}, InvalidField),
        ({"amount": 2**64}, InvalidField),
        ({"execution_condition": b"\x00" * 31}, InvalidField),
        ({"destination": "test.bob!"}, InvalidAddress),
        ({"destination": "test"}, InvalidAddress),
    ],
)
def test_encoding_an_invalid_prepare_raises(change: dict, error: type[CodecError]) -> None:
    with pytest.raises(error):
        ilp.encode(dataclasses.replace(PREPARE, **change))


@pytest.mark.parametrize("code", ["F0", "F000", "Fé0"])
def test_encoding_a_reject_with_a_bad_code_raises(code: str) -> None:
    with pytest.raises(InvalidField):
        ilp.encode(ilp.Reject(code, "test.conn", "", b""))


def test_unknown_reject_codes_relay_unchanged() -> None:
    reject = ilp.Reject("X42", "test.far", "something new", b"\x01")
    assert ilp.decode(ilp.encode(reject)) == reject
    assert ilp.error_class("X42") is ilp.ErrorClass.UNKNOWN


# --- the forwarding patch ---------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", GENERATED["prepares"] + INTERLEDGER_RS[:1], ids=lambda v: v["name"]
)
def test_forwarding_patches_amount_and_expiry_only(vector: dict) -> None:
    data = bytes.fromhex(vector["hex"])
    original = ilp.decode_prepare(data)
    expiry = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    forwarded = ilp.encode_prepare_forward(data, 12345, expiry)
    assert len(forwarded) == len(data)
    assert ilp.decode_prepare(forwarded) == dataclasses.replace(
        original, amount=12345, expires_at=expiry
    )
    assert forwarded[-len(original.data) - 3 :] == data[-len(original.data) - 3 :]


def test_forwarding_keeps_extension_bytes_inside_the_envelope() -> None:
    data = bytes.fromhex(GENERATED["prepares"][0]["hex"])
    content = data[2:] + b"\xee\xee"
    extended = bytes((12, len(content))) + content
    forwarded = ilp.encode_prepare_forward(extended, 1, PREPARE.expires_at)
    assert forwarded.endswith(b"\xee\xee")
    assert ilp.decode_prepare(forwarded).amount == 1


def test_forwarding_refuses_other_packets() -> None:
    with pytest.raises(UnknownType):
        ilp.encode_prepare_forward(
            bytes.fromhex(GENERATED["fulfills"][0]["hex"]), 1, PREPARE.expires_at
        )


# --- error codes and F08 data ----------------------------------------------------------


@pytest.mark.parametrize("code", list(ilp.ErrorCode))
def test_every_error_code_has_a_class_and_a_name(code: ilp.ErrorCode) -> None:
    assert code.error_class.value == code.value[0]
    assert ilp.error_class(code) is code.error_class
    assert ilp.ERROR_NAMES[code]


def test_f08_data_matches_the_reference() -> None:
    data = ilp.f08_data(int(F08["receivedAmount"]), int(F08["maximumAmount"]))
    assert data.hex() == F08["dataHex"]
    assert ilp.decode_f08_data(data) == ilp.AmountTooLargeData(
        int(F08["receivedAmount"]), int(F08["maximumAmount"])
    )


def test_f08_data_in_the_captured_reject_parses() -> None:
    (over_max,) = [r for r in CAPTURED_SESSION["results"] if r.get("code") == "F08"]
    parsed = ilp.decode_f08_data(bytes.fromhex(over_max["dataHex"]))
    assert parsed == ilp.AmountTooLargeData(received_amount=1_000_001, maximum_amount=1_000_000)


def test_short_f08_data_is_truncated() -> None:
    with pytest.raises(Truncated):
        ilp.decode_f08_data(b"\x00" * 15)


# --- generated packets and random bytes ------------------------------------------------

ADDRESSES = st.from_regex(
    r"(g|private|example|peer|self|test[1-3]?|local)(\.[a-zA-Z0-9_~-]{1,20}){1,5}", fullmatch=True
).filter(is_valid_address)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
PREPARES = st.builds(
    ilp.Prepare,
    amount=st.integers(min_value=0, max_value=2**64 - 1),
    expires_at=MOMENTS,
    execution_condition=st.binary(min_size=32, max_size=32),
    destination=ADDRESSES,
    data=st.binary(max_size=300),
)
FULFILLS = st.builds(
    ilp.Fulfill, fulfillment=st.binary(min_size=32, max_size=32), data=st.binary(max_size=300)
)
REJECTS = st.builds(
    ilp.Reject,
    code=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=3, max_size=3
    ),
    triggered_by=ADDRESSES | st.just(""),
    message=st.text(max_size=200),
    data=st.binary(max_size=300),
)


@given(PREPARES | FULFILLS | REJECTS)
def test_generated_packets_round_trip(packet: ilp.Packet) -> None:
    encoded = ilp.encode(packet)
    assert ilp.decode(encoded) == packet
    assert ilp.encode(ilp.decode(encoded)) == encoded


def _decodes_consistently(data: bytes) -> None:
    try:
        packet = ilp.decode(data)
    except CodecError:
        return
    assert ilp.decode(ilp.encode(packet)) == packet


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    _decodes_consistently(data)


@given(
    st.sampled_from([p for _, p in ALL_VALID if len(p) < 2000]),
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
