"""PeerService: the end of the outgoing path; sends the Prepare over the next hop's BTP link.

The Prepare goes out as the bytes it arrived as, with only amount and expiry patched
(`ilp.encode_prepare_forward`). Failures to get an answer become ILP errors, with
ilp-connector's messages: no link or a closed link → T01 ("no connection to account.
account=…"); no answer before the expiry → R00; a BTP Error in reply → F02 ("failed to send
packet: …"); a reply that is not a Fulfill or Reject → F01. A Reject from the next hop is
returned as it came, `triggered_by` and all.

It does not shorten expiries or start the R00 clock (`expiry.py`), check the fulfillment
(`validator.py`), or touch balances.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from connector.btp.errors import BtpRefused, InvalidResponse, LinkDown, LinkTimeout
from connector.codec import ilp
from connector.codec.errors import CodecError
from connector.errors import InvalidPacket, PeerUnreachable, TransferTimedOut, Unreachable
from connector.services.interface import Clock, OutgoingRequest, Response


class Link(Protocol):
    """What the packet path needs of a BTP link (`connector.btp` links satisfy it)."""

    @property
    def is_open(self) -> bool: ...

    async def send_ilp(self, packet: bytes, timeout: float) -> bytes: ...


class PeerService:
    __slots__ = ("_clock", "_links")

    def __init__(self, links: Mapping[str, Link], clock: Clock) -> None:
        # A live view: the node adds and removes links as peers connect and disconnect.
        self._links = links
        self._clock = clock

    async def send_request(self, request: OutgoingRequest) -> Response:
        peer = request.to_peer
        link = self._links.get(peer)
        if link is None or not link.is_open:
            raise PeerUnreachable(f"no connection to account. account={peer}")
        packet = ilp.encode_prepare_forward(request.raw, request.amount, request.expires_at)
        timeout = (request.expires_at - self._clock()).total_seconds()
        try:
            reply = await link.send_ilp(packet, timeout)
        except LinkDown:
            raise PeerUnreachable(f"no connection to account. account={peer}") from None
        except LinkTimeout:
            raise TransferTimedOut("packet expired.") from None
        except BtpRefused as exc:
            raise Unreachable(f"failed to send packet: {exc.code}: {exc.message}") from None
        except InvalidResponse:
            raise InvalidPacket(f"peer answered without an ILP packet. account={peer}") from None
        try:
            return ilp.decode_fulfill_or_reject(reply)
        except CodecError as exc:
            raise InvalidPacket(f"invalid ILP reply from peer. account={peer}: {exc}") from None
