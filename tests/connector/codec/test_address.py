"""ILP address grammar against vectors/ilp-packet/ilp-address-validity.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.codec.address import is_valid_address, is_valid_address_bytes

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
CASES = json.loads((VECTORS / "ilp-packet" / "ilp-address-validity.json").read_text())


@pytest.mark.parametrize("address", CASES["valid"])
def test_valid_addresses_are_accepted(address: str) -> None:
    assert is_valid_address(address)
    assert is_valid_address_bytes(address.encode("ascii"))


@pytest.mark.parametrize("address", CASES["invalid"])
def test_invalid_addresses_are_refused(address: str) -> None:
    assert not is_valid_address(address)
    assert not is_valid_address_bytes(address.encode("utf-8"))


@pytest.mark.parametrize("case", CASES["generatedCases"], ids=lambda case: str(case["length"]))
def test_length_limit_is_1023(case: dict) -> None:
    assert case["rule"].startswith("'g.' + 'x' repeated")
    address = "g." + "x" * (case["length"] - 2)
    assert is_valid_address(address) is case["valid"]
    assert is_valid_address_bytes(address.encode("ascii")) is case["valid"]


@pytest.mark.parametrize("address", ["test.alice\n", "g.a\nb", "test.\uff41lice", "g.a b"])
def test_newlines_and_non_ascii_letters_are_refused(address: str) -> None:
    assert not is_valid_address(address)
