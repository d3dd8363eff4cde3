"""to_reject: the one mapping from exceptions to Reject packets."""

from __future__ import annotations

import pytest

from connector import errors
from connector.codec import ilp
from connector.codec.errors import InvalidAddress, Truncated

OWN = "g.node"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.BadRequest("x"), "F00"),
        (errors.InvalidPacket("x"), "F01"),
        (errors.Unreachable("x"), "F02"),
        (errors.InvalidAmount("x"), "F03"),
        (errors.WrongCondition("x"), "F05"),
        (errors.UnexpectedPayment("x"), "F06"),
        (errors.InternalError("x"), "T00"),
        (errors.PeerUnreachable("x"), "T01"),
        (errors.PeerBusy("x"), "T02"),
        (errors.InsufficientLiquidity("x"), "T04"),
        (errors.TransferTimedOut("x"), "R00"),
        (errors.InsufficientSourceAmount("x"), "R01"),
        (errors.InsufficientTimeout("x"), "R02"),
    ],
)
def test_ilp_errors_keep_their_code_and_message(exc: errors.IlpError, code: str) -> None:
    reject = errors.to_reject(exc, OWN)
    assert reject == ilp.Reject(code, OWN, "x", b"")
    assert ilp.decode(ilp.encode(reject)) == reject


def test_amount_too_large_carries_f08_data() -> None:
    exc = errors.AmountTooLarge(
        "packet size too large. maxAmount=1000000 actualAmount=1000001",
        received=1_000_001,
        maximum=1_000_000,
    )
    reject = errors.to_reject(exc, "test.conn")
    # Byte-for-byte what ilp-connector@23.0.2 sent (vectors/captured/btp-wire-session.json).
    assert ilp.encode(reject).hex() == (
        "0e5c46303809746573742e636f6e6e3d7061636b65742073697a6520746f6f206c617267652e206d6178"
        "416d6f756e743d313030303030302061637475616c416d6f756e743d313030303030311000000000000f"
        "424100000000000f4240"
    )


def test_codec_error_is_f01() -> None:
    reject = errors.to_reject(Truncated("Prepare shorter than its fixed fields"), OWN)
    assert (reject.code, reject.triggered_by) == ("F01", OWN)
    assert "shorter" in reject.message


def test_invalid_destination_is_f00_as_ilp_connector_says() -> None:
    reject = errors.to_reject(InvalidAddress("bad"), "test.conn")
    assert reject == ilp.Reject("F00", "test.conn", "Packet has invalid destination address", b"")


def test_anything_else_is_t00_without_leaking_details() -> None:
    reject = errors.to_reject(KeyError("secret-ish detail"), OWN)
    assert reject == ilp.Reject("T00", OWN, "internal error.", b"")
