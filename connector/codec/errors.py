"""Parse and encode errors of the pure codecs (OER, ILP, BTP).

These say what is wrong with bytes or values; they know nothing of ILP error
codes or sockets (`connector/errors.py` maps `CodecError` to an F01 Reject).

    CodecError (ValueError)
    ├── Truncated            the bytes end before a field does
    ├── TrailingBytes        bytes left after the outer envelope
    ├── UnknownType          a type byte this codec does not decode
    ├── NonCanonicalLength   a length determinant not in its shortest form
    ├── LengthTooLarge       a length determinant beyond the implementation limit
    ├── InvalidVarUInt       a var-uint of length 0, with a leading zero, or over 8 bytes
    ├── InvalidAddress       an ILP address breaking RFC 0015
    ├── InvalidTimestamp     an ILP timestamp that is not YYYYMMDDHHMMSSfff (UTC)
    └── InvalidField         any other field out of its range or character set
"""

from __future__ import annotations


class CodecError(ValueError):
    """Bytes that do not decode, or a value that cannot be encoded."""


class Truncated(CodecError):
    pass


class TrailingBytes(CodecError):
    pass


class UnknownType(CodecError):
    pass


class NonCanonicalLength(CodecError):
    pass


class LengthTooLarge(CodecError):
    pass


class InvalidVarUInt(CodecError):
    pass


class InvalidAddress(CodecError):
    pass


class InvalidTimestamp(CodecError):
    pass


class InvalidField(CodecError):
    pass
