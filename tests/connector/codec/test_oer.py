"""OER primitives against vectors/oer-utils and vectors/generated/oer-edge-cases.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.codec import oer
from connector.codec.errors import (
    CodecError,
    InvalidVarUInt,
    LengthTooLarge,
    NonCanonicalLength,
    Truncated,
)

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
OER = json.loads((VECTORS / "oer-utils" / "oer-vectors.json").read_text())
EDGES = json.loads((VECTORS / "generated" / "oer-edge-cases.json").read_text())

# The reference codec's error text -> the error we raise for the same bytes.
EXPECTED_ERROR = {
    "UInt of length 0 is invalid": InvalidVarUInt,
    "Tried to read 4 bytes (truncated)": Truncated,
    "Tried to read 4 bytes (length only)": Truncated,
    "non-canonical: 0 encoded in 0 bytes": NonCanonicalLength,
    "non-canonical: 0 encoded in 1 bytes": NonCanonicalLength,
    "non-canonical: 1 encoded in 1 bytes": NonCanonicalLength,
    "non-canonical: 1 encoded in 2 bytes": NonCanonicalLength,
    "length too large for JS number (implementation limit)": LengthTooLarge,
    "Tried to read 7 bytes, but only 6 bytes available": Truncated,
}


def _ids(cases: list[dict], key: str = "hex") -> list[str]:
    return [str(case.get(key, case.get("value")))[:24] for case in cases]


@pytest.mark.parametrize("case", OER["varUInt"]["decode"], ids=_ids(OER["varUInt"]["decode"]))
def test_var_uint_decodes_reference_vectors(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    assert oer.read_var_uint(data, 0) == (int(case["value"]), len(data))
    assert oer.encode_var_uint(int(case["value"])) == data


@pytest.mark.parametrize(
    "case", OER["varUInt"]["decodeErrors"], ids=_ids(OER["varUInt"]["decodeErrors"])
)
def test_var_uint_refuses_what_the_reference_refuses(case: dict) -> None:
    with pytest.raises(EXPECTED_ERROR[case["error"]]):
        oer.read_var_uint(bytes.fromhex(case["hex"]), 0)


@pytest.mark.parametrize(
    "case",
    OER["varUInt"]["encode"] + EDGES["varUInt"],
    ids=_ids(OER["varUInt"]["encode"] + EDGES["varUInt"], "value"),
)
def test_var_uint_encodes_like_the_reference(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    assert oer.encode_var_uint(int(case["value"])) == data
    assert oer.read_var_uint(data, 0) == (int(case["value"]), len(data))


@pytest.mark.parametrize(
    "case", OER["lengthPrefix"]["decode"], ids=_ids(OER["lengthPrefix"]["decode"])
)
def test_length_prefix_decodes_reference_vectors(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    assert oer.read_length_prefix(data, 0) == (case["value"], case["bytes"])
    assert oer.encode_length_prefix(case["value"]) == data


@pytest.mark.parametrize(
    "case", OER["lengthPrefix"]["decodeErrors"], ids=_ids(OER["lengthPrefix"]["decodeErrors"])
)
def test_length_prefix_refuses_non_canonical_and_oversized(case: dict) -> None:
    with pytest.raises(EXPECTED_ERROR[case["error"]]):
        oer.read_length_prefix(bytes.fromhex(case["hex"]), 0)


@pytest.mark.parametrize("case", EDGES["lengthPrefix"], ids=_ids(EDGES["lengthPrefix"], "length"))
def test_length_prefix_boundaries(case: dict) -> None:
    prefix = bytes.fromhex(case["prefixHex"])
    assert oer.encode_length_prefix(case["length"]) == prefix
    assert oer.read_length_prefix(prefix, 0) == (case["length"], len(prefix))


@pytest.mark.parametrize(
    "case", OER["varOctetString"]["decode"], ids=_ids(OER["varOctetString"]["decode"])
)
def test_var_octets_decode_reads_only_its_length(case: dict) -> None:
    value, end = oer.read_var_octets(bytes.fromhex(case["hex"]), 0)
    assert value.hex() == case["valueHex"]
    assert end == case["consumed"]


@pytest.mark.parametrize("case", OER["varOctetString"]["decodeErrors"])
def test_var_octets_overrun_is_truncated(case: dict) -> None:
    with pytest.raises(EXPECTED_ERROR[case["error"]]):
        oer.read_var_octets(bytes.fromhex(case["hex"]), 0)


@pytest.mark.parametrize("case", OER["varOctetString"]["encode"])
def test_var_octets_encode(case: dict) -> None:
    if "valueHex" in case:
        value = bytes.fromhex(case["valueHex"])
    else:
        assert case["valueRule"] == "256 x 0xb0"
        value = b"\xb0" * 256
    assert oer.encode_var_octets(value) == bytes.fromhex(case["hex"])


def test_var_uint_with_leading_zero_is_refused() -> None:
    with pytest.raises(InvalidVarUInt):
        oer.read_var_uint(bytes.fromhex("020001"), 0)


def test_reading_at_the_end_is_truncated() -> None:
    with pytest.raises(Truncated):
        oer.read_length_prefix(b"\x05", 1)


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_length_prefix_round_trips(length: int) -> None:
    prefix = oer.encode_length_prefix(length)
    assert oer.read_length_prefix(prefix + b"tail", 0) == (length, len(prefix))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_var_uint_round_trips(value: int) -> None:
    encoded = oer.encode_var_uint(value)
    assert oer.read_var_uint(encoded, 0) == (value, len(encoded))


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=8))
def test_readers_raise_only_codec_errors(data: bytes, pos: int) -> None:
    for reader in (oer.read_length_prefix, oer.read_var_octets, oer.read_var_uint):
        try:
            reader(data, pos)
        except CodecError:
            pass
