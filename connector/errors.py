"""ILP errors raised on the packet path, and the one place they become Reject packets.

Services `raise` one of these; the outermost service (`services.reject.RejectService`) hands
whatever came out of the chain to `to_reject`, which is the only code turning an exception into
an ILP Reject. Rejects received from the next hop are *values*, never exceptions: they pass
through unchanged.

    Exception
     └── IlpError                      code: ErrorCode (RFC 0027)
          ├── BadRequest               F00
          ├── InvalidPacket            F01
          ├── Unreachable              F02
          ├── InvalidAmount            F03
          ├── WrongCondition           F05
          ├── UnexpectedPayment        F06
          ├── AmountTooLarge           F08  (data: UInt64BE received ‖ UInt64BE maximum)
          ├── InternalError            T00
          ├── PeerUnreachable          T01
          ├── PeerBusy                 T02
          ├── ConnectorBusy            T03
          ├── InsufficientLiquidity    T04
          ├── TransferTimedOut         R00
          ├── InsufficientSourceAmount R01
          └── InsufficientTimeout      R02

Codec failures (`connector.codec.errors.CodecError`) are not in this tree: the codecs know
nothing of ILP codes, so `to_reject` maps them to F01, except an invalid destination address,
which ilp-connector answers with F00 "Packet has invalid destination address" (captured).
"""

from __future__ import annotations

from typing import ClassVar

import structlog

from connector.codec import ilp
from connector.codec.errors import CodecError, InvalidAddress

log = structlog.get_logger(__name__)

ErrorCode = ilp.ErrorCode


class IlpError(Exception):
    """A failure that the packet path answers with an ILP Reject carrying `code`."""

    code: ClassVar[ErrorCode] = ErrorCode("F00")

    def __init__(self, message: str, *, data: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class BadRequest(IlpError):
    code = ErrorCode("F00")


class InvalidPacket(IlpError):
    code = ErrorCode("F01")


class Unreachable(IlpError):
    code = ErrorCode("F02")


class InvalidAmount(IlpError):
    code = ErrorCode("F03")


class WrongCondition(IlpError):
    code = ErrorCode("F05")


class UnexpectedPayment(IlpError):
    code = ErrorCode("F06")


class AmountTooLarge(IlpError):
    """F08; the Reject's data tells the sender how much lower to go (RFC 0027 error data)."""

    code = ErrorCode("F08")

    def __init__(self, message: str, *, received: int, maximum: int) -> None:
        super().__init__(message, data=ilp.f08_data(received, maximum))
        self.received = received
        self.maximum = maximum


class InternalError(IlpError):
    code = ErrorCode("T00")


class PeerUnreachable(IlpError):
    code = ErrorCode("T01")


class PeerBusy(IlpError):
    code = ErrorCode("T02")


class ConnectorBusy(IlpError):
    """T03: this node sheds load (`services.in_flight`); the sender may try again later."""

    code = ErrorCode("T03")


class InsufficientLiquidity(IlpError):
    code = ErrorCode("T04")


class TransferTimedOut(IlpError):
    code = ErrorCode("R00")


class InsufficientSourceAmount(IlpError):
    code = ErrorCode("R01")


class InsufficientTimeout(IlpError):
    code = ErrorCode("R02")


# Not an ILP detail: a bug or an unforeseen failure. The sender learns only that it was internal;
# the traceback goes to our log.
_INTERNAL_MESSAGE = "internal error."


def to_reject(exc: BaseException, own_address: str) -> ilp.Reject:
    """Turn an exception raised on the packet path into the Reject this node answers with.

    `IlpError` → its own code, message and data; `CodecError` → F01 (an invalid address: F00,
    as ilp-connector); anything else → T00 with the traceback logged. `triggered_by` is always this node: we created the error.
    """
    if isinstance(exc, IlpError):
        return ilp.Reject(exc.code, own_address, exc.message, exc.data)
    if isinstance(exc, InvalidAddress):
        return ilp.Reject(
            ErrorCode("F00"), own_address, "Packet has invalid destination address", b""
        )
    if isinstance(exc, CodecError):
        return ilp.Reject(ErrorCode("F01"), own_address, f"invalid packet: {exc}", b"")
    log.error("PACKET_PATH_INTERNAL_ERROR", error=repr(exc), exc_info=exc)
    return ilp.Reject(ErrorCode("T00"), own_address, _INTERNAL_MESSAGE, b"")
