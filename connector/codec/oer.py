"""OER primitives used by ILP and BTP (RFC 0030): length prefix, var-octets, var-uint.

Readers take the whole buffer and a position and return `(value, next_position)`, so
callers walk one buffer without slicing it per field. Decoding is canonical only:
a length or var-uint not in its shortest form is refused, which makes
`encode(decode(b)) == b` hold for every accepted input.
"""

from __future__ import annotations

from connector.codec.errors import (
    InvalidField,
    InvalidVarUInt,
    LengthTooLarge,
    NonCanonicalLength,
    Truncated,
)

# The reference codec (oer-utils) refuses length-of-length above 6 bytes (a JS
# number limit); lengths that large never fit a message anyway, so we do the same.
MAX_LENGTH_OF_LENGTH = 6
MAX_VAR_UINT_BYTES = 8


def read_length_prefix(data: bytes, pos: int) -> tuple[int, int]:
    """Read a length determinant at `pos`; return (length, position after it)."""
    if pos >= len(data):
        raise Truncated(f"length prefix expected at offset {pos}, got end of data")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0:
        raise NonCanonicalLength("long-form length with zero length-of-length")
    if size > MAX_LENGTH_OF_LENGTH:
        raise LengthTooLarge(f"length-of-length {size} exceeds {MAX_LENGTH_OF_LENGTH}")
    end = pos + 1 + size
    if end > len(data):
        raise Truncated(f"length prefix needs {size} bytes at offset {pos + 1}")
    if data[pos + 1] == 0:
        raise NonCanonicalLength("long-form length with a leading zero byte")
    length = int.from_bytes(data[pos + 1 : end], "big")
    if length < 0x80:
        raise NonCanonicalLength(f"length {length} must use the short form")
    return length, end


def read_var_octets(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a length-prefixed octet string; return (value, position after it)."""
    length, start = read_length_prefix(data, pos)
    end = start + length
    if end > len(data):
        raise Truncated(f"octet string of {length} bytes at offset {start} runs past the end")
    return data[start:end], end


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a variable-length unsigned integer; return (value, position after it)."""
    size, start = read_length_prefix(data, pos)
    if size == 0:
        raise InvalidVarUInt("var-uint of length 0")
    if size > MAX_VAR_UINT_BYTES:
        raise InvalidVarUInt(f"var-uint of {size} bytes exceeds {MAX_VAR_UINT_BYTES}")
    end = start + size
    if end > len(data):
        raise Truncated(f"var-uint of {size} bytes at offset {start} runs past the end")
    if size > 1 and data[start] == 0:
        raise InvalidVarUInt("var-uint with a leading zero byte")
    return int.from_bytes(data[start:end], "big"), end


def encode_length_prefix(length: int) -> bytes:
    if length < 0:
        raise InvalidField(f"negative length {length}")
    if length < 0x80:
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    if size > MAX_LENGTH_OF_LENGTH:
        raise LengthTooLarge(f"length {length} needs {size} bytes of length")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_var_octets(value: bytes) -> bytes:
    return encode_length_prefix(len(value)) + value


def encode_var_uint(value: int) -> bytes:
    if value < 0:
        raise InvalidField(f"var-uint cannot be negative: {value}")
    size = max(1, (value.bit_length() + 7) // 8)
    if size > MAX_VAR_UINT_BYTES:
        raise InvalidVarUInt(f"var-uint {value} exceeds {MAX_VAR_UINT_BYTES} bytes")
    return bytes((size,)) + value.to_bytes(size, "big")
