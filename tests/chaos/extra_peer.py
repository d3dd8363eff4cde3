"""ExtraPeer: a lightweight BTP peer of one node, for the chaos soak.

It is the cheapest peer that still makes its node provision a real channel: a wallet address
of its own (the node's config names it, so the node's channel workflow opens a channel to it
and deposits the node's side on-chain), and a BTP client that authenticates to the node. It
does what a paid peer must:

- fulfils test payments addressed to it (`g.<id>`, `connector/services/local.py`);
- receives the node's claims (`payment-channel-claim`): checks them as a connector does
  without a chain read (`connector.claims.check_claim`: our chain and contract, the node's
  signature, nonce above the last, amount not below it), keeps the accepted ones and
  acknowledges; the very claim already accepted is acknowledged again and not kept twice.

It holds no ledger and signs nothing; it deposits nothing (its side of the channel stays 0).
`connect()` / `disconnect()` bring its link up and down; each connect is a `peer_connected`
for the node.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from hashlib import sha256

from eth_account import Account
from eth_account.signers.local import LocalAccount

from connector.btp.client import BtpClient
from connector.btp.errors import BtpRefused
from connector.btp.protocol import BtpErrorCode
from connector.claims import (
    PROTOCOL_NAME,
    Claim,
    ClaimAck,
    ClaimDomain,
    InvalidClaim,
    check_claim,
    is_replay,
)
from connector.codec import ilp
from connector.codec.btp import ContentType, ProtocolData
from connector.services.local import TEST_PAYMENT_LABEL


@dataclass(frozen=True)
class AcceptedClaim:
    """A claim the peer accepted, and what it added to the one before it on its channel."""

    claim: Claim
    amount: int


class ExtraPeer:
    def __init__(
        self,
        peer_id: str,
        *,
        node_id: str,
        node_url: str,
        node_address: str,
        auth_token: str,
        domain: ClaimDomain,
        account: LocalAccount | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.ilp_address = f"g.{peer_id}"
        self.account = account or Account.create()
        self._node_address = node_address
        self._domain = domain
        self._client = BtpClient(
            node_url,
            node_id,
            peer_id,
            auth_token,
            self,
            # A restarted node is back within seconds: do not wait out a long backoff.
            max_backoff=1.0,
        )
        self._connected = False
        self.accepted: list[AcceptedClaim] = []
        self.replays = 0
        self.refused: list[str] = []
        self.fulfilled = 0

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def wants_link(self) -> bool:
        """Whether the peer is meant to be connected (its client reconnects until it is)."""
        return self._connected

    @property
    def is_linked(self) -> bool:
        return self._client.link is not None

    async def connect(self) -> None:
        if not self._connected:
            self._connected = True
            await self._client.start()

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            await self._client.stop()

    # --- PeerHandler -----------------------------------------------------------------------

    async def handle_ilp(self, peer_id: str, packet: bytes) -> bytes:
        try:
            prepare = ilp.decode_prepare(packet)
        except ilp.CodecError:
            return self._reject(ilp.ErrorCode.F01_INVALID_PACKET, "unreadable prepare")
        if prepare.destination != self.ilp_address or not prepare.data.startswith(
            TEST_PAYMENT_LABEL
        ):
            return self._reject(ilp.ErrorCode.F02_UNREACHABLE, "only test payments to this peer")
        fulfillment = hmac.digest(TEST_PAYMENT_LABEL, prepare.data, "sha256")
        if sha256(fulfillment).digest() != prepare.execution_condition:
            return self._reject(ilp.ErrorCode.F05_WRONG_CONDITION, "condition does not match")
        self.fulfilled += 1
        return ilp.encode(ilp.Fulfill(fulfillment, b""))

    async def handle_message(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        if not protocol_data or protocol_data[0].protocol_name != PROTOCOL_NAME:
            raise BtpRefused(BtpErrorCode.F00_NOT_ACCEPTED, "only claims are taken")
        try:
            claim = Claim.from_json(protocol_data[0].data)
        except InvalidClaim as exc:
            raise BtpRefused(BtpErrorCode.F01_INVALID_FIELDS, str(exc)) from None
        last = self.best(claim.channel_id)
        if is_replay(claim, last.claim if last else None):
            self.replays += 1
            return _ack(claim)
        refusal = check_claim(
            claim,
            domain=self._domain,
            partner=self._node_address,
            last=last.claim if last else None,
        )
        if refusal is not None:
            self.refused.append(f"{refusal.reason}: {refusal.message}")
            raise BtpRefused(refusal.btp_code, refusal.message)
        previous = last.claim.transferred_amount if last else 0
        self.accepted.append(AcceptedClaim(claim, claim.transferred_amount - previous))
        return _ack(claim)

    def _reject(self, code: str, message: str) -> bytes:
        return ilp.encode(ilp.Reject(code, self.ilp_address, message, b""))

    def best(self, channel_id: str) -> AcceptedClaim | None:
        on_channel = [a for a in self.accepted if a.claim.channel_id == channel_id]
        return max(on_channel, key=lambda a: a.claim.nonce, default=None)


def _ack(claim: Claim) -> tuple[ProtocolData, ...]:
    ack = ClaimAck(channel_id=claim.channel_id, nonce=claim.nonce)
    return (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, ack.to_json()),)


async def stop_all(peers: list[ExtraPeer]) -> None:
    await asyncio.gather(*(peer.disconnect() for peer in peers))
