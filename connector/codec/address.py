"""ILP address grammar (RFC 0015): scheme, then one or more dot-separated segments, <= 1023 chars."""

from __future__ import annotations

import re

MAX_ADDRESS_LENGTH = 1023

_PATTERN = r"(?:g|private|example|peer|self|test[1-3]?|local)(?:\.[a-zA-Z0-9_~-]+)+"
_ADDRESS = re.compile(_PATTERN)
_ADDRESS_BYTES = re.compile(_PATTERN.encode("ascii"))


def is_valid_address(address: str) -> bool:
    return len(address) <= MAX_ADDRESS_LENGTH and _ADDRESS.fullmatch(address) is not None


def is_valid_address_bytes(address: bytes) -> bool:
    """Same rule on raw wire bytes, so decoders check before decoding to `str`."""
    return len(address) <= MAX_ADDRESS_LENGTH and _ADDRESS_BYTES.fullmatch(address) is not None
