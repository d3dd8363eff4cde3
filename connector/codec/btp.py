"""BTP 2.0 packets (RFC 0023): bytes <-> `Message` / `Response` / `Error` / `Transfer`.

Wire shape: type (UInt8), request id (UInt32), then the type's contents as one
var-octet string; contents end with the protocol data list (var-uint count, then
name / content type / data per entry). As in `ilp.py`, bytes after the envelope are
refused and bytes after the protocol data inside it are ignored. BTP 1.0 types 3-5
(Prepare/Fulfill/Reject) are not decoded: `UnknownType`.

`Error.triggered_at` stays the GeneralizedTime text as received, so a frame re-encodes
byte for byte; `format_generalized_time` writes it the way the reference codec
(btp-packet) does, `YYYYMMDDHHMMSS.fffZ`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from connector.codec import oer
from connector.codec.errors import (
    CodecError,
    InvalidField,
    InvalidTimestamp,
    TrailingBytes,
    Truncated,
    UnknownType,
)

MAX_REQUEST_ID = 2**32 - 1
MAX_AMOUNT = 2**64 - 1
ERROR_CODE_LEN = 3


class MessageType(IntEnum):
    RESPONSE = 1
    ERROR = 2
    MESSAGE = 6
    TRANSFER = 7


class ContentType(IntEnum):
    OCTET_STREAM = 0
    TEXT_PLAIN_UTF8 = 1
    APPLICATION_JSON = 2


# Known content types decode to the enum; the ASN.1 allows 0..255, so others stay ints.
_KNOWN_CONTENT_TYPES = {member.value: member for member in ContentType}
_CONTENT_TYPES: tuple[ContentType | int, ...] = tuple(
    _KNOWN_CONTENT_TYPES.get(value, value) for value in range(256)
)


@dataclass(frozen=True, slots=True)
class ProtocolData:
    protocol_name: str
    content_type: ContentType | int
    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    request_id: int
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class Response:
    request_id: int
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class Error:
    request_id: int
    code: str  # three characters, e.g. "F00"
    name: str  # e.g. "NotAcceptedError"
    triggered_at: str  # GeneralizedTime text, e.g. "20170828183200.000Z"
    data: bytes
    protocol_data: tuple[ProtocolData, ...]


@dataclass(frozen=True, slots=True)
class Transfer:
    request_id: int
    amount: int
    protocol_data: tuple[ProtocolData, ...]


Frame = Message | Response | Error | Transfer
REQUEST_TYPES = (MessageType.MESSAGE, MessageType.TRANSFER)


def find(protocol_data: Sequence[ProtocolData], name: str) -> ProtocolData | None:
    """The first entry called `name`, if any."""
    for entry in protocol_data:
        if entry.protocol_name == name:
            return entry
    return None


def format_generalized_time(moment: datetime) -> str:
    """UTC GeneralizedTime with milliseconds, e.g. `20170828183200.000Z`."""
    if moment.tzinfo is None:
        raise InvalidTimestamp("GeneralizedTime needs a timezone-aware datetime")
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
        f".{moment.microsecond // 1000:03d}Z"
    )


# --- decoding ---------------------------------------------------------------------------


def decode(data: bytes) -> Frame:
    """Decode one BTP packet. Raises only `CodecError`."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < 5:
        raise Truncated("BTP packet shorter than its type and request id")
    kind = data[0]
    request_id = int.from_bytes(data[1:5], "big")
    length, pos = oer.read_length_prefix(data, 5)
    end = pos + length
    if end > len(data):
        raise Truncated(f"BTP packet says {length} content bytes, {len(data) - pos} present")
    if end < len(data):
        raise TrailingBytes(f"{len(data) - end} bytes after the BTP packet")
    # The envelope ends at len(data), so every read below is bounded by it.
    if kind == MessageType.MESSAGE:
        return Message(request_id, _read_protocol_data(data, pos))
    if kind == MessageType.RESPONSE:
        return Response(request_id, _read_protocol_data(data, pos))
    if kind == MessageType.TRANSFER:
        amount_end = pos + 8
        if amount_end > len(data):
            raise Truncated("Transfer shorter than its amount")
        amount = int.from_bytes(data[pos:amount_end], "big")
        return Transfer(request_id, amount, _read_protocol_data(data, amount_end))
    if kind == MessageType.ERROR:
        code_end = pos + ERROR_CODE_LEN
        if code_end > len(data):
            raise Truncated("Error shorter than its code")
        code = _ascii(data[pos:code_end], "error code")
        name, pos = oer.read_var_octets(data, code_end)
        triggered_at, pos = oer.read_var_octets(data, pos)
        error_data, pos = oer.read_var_octets(data, pos)
        return Error(
            request_id,
            code,
            _ascii(name, "error name"),
            _ascii(triggered_at, "triggeredAt"),
            error_data,
            _read_protocol_data(data, pos),
        )
    raise UnknownType(f"unknown BTP packet type {kind}")


def _read_protocol_data(data: bytes, pos: int) -> tuple[ProtocolData, ...]:
    count, pos = oer.read_var_uint(data, pos)
    entries = []
    # Each entry takes at least 3 bytes, so a huge count ends in `Truncated`, not a long loop.
    for _ in range(count):
        name, pos = oer.read_var_octets(data, pos)
        if pos >= len(data):
            raise Truncated("protocol data entry ends before its content type")
        content_type = _CONTENT_TYPES[data[pos]]
        value, pos = oer.read_var_octets(data, pos + 1)
        entries.append(ProtocolData(_ascii(name, "protocol name"), content_type, value))
    return tuple(entries)


def _ascii(raw: bytes, field: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidField(f"{field} is not ASCII") from exc


# --- encoding ---------------------------------------------------------------------------


def encode(frame: Frame) -> bytes:
    match frame:
        case Message(request_id, protocol_data):
            return _envelope(MessageType.MESSAGE, request_id, _protocol_data_bytes(protocol_data))
        case Response(request_id, protocol_data):
            return _envelope(MessageType.RESPONSE, request_id, _protocol_data_bytes(protocol_data))
        case Transfer(request_id, amount, protocol_data):
            if not 0 <= amount <= MAX_AMOUNT:
                raise InvalidField(f"Transfer amount {amount} is not a UInt64")
            content = amount.to_bytes(8, "big") + _protocol_data_bytes(protocol_data)
            return _envelope(MessageType.TRANSFER, request_id, content)
        case Error(request_id, code, name, triggered_at, data, protocol_data):
            code_bytes = _ascii_bytes(code, "error code")
            if len(code_bytes) != ERROR_CODE_LEN:
                raise InvalidField(f"BTP error code must be 3 characters, got {code!r}")
            content = b"".join(
                (
                    code_bytes,
                    oer.encode_var_octets(_ascii_bytes(name, "error name")),
                    oer.encode_var_octets(_ascii_bytes(triggered_at, "triggeredAt")),
                    oer.encode_var_octets(data),
                    _protocol_data_bytes(protocol_data),
                )
            )
            return _envelope(MessageType.ERROR, request_id, content)
    raise TypeError(f"not a BTP frame: {type(frame).__name__}")


def _envelope(kind: MessageType, request_id: int, content: bytes) -> bytes:
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise InvalidField(f"request id {request_id} is not a UInt32")
    return (
        bytes((kind,))
        + request_id.to_bytes(4, "big")
        + oer.encode_length_prefix(len(content))
        + content
    )


def _protocol_data_bytes(protocol_data: Sequence[ProtocolData]) -> bytes:
    parts = [oer.encode_var_uint(len(protocol_data))]
    for entry in protocol_data:
        if not 0 <= entry.content_type <= 255:
            raise InvalidField(f"content type {entry.content_type} is not a UInt8")
        parts.append(oer.encode_var_octets(_ascii_bytes(entry.protocol_name, "protocol name")))
        parts.append(bytes((entry.content_type,)))
        parts.append(oer.encode_var_octets(entry.data))
    return b"".join(parts)


def _ascii_bytes(text: str, field: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidField(f"{field} must be ASCII: {text!r}") from exc


__all__ = [
    "CodecError",
    "ContentType",
    "Error",
    "Frame",
    "Message",
    "MessageType",
    "ProtocolData",
    "Response",
    "Transfer",
    "decode",
    "encode",
    "find",
    "format_generalized_time",
]
