"""ILPv4 packets (RFC 0027): bytes <-> `Prepare` / `Fulfill` / `Reject`, plus error codes.

Wire shape: a type byte (12, 13, 14), then the contents as one var-octet string.
Bytes after that envelope are refused (`TrailingBytes`); bytes after the last field
*inside* the envelope are ignored, as RFC 0030 asks for extensibility and as the
reference codec (ilp-packet) does.

Forwarding does not re-encode: `encode_prepare_forward` patches amount and expiry in
the received bytes (both fixed-length, RFC 0027 places them first for this reason),
as interledger-rs `Prepare::set_amount` / `set_expires_at` do.

Every decoder raises only `CodecError` subclasses, whatever the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

from connector.codec import oer
from connector.codec.address import is_valid_address, is_valid_address_bytes
from connector.codec.errors import (
    CodecError,
    InvalidAddress,
    InvalidField,
    InvalidTimestamp,
    TrailingBytes,
    Truncated,
    UnknownType,
)

AMOUNT_LEN = 8
TIMESTAMP_LEN = 17
CONDITION_LEN = 32
FULFILLMENT_LEN = 32
ERROR_CODE_LEN = 3
MAX_AMOUNT = 2**64 - 1

# amount + expiry + condition + two one-byte length prefixes
_MIN_PREPARE_CONTENT = AMOUNT_LEN + TIMESTAMP_LEN + CONDITION_LEN + 2


class PacketType(IntEnum):
    PREPARE = 12
    FULFILL = 13
    REJECT = 14


class ErrorClass(StrEnum):
    FINAL = "F"
    TEMPORARY = "T"
    RELATIVE = "R"
    # A code whose letter is none of the above; relayed unchanged, treated by callers as final.
    UNKNOWN = "?"


class ErrorCode(StrEnum):
    F00_BAD_REQUEST = "F00"
    F01_INVALID_PACKET = "F01"
    F02_UNREACHABLE = "F02"
    F03_INVALID_AMOUNT = "F03"
    F04_INSUFFICIENT_DESTINATION_AMOUNT = "F04"
    F05_WRONG_CONDITION = "F05"
    F06_UNEXPECTED_PAYMENT = "F06"
    F07_CANNOT_RECEIVE = "F07"
    F08_AMOUNT_TOO_LARGE = "F08"
    F99_APPLICATION_ERROR = "F99"
    T00_INTERNAL_ERROR = "T00"
    T01_PEER_UNREACHABLE = "T01"
    T02_PEER_BUSY = "T02"
    T03_CONNECTOR_BUSY = "T03"
    T04_INSUFFICIENT_LIQUIDITY = "T04"
    T05_RATE_LIMITED = "T05"
    T99_APPLICATION_ERROR = "T99"
    R00_TRANSFER_TIMED_OUT = "R00"
    R01_INSUFFICIENT_SOURCE_AMOUNT = "R01"
    R02_INSUFFICIENT_TIMEOUT = "R02"
    R99_APPLICATION_ERROR = "R99"

    @property
    def error_class(self) -> ErrorClass:
        return error_class(self.value)


# RFC 0027 names, for Reject messages and logs.
ERROR_NAMES: dict[ErrorCode, str] = {
    ErrorCode.F00_BAD_REQUEST: "Bad Request",
    ErrorCode.F01_INVALID_PACKET: "Invalid Packet",
    ErrorCode.F02_UNREACHABLE: "Unreachable",
    ErrorCode.F03_INVALID_AMOUNT: "Invalid Amount",
    ErrorCode.F04_INSUFFICIENT_DESTINATION_AMOUNT: "Insufficient Destination Amount",
    ErrorCode.F05_WRONG_CONDITION: "Wrong Condition",
    ErrorCode.F06_UNEXPECTED_PAYMENT: "Unexpected Payment",
    ErrorCode.F07_CANNOT_RECEIVE: "Cannot Receive",
    ErrorCode.F08_AMOUNT_TOO_LARGE: "Amount Too Large",
    ErrorCode.F99_APPLICATION_ERROR: "Application Error",
    ErrorCode.T00_INTERNAL_ERROR: "Internal Error",
    ErrorCode.T01_PEER_UNREACHABLE: "Peer Unreachable",
    ErrorCode.T02_PEER_BUSY: "Peer Busy",
    ErrorCode.T03_CONNECTOR_BUSY: "Connector Busy",
    ErrorCode.T04_INSUFFICIENT_LIQUIDITY: "Insufficient Liquidity",
    ErrorCode.T05_RATE_LIMITED: "Rate Limited",
    ErrorCode.T99_APPLICATION_ERROR: "Application Error",
    ErrorCode.R00_TRANSFER_TIMED_OUT: "Transfer Timed Out",
    ErrorCode.R01_INSUFFICIENT_SOURCE_AMOUNT: "Insufficient Source Amount",
    ErrorCode.R02_INSUFFICIENT_TIMEOUT: "Insufficient Timeout",
    ErrorCode.R99_APPLICATION_ERROR: "Application Error",
}

_CLASSES = {"F": ErrorClass.FINAL, "T": ErrorClass.TEMPORARY, "R": ErrorClass.RELATIVE}


def error_class(code: str) -> ErrorClass:
    """Class of any three-letter code, including codes this table does not list."""
    return _CLASSES.get(code[:1], ErrorClass.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Prepare:
    amount: int
    expires_at: datetime  # UTC, tz-aware, millisecond precision
    execution_condition: bytes  # 32 bytes
    destination: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Fulfill:
    fulfillment: bytes  # 32 bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    code: str  # three characters, kept as received so unknown codes relay unchanged
    triggered_by: str
    message: str
    data: bytes


Packet = Prepare | Fulfill | Reject


@dataclass(frozen=True, slots=True)
class AmountTooLargeData:
    """The `data` of an F08 Reject (InterledgerErrorData.asn): what came in, what is allowed."""

    received_amount: int
    maximum_amount: int


# --- decoding ---------------------------------------------------------------------------


def decode(data: bytes) -> Packet:
    """Decode any ILP packet. Raises only `CodecError`."""
    if type(data) is not bytes:
        data = bytes(data)
    start = _open_envelope(data)
    kind = data[0]
    if kind == PacketType.PREPARE:
        return _decode_prepare(data, start)
    if kind == PacketType.FULFILL:
        return _decode_fulfill(data, start)
    if kind == PacketType.REJECT:
        return _decode_reject(data, start)
    raise UnknownType(f"unknown ILP packet type {kind}")


def decode_prepare(data: bytes) -> Prepare:
    """Decode a Prepare; any other packet type raises `UnknownType`."""
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise Truncated("empty packet")
    if data[0] != PacketType.PREPARE:
        raise UnknownType(f"expected an ILP Prepare (12), got type {data[0]}")
    return _decode_prepare(data, _open_envelope(data))


def decode_fulfill_or_reject(data: bytes) -> Fulfill | Reject:
    """Decode the reply to a Prepare; a Prepare (or anything else) raises `UnknownType`."""
    packet = decode(data)
    if type(packet) is Prepare:
        raise UnknownType("expected an ILP Fulfill or Reject, got a Prepare")
    return packet  # type: ignore[return-value]


def _open_envelope(data: bytes) -> int:
    """Check the type-length envelope spans the data exactly; return where contents start."""
    if not data:
        raise Truncated("empty packet")
    length, start = oer.read_length_prefix(data, 1)
    end = start + length
    if end > len(data):
        raise Truncated(f"packet says {length} content bytes, {len(data) - start} present")
    if end < len(data):
        raise TrailingBytes(f"{len(data) - end} bytes after the packet")
    return start


def _decode_prepare(data: bytes, start: int) -> Prepare:
    # The envelope ends at len(data), so every read below is bounded by the envelope.
    if len(data) - start < _MIN_PREPARE_CONTENT:
        raise Truncated("Prepare shorter than its fixed fields")
    expiry_at = start + AMOUNT_LEN
    condition_at = expiry_at + TIMESTAMP_LEN
    destination_at = condition_at + CONDITION_LEN
    destination, pos = oer.read_var_octets(data, destination_at)
    if not is_valid_address_bytes(destination):
        raise InvalidAddress("Prepare has an invalid destination address")
    payload, _ = oer.read_var_octets(data, pos)
    return Prepare(
        int.from_bytes(data[start:expiry_at], "big"),
        parse_timestamp(data[expiry_at:condition_at]),
        data[condition_at:destination_at],
        destination.decode("ascii"),
        payload,
    )


def _decode_fulfill(data: bytes, start: int) -> Fulfill:
    data_at = start + FULFILLMENT_LEN
    if data_at >= len(data):
        raise Truncated("Fulfill shorter than its fixed fields")
    payload, _ = oer.read_var_octets(data, data_at)
    return Fulfill(data[start:data_at], payload)


def _decode_reject(data: bytes, start: int) -> Reject:
    pos = start + ERROR_CODE_LEN
    if pos >= len(data):
        raise Truncated("Reject shorter than its error code")
    code = _ascii(data[start:pos], "error code")
    triggered_by, pos = oer.read_var_octets(data, pos)
    message, pos = oer.read_var_octets(data, pos)
    payload, _ = oer.read_var_octets(data, pos)
    return Reject(code, _ascii(triggered_by, "triggeredBy"), _utf8(message, "message"), payload)


def _ascii(raw: bytes, field: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidField(f"{field} is not ASCII") from exc


def _utf8(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidField(f"{field} is not UTF-8") from exc


def parse_timestamp(raw: bytes) -> datetime:
    """`YYYYMMDDHHMMSSfff` (17 ASCII digits, UTC) -> tz-aware datetime."""
    if len(raw) != TIMESTAMP_LEN or not raw.isdigit():
        raise InvalidTimestamp(f"timestamp must be 17 digits, got {raw!r}")
    try:
        return datetime(
            int(raw[0:4]),
            int(raw[4:6]),
            int(raw[6:8]),
            int(raw[8:10]),
            int(raw[10:12]),
            int(raw[12:14]),
            int(raw[14:17]) * 1000,
            tzinfo=UTC,
        )
    except ValueError as exc:  # month 13, hour 24, second 60 (unsmeared leap second), year 0
        raise InvalidTimestamp(f"timestamp out of range: {raw!r}") from exc


# --- encoding ---------------------------------------------------------------------------


def format_timestamp(moment: datetime) -> bytes:
    """Tz-aware datetime -> `YYYYMMDDHHMMSSfff` in UTC; sub-millisecond digits are dropped
    (rounding down keeps a forwarded expiry no later than the one computed)."""
    if moment.tzinfo is None:
        raise InvalidTimestamp("ILP timestamps need a timezone-aware datetime")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
        f"{moment.microsecond // 1000:03d}"
    ).encode("ascii")


def encode(packet: Packet) -> bytes:
    kind = type(packet)
    if kind is Prepare:
        return _encode_prepare(packet)  # type: ignore[arg-type]
    if kind is Fulfill:
        return _encode_fulfill(packet)  # type: ignore[arg-type]
    if kind is Reject:
        return _encode_reject(packet)  # type: ignore[arg-type]
    raise TypeError(f"not an ILP packet: {kind.__name__}")


def _envelope(kind: PacketType, content: bytes) -> bytes:
    return bytes((kind,)) + oer.encode_length_prefix(len(content)) + content


def _amount_bytes(amount: int) -> bytes:
    if not 0 <= amount <= MAX_AMOUNT:
        raise InvalidField(f"amount {amount} is not a UInt64")
    return amount.to_bytes(AMOUNT_LEN, "big")


def _fixed(value: bytes, size: int, field: str) -> bytes:
    if len(value) != size:
        raise InvalidField(f"{field} must be {size} bytes, got {len(value)}")
    return bytes(value)


def _encode_prepare(prepare: Prepare) -> bytes:
    if not is_valid_address(prepare.destination):
        raise InvalidAddress(f"invalid destination address {prepare.destination!r}")
    content = b"".join(
        (
            _amount_bytes(prepare.amount),
            format_timestamp(prepare.expires_at),
            _fixed(prepare.execution_condition, CONDITION_LEN, "execution_condition"),
            oer.encode_var_octets(prepare.destination.encode("ascii")),
            oer.encode_var_octets(prepare.data),
        )
    )
    return _envelope(PacketType.PREPARE, content)


def _encode_fulfill(fulfill: Fulfill) -> bytes:
    content = _fixed(fulfill.fulfillment, FULFILLMENT_LEN, "fulfillment") + oer.encode_var_octets(
        fulfill.data
    )
    return _envelope(PacketType.FULFILL, content)


def _encode_reject(reject: Reject) -> bytes:
    try:
        code = reject.code.encode("ascii")
        triggered_by = reject.triggered_by.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidField("Reject code and triggered_by must be ASCII") from exc
    content = b"".join(
        (
            _fixed(code, ERROR_CODE_LEN, "code"),
            oer.encode_var_octets(triggered_by),
            oer.encode_var_octets(reject.message.encode("utf-8")),
            oer.encode_var_octets(reject.data),
        )
    )
    return _envelope(PacketType.REJECT, content)


def encode_prepare_forward(prepare: bytes, amount: int, expires_at: datetime) -> bytes:
    """Copy of an encoded Prepare with a new amount and expiry; nothing else is re-encoded.

    `prepare` must be bytes that `decode_prepare` accepted (the caller decoded them to
    route); only the envelope header is re-read here.
    """
    if not prepare or prepare[0] != PacketType.PREPARE:
        raise UnknownType("encode_prepare_forward needs an encoded ILP Prepare")
    _, start = oer.read_length_prefix(prepare, 1)
    after_expiry = start + AMOUNT_LEN + TIMESTAMP_LEN
    if after_expiry > len(prepare):
        raise Truncated("Prepare shorter than its fixed fields")
    return b"".join(
        (
            prepare[:start],
            _amount_bytes(amount),
            format_timestamp(expires_at),
            prepare[after_expiry:],
        )
    )


# --- F08 data ---------------------------------------------------------------------------


def f08_data(received: int, maximum: int) -> bytes:
    """`data` for an F08 Amount Too Large Reject: UInt64 received || UInt64 maximum."""
    return _amount_bytes(received) + _amount_bytes(maximum)


def decode_f08_data(data: bytes) -> AmountTooLargeData:
    if len(data) < 2 * AMOUNT_LEN:
        raise Truncated(f"F08 data needs 16 bytes, got {len(data)}")
    return AmountTooLargeData(
        int.from_bytes(data[0:8], "big"),
        int.from_bytes(data[8:16], "big"),
    )


__all__ = [
    "AmountTooLargeData",
    "CodecError",
    "ErrorClass",
    "ErrorCode",
    "Fulfill",
    "Packet",
    "PacketType",
    "Prepare",
    "Reject",
    "decode",
    "decode_f08_data",
    "decode_fulfill_or_reject",
    "decode_prepare",
    "encode",
    "encode_prepare_forward",
    "error_class",
    "f08_data",
    "format_timestamp",
    "parse_timestamp",
]
