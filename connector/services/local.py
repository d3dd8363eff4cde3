"""Local delivery: the receiver for packets addressed to this node, and the matching sender.

How conditions are made (STREAM's derivation, without STREAM's framing). A receiver with secret
`S` hands out credentials for a tag, out of band (SPSP would; here the operator or a test does):

    destination   = <node address>.<tag>          (the bare node address is the empty tag)
    shared_secret = HMAC-SHA256(S, "paychan/receiver/v1" ‖ tag)

A sender holding them makes each packet as

    data        = 16 random bytes ‖ payload       (unique per packet)
    fulfillment = HMAC-SHA256(shared_secret, data)
    condition   = SHA-256(fulfillment)

and the receiver, which keeps no per-payment state, recomputes the shared secret from the tag in
the destination and the fulfillment from the data. Only a holder of the credentials can make a
condition the receiver fulfils, and no connector on the path can fulfil it in its place.

`LocalDeliveryService` sends packets for this node's address to the `ReceiverService` and
everything else on. They do not hold balances (the balance service before them does), shorten
expiries, or route; the receiver checks neither amount nor expiry beyond what came before it.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256

from connector.codec import ilp
from connector.errors import WrongCondition
from connector.services.interface import (
    LOCAL_ORIGIN,
    IncomingRequest,
    IncomingService,
    Response,
)

_SECRET_LABEL = b"paychan/receiver/v1"
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


def receiver_credentials(
    own_address: str, receiver_secret: bytes, tag: str = ""
) -> ReceiverCredentials:
    """The credentials a receiver hands out for `tag` (empty: the node's own address)."""
    destination = f"{own_address}.{tag}" if tag else own_address
    return ReceiverCredentials(destination, derive_shared_secret(receiver_secret, tag))


def fulfillment_for(shared_secret: bytes, data: bytes) -> bytes:
    return hmac.digest(shared_secret, data, "sha256")


def make_prepare(
    credentials: ReceiverCredentials,
    amount: int,
    expires_at: datetime,
    payload: bytes = b"",
    nonce: bytes | None = None,
) -> tuple[ilp.Prepare, bytes]:
    """A Prepare the receiver behind `credentials` will fulfil, and that fulfillment."""
    data = (os.urandom(NONCE_SIZE) if nonce is None else nonce) + payload
    fulfillment = fulfillment_for(credentials.shared_secret, data)
    prepare = ilp.Prepare(
        amount, expires_at, sha256(fulfillment).digest(), credentials.destination, data
    )
    return prepare, fulfillment


def is_local_destination(own_address: str, destination: str) -> bool:
    return destination == own_address or (
        destination.startswith(own_address) and destination[len(own_address)] == "."
    )


class ReceiverService:
    """Fulfils Prepares addressed to this node whose condition it can derive; F05 otherwise."""

    __slots__ = ("_own_address", "_secret", "_tag_offset")

    def __init__(self, own_address: str, receiver_secret: bytes) -> None:
        self._own_address = own_address
        self._secret = receiver_secret
        self._tag_offset = len(own_address) + 1

    async def handle_request(self, request: IncomingRequest) -> Response:
        prepare = request.prepare
        tag = prepare.destination[self._tag_offset :]
        fulfillment = fulfillment_for(derive_shared_secret(self._secret, tag), prepare.data)
        if sha256(fulfillment).digest() != prepare.execution_condition:
            raise WrongCondition(
                f"receiver cannot fulfill this condition. destination={prepare.destination}"
            )
        return ilp.Fulfill(fulfillment, b"")


class LocalDeliveryService:
    """Packets for this node's address go to `receiver`; all others to `next_service`."""

    __slots__ = ("_next", "_own_address", "_receiver")

    def __init__(
        self, own_address: str, receiver: IncomingService, next_service: IncomingService
    ) -> None:
        self._own_address = own_address
        self._receiver = receiver
        self._next = next_service

    async def handle_request(self, request: IncomingRequest) -> Response:
        if is_local_destination(self._own_address, request.prepare.destination):
            return await self._receiver.handle_request(request)
        return await self._next.handle_request(request)


class Sender:
    """Sends packets this node originates through its own outgoing path.

    `path` is the packet path's entry for local packets (`PacketPath.originate`), so a sender's
    packets are routed, timed and validated exactly like forwarded ones.
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
        prepare, _ = make_prepare(credentials, amount, expires_at, payload)
        return await self._path.handle_request(
            IncomingRequest(LOCAL_ORIGIN, prepare, ilp.encode(prepare))
        )
