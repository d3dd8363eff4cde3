"""Hypothesis-driven fuzzing of the decoders through the targets of `tests/fuzz/targets.py`.

Inputs are structure-aware: valid encodings (generated, and the targets' seeds) run through
byte edits that break them where decoders are weakest (length prefixes, truncation, spliced
frames), next to plain random bytes. The coverage-guided soak of the same targets is
`bench/fuzz.py`; `test_fuzz_bounded.py` runs it briefly.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.claims import Claim
from connector.codec import btp, ilp, oer
from connector.codec.btp import ProtocolData
from tests.fuzz import targets
from tests.fuzz.strategies import (
    AUTH_FIRST,
    BTP_BYTES,
    EDIT,
    FRAMES,
    ILP_BYTES,
    MESSAGES,
    SEEDS,
    apply_edits,
    mutated,
)

FUZZ = settings(
    max_examples=400,
    deadline=timedelta(seconds=2),  # a slower input is a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

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
