"""Local delivery: the receiver for packets addressed to this node, and the matching sender.

The receiver keeps no per-payment state; it recomputes each fulfillment from the packet. Two
kinds of packet are fulfilled:

Keyed payments, to `<node address>.<tag>` (STREAM's derivation, without STREAM's framing).
The receiver, with secret `S`, hands a sender credentials for a tag out of band (SPSP would;
here the operator or a test does):

    destination   = <node address>.<tag>
    shared_secret = HMAC-SHA256(S, "paychan/receiver/v1" ‖ tag)

and the sender makes each packet as

    data        = 16 random bytes ‖ payload       (unique per packet)
    fulfillment = HMAC-SHA256(shared_secret, data)
    condition   = SHA-256(fulfillment)

Only a holder of the credentials can make a condition the receiver fulfils, and no connector
on the path can fulfil it in the receiver's place.

Test payments, to the bare node address, need no credentials (the admin API's "send a test
payment" to `g.peer5`): `data = "paychan/test-payment/v1" ‖ 16 random bytes` and
`fulfillment = HMAC-SHA256("paychan/test-payment/v1", data)`. Anyone who sees the packet can
compute that fulfillment, a connector on the path included, so a test payment shows that
packets and balances flow end to end, not that the receiver got the money; keep them small.

The router hands the receiver what the routing table resolves to this node (`LOCAL`): its
address and everything under it that no more specific route (a child peer) claims. The
receiver does not hold balances (the balance service before the router does), shorten
expiries, or route; it checks neither amount nor expiry beyond what came before it.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256

from connector.codec import ilp
from connector.errors import UnexpectedPayment, WrongCondition
from connector.services.interface import (
    LOCAL,
    IncomingRequest,
    IncomingService,
    Response,
)

_SECRET_LABEL = b"paychan/receiver/v1"
TEST_PAYMENT_LABEL = b"paychan/test-payment/v1"
NONCE_SIZE = 16


@dataclass(frozen=True, slots=True)
class ReceiverCredentials:
    """What a sender needs to pay one receiver tag. `shared_secret` is a secret: never log it."""

    destination: str
    shared_secret: bytes

    def __repr__(self) -> str:
        return f"ReceiverCredentials(destination={self.destination!r}, shared_secret=***)"


def derive_shared_secret(receiver_secret: bytes, tag: str) -> bytes:
    return hmac.digest(receiver_secret, _SECRET_LABEL + tag.encode(), "sha256")


def receiver_credentials(own_address: str, receiver_secret: bytes, tag: str) -> ReceiverCredentials:
    """The credentials a receiver hands out for `tag` (one or more address segments)."""
    if not tag or tag.startswith(".") or tag.endswith("."):
        raise ValueError("a receiver tag is one or more ILP address segments")
    return ReceiverCredentials(f"{own_address}.{tag}", derive_shared_secret(receiver_secret, tag))


def fulfillment_for(shared_secret: bytes, data: bytes) -> bytes:
    return hmac.digest(shared_secret, data, "sha256")


def _prepare(
    destination: str, amount: int, expires_at: datetime, data: bytes, key: bytes
) -> tuple[ilp.Prepare, bytes]:
    fulfillment = fulfillment_for(key, data)
    prepare = ilp.Prepare(amount, expires_at, sha256(fulfillment).digest(), destination, data)
    return prepare, fulfillment


def make_prepare(
    credentials: ReceiverCredentials,
    amount: int,
    expires_at: datetime,
    payload: bytes = b"",
    nonce: bytes | None = None,
) -> tuple[ilp.Prepare, bytes]:
    """A keyed Prepare the receiver behind `credentials` will fulfil, and that fulfillment."""
    data = (os.urandom(NONCE_SIZE) if nonce is None else nonce) + payload
    return _prepare(credentials.destination, amount, expires_at, data, credentials.shared_secret)


def make_test_prepare(
    node_address: str, amount: int, expires_at: datetime
) -> tuple[ilp.Prepare, bytes]:
    """A test payment to the node at `node_address`, and its fulfillment."""
    data = TEST_PAYMENT_LABEL + os.urandom(NONCE_SIZE)
    return _prepare(node_address, amount, expires_at, data, TEST_PAYMENT_LABEL)


class ReceiverService:
    """Fulfils Prepares for this node that it can derive the fulfillment of; F05/F06 otherwise."""

    __slots__ = ("_own_address", "_secret", "_tag_offset")

    def __init__(self, own_address: str, receiver_secret: bytes) -> None:
        self._own_address = own_address
        self._secret = receiver_secret
        self._tag_offset = len(own_address) + 1

    async def handle_request(self, request: IncomingRequest) -> Response:
        prepare = request.prepare
        destination = prepare.destination
        if destination == self._own_address:
            if not prepare.data.startswith(TEST_PAYMENT_LABEL):
                raise UnexpectedPayment(
                    f"only test payments are received at the node address. destination={destination}"
                )
            key = TEST_PAYMENT_LABEL
        else:
            key = derive_shared_secret(self._secret, destination[self._tag_offset :])
        fulfillment = fulfillment_for(key, prepare.data)
        if sha256(fulfillment).digest() != prepare.execution_condition:
            raise WrongCondition(
                f"receiver cannot fulfill this condition. destination={destination}"
            )
        return ilp.Fulfill(fulfillment, b"")


class Sender:
    """Sends packets this node originates through its own outgoing path.

    `path` is the packet path's entry for this node's own packets (`PacketPath.originate`),
    so they are routed, timed, validated and accounted exactly like forwarded ones.
    """

    __slots__ = ("_path",)

    def __init__(self, path: IncomingService) -> None:
        self._path = path

    async def send(
        self,
        credentials: ReceiverCredentials,
        amount: int,
        expires_at: datetime,
        payload: bytes = b"",
    ) -> Response:
        """A keyed payment to the receiver behind `credentials`."""
        prepare, _ = make_prepare(credentials, amount, expires_at, payload)
        return await self.send_prepare(prepare)

    async def send_test_payment(
        self, node_address: str, amount: int, expires_at: datetime
    ) -> Response:
        prepare, _ = make_test_prepare(node_address, amount, expires_at)
        return await self.send_prepare(prepare)

    async def send_prepare(self, prepare: ilp.Prepare) -> Response:
        """Any Prepare, e.g. one whose condition came from elsewhere."""
        return await self._path.handle_request(IncomingRequest(LOCAL, prepare, ilp.encode(prepare)))
