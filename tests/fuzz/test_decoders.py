"""Hypothesis-driven fuzzing of the decoders through the targets of `tests/fuzz/targets.py`.

Inputs are structure-aware: valid encodings (generated, and the targets' seeds) run through
byte edits that break them where decoders are weakest (length prefixes, truncation, spliced
frames), next to plain random bytes. The coverage-guided soak of the same targets is
`bench/fuzz.py`; `test_fuzz_bounded.py` runs it briefly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.claims import Claim
from connector.codec import btp, ilp, oer
from connector.codec.btp import ProtocolData
from tests.fuzz import targets

FUZZ = settings(
    max_examples=400,
    deadline=timedelta(seconds=2),  # a slower input is a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = targets.seeds()

# --- byte edits ---------------------------------------------------------------------------

EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    # A length prefix rewritten: short form, or long form with 1-7 length bytes.
    st.tuples(
        st.just("length"),
        st.integers(0, 10_000),
        st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x86, 0x87, 0xFF]),
    ),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000), st.integers(1, 64)),
)


def apply_edits(data: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, at, arg in edits:
        pos = at % (len(buf) + 1)
        if kind == "set" and buf:
            buf[pos % len(buf)] = arg  # type: ignore[assignment]
        elif kind in ("insert", "length"):
            buf[pos:pos] = arg if isinstance(arg, bytes) else bytes([arg])  # type: ignore[arg-type]
        elif kind == "delete":
            del buf[pos : pos + arg]  # type: ignore[operator]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "duplicate":
            buf[pos:pos] = buf[pos : pos + arg]  # type: ignore[operator]
    return bytes(buf)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(apply_edits, valid, st.lists(EDIT, max_size=4))


# --- structured generators ------------------------------------------------------------------

SEGMENT = st.text(alphabet="abcXYZ019_~-", min_size=1, max_size=12)
ADDRESSES = st.builds(
    lambda scheme, segments: ".".join([scheme, *segments]),
    st.sampled_from(["g", "test", "private", "peer", "example", "local", "self", "test3"]),
    st.lists(SEGMENT, min_size=1, max_size=4),
)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
PACKETS = st.one_of(
    st.builds(
        ilp.Prepare,
        st.integers(0, ilp.MAX_AMOUNT),
        MOMENTS,
        st.binary(min_size=32, max_size=32),
        ADDRESSES,
        st.binary(max_size=300),
    ),
    st.builds(ilp.Fulfill, st.binary(min_size=32, max_size=32), st.binary(max_size=300)),
    st.builds(
        ilp.Reject,
        st.sampled_from([code.value for code in ilp.ErrorCode] + ["Z99", "F1x"]),
        st.one_of(st.just(""), ADDRESSES),
        st.text(max_size=50),
        st.binary(max_size=50),
    ),
)
ILP_BYTES = st.one_of(PACKETS.map(ilp.encode), st.sampled_from(SEEDS["ilp"]))

ENTRY_NAMES = st.sampled_from(["ilp", "auth", "auth_token", "payment-channel-claim", "x"])
ENTRIES = st.lists(
    st.builds(
        ProtocolData,
        ENTRY_NAMES,
        st.integers(0, 255),
        st.one_of(ILP_BYTES, st.binary(max_size=100)),
    ),
    max_size=3,
).map(tuple)
REQUEST_IDS = st.integers(0, btp.MAX_REQUEST_ID)
FRAMES = st.one_of(
    st.builds(btp.Message, REQUEST_IDS, ENTRIES),
    st.builds(btp.Response, REQUEST_IDS, ENTRIES),
    st.builds(btp.Transfer, REQUEST_IDS, st.integers(0, btp.MAX_AMOUNT), ENTRIES),
    st.builds(
        btp.Error,
        REQUEST_IDS,
        st.sampled_from(["F00", "F01", "T00", "ZZZ"]),
        st.sampled_from(["NotAcceptedError", ""]),
        st.sampled_from(["20261124000000.000Z", "", "garbage"]),
        st.binary(max_size=40),
        ENTRIES,
    ),
)
BTP_BYTES = st.one_of(FRAMES.map(btp.encode), st.sampled_from(SEEDS["btp"]))


# --- decoders -------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(st.sampled_from(SEEDS["oer"]))))
def test_oer_readers_refuse_with_codec_errors_and_accept_only_canonical_forms(data: bytes) -> None:
    targets.oer_target(data)


@FUZZ
@given(st.integers(0, 7), st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_oer_encodings_read_back_at_any_offset(pos: int, value: int, octets: bytes) -> None:
    for encoded in (oer.encode_var_uint(value), oer.encode_var_octets(octets)):
        targets.oer_target(bytes([pos]) + bytes(pos) + encoded)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(ILP_BYTES)))
def test_ilp_decode_refuses_with_codec_errors_and_round_trips_what_it_accepts(data: bytes) -> None:
    targets.ilp_target(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(BTP_BYTES)))
def test_btp_decode_refuses_with_codec_errors_and_round_trips_what_it_accepts(data: bytes) -> None:
    targets.btp_target(data)


@FUZZ
@given(FRAMES, st.lists(EDIT, min_size=1, max_size=3))
def test_btp_frames_carrying_damaged_ilp_packets(frame: btp.Frame, edits: list) -> None:
    """The outer frame intact, the ILP packet inside it broken."""
    damaged = tuple(
        ProtocolData(e.protocol_name, e.content_type, apply_edits(e.data, edits))
        for e in frame.protocol_data
    )
    targets.btp_target(btp.encode(type(frame)(*(*_fields(frame)[:-1], damaged))))


def _fields(frame: btp.Frame) -> tuple:
    return tuple(getattr(frame, name) for name in frame.__slots__)  # type: ignore[union-attr]


# --- the BTP session --------------------------------------------------------------------------

MESSAGES = st.lists(
    st.one_of(mutated(BTP_BYTES), BTP_BYTES, st.binary(max_size=40)), min_size=1, max_size=8
)
AUTH_FIRST = st.one_of(
    st.sampled_from(
        [
            targets.auth_frame(b"alice", b"alice-token"),
            targets.auth_frame(b"", b"bob-token", 77),
            targets.auth_frame(b"bob", b"alice-token"),
        ]
    ),
    mutated(st.just(targets.auth_frame(b"alice", b"alice-token"))),
)


@FUZZ
@given(AUTH_FIRST, MESSAGES)
def test_btp_session_before_auth(first: bytes, rest: list[bytes]) -> None:
    targets.btp_session_target(bytes([0]) + targets.join_messages([first, *rest]))


@FUZZ
@given(MESSAGES)
def test_btp_session_after_auth(messages: list[bytes]) -> None:
    targets.btp_session_target(bytes([1]) + targets.join_messages(messages))


@FUZZ
@given(MESSAGES)
def test_btp_session_client_role(messages: list[bytes]) -> None:
    targets.btp_session_target(bytes([2]) + targets.join_messages(messages))


@FUZZ
@given(st.sampled_from(SEEDS["btp_session"]).flatmap(lambda seed: mutated(st.just(seed))))
def test_btp_session_mutated_seeds(data: bytes) -> None:
    targets.btp_session_target(data)


# --- claims -----------------------------------------------------------------------------------

CLAIM = json.loads(SEEDS["claim"][0])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**300), 2**300)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.sampled_from([str(v) for v in CLAIM.values()] + ["0x", "0x" + "f" * 130, "1e3", "-1"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=6,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(CLAIM)), JSON_VALUES), st.booleans())
def test_claims_with_any_json_field_values(changes: dict, drop: bool) -> None:
    document = {key: value for key, value in CLAIM.items() if not (drop and key in changes)}
    if not drop:
        document.update(changes)
    targets.claim_target(json.dumps(document).encode())


@FUZZ
@given(
    st.one_of(
        mutated(st.sampled_from(SEEDS["claim"])),
        st.binary(max_size=200),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    )
)
def test_claim_json_bytes(data: bytes) -> None:
    targets.claim_target(data)


@FUZZ
@given(st.integers(1, 2**256 - 1), st.integers(0, 2**256 - 1), st.binary(min_size=65, max_size=65))
def test_claims_with_any_signature_are_refused_not_raised(
    nonce: int, amount: int, signature: bytes
) -> None:
    """Every signature shape reaches recovery: r or s zero or out of range, any v."""
    document = {**CLAIM, "nonce": str(nonce), "transferredAmount": str(amount)}
    document["signature"] = "0x" + signature.hex()
    targets.claim_target(json.dumps(document).encode())


# --- the oracles can fail -------------------------------------------------------------------


def test_oer_target_catches_a_reader_that_accepts_non_canonical_lengths(monkeypatch) -> None:
    def lax(data: bytes, pos: int) -> tuple[int, int]:
        size = data[pos] & 0x7F
        return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size

    monkeypatch.setattr(oer, "read_length_prefix", lax)
    with pytest.raises(AssertionError, match="non-canonical"):
        targets.oer_target(bytes([0]) + b"\x81\x05")


def test_btp_target_catches_an_escaping_exception(monkeypatch) -> None:
    monkeypatch.setattr(btp, "_ascii", lambda raw, field: raw.decode("ascii"))
    frame = btp.encode(btp.Message(1, (ProtocolData("ilp", 0, b""),)))
    with pytest.raises(UnicodeDecodeError):
        targets.btp_target(frame.replace(b"ilp", b"\xffip"))


def test_session_target_catches_a_server_that_closes_on_garbage_after_auth(monkeypatch) -> None:
    from connector.btp.protocol import BtpProtocol

    monkeypatch.setattr(BtpProtocol, "_refuse_unreadable", lambda self, data, exc: self._close("x"))
    with pytest.raises(AssertionError, match="closed after auth"):
        targets.btp_session_target(bytes([1]) + targets.join_messages([b"\x06garbage"]))


def test_seeds_are_accepted_by_their_decoders() -> None:
    assert isinstance(ilp.decode(SEEDS["ilp"][0]), ilp.Prepare)
    assert all(isinstance(btp.decode(seed), btp.Frame) for seed in SEEDS["btp"])
    assert Claim.from_json(SEEDS["claim"][0]).nonce == 3
    for name, target in targets.TARGETS.items():
        for seed in SEEDS[name]:
            target(seed)
