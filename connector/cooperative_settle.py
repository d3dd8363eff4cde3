"""Cooperative settle over BTP: both participants sign the channel's final balances, then one
`cooperativeSettle` transaction pays them out at once (no close, no settle window).

    requester (its channel workflow is CLOSING, cooperative)           partner's connector
    signs the balances (chain activity)
    Message  payment-channel-cooperative-settle  {proposal}   ─────▶   checks: our chain and
                                                                        contract; the pair is us
                                                                        and this peer; signed by
                                                                        the peer; the pair's open
                                                                        channel; the balances add
                                                                        up to what it holds; ours
                                                                        is at least what our own
                                                                        claims leave us
                                                                        → stops claims on it, signs
    Response payment-channel-cooperative-settle  {acceptance} ◀─────   (or a BTP Error: refused)
    checks the partner's signature; its workflow sends cooperativeSettle. Any refusal, a
    down link or silence: the workflow closes unilaterally instead.

The partner answers with its treasury key straight from the connector process (the same key
that signs its claims), not through its workflow: signing is all it does, the requester sends
the transaction, and the partner's own keeper records the settlement when it next reads the
channel. Signing balances that favour us is safe: the contract pays exactly what the channel
holds, and our share is checked against our own claim store first.

JSON (uint256 as decimal strings, as in `payment-channel-claim`):

    proposal   {version, chainId, tokenNetwork, channelId, participant1, participant1Balance,
                participant2, participant2Balance, signature}   participant1 = lower address
    acceptance {channelId, signature}
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import structlog
from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from activities import token_network as tn
from activities.balance_proof import (
    Address,
    Bytes32,
    CooperativeSettle,
    InvalidSignature,
    recover,
    sign_cooperative_settle,
)
from activities.connector import ClaimReader
from activities.token_network import ChannelState
from connector.btp.errors import BtpRefused, LinkError
from connector.btp.protocol import BtpErrorCode
from connector.channels import ChannelRegistry
from connector.claims import SignatureHex, WireUint256
from connector.codec.btp import ContentType, ProtocolData
from connector.config import NodeConfig
from worker.run import ChainContext
from workflows.messages import CooperativeSettleAnswer, CooperativeSettleRequest

log = structlog.get_logger(__name__)

PROTOCOL_NAME = "payment-channel-cooperative-settle"
VERSION = 1
# The partner has this long to answer one proposal (the workflow's activity allows 30 s).
ANSWER_TIMEOUT = 20.0


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class CooperativeSettleProposal(_Wire):
    version: Literal[1] = VERSION
    chain_id: int = Field(gt=0)
    token_network: Address
    channel_id: Bytes32
    participant1: Address
    participant1_balance: WireUint256
    participant2: Address
    participant2_balance: WireUint256
    signature: SignatureHex

    def settlement(self) -> CooperativeSettle:
        return CooperativeSettle(
            channel_id=self.channel_id,
            participant1=self.participant1,
            participant1_balance=self.participant1_balance,
            participant2=self.participant2,
            participant2_balance=self.participant2_balance,
        )

    def balance_of(self, address: str) -> int:
        address = to_checksum_address(address)
        return (
            self.participant1_balance if address == self.participant1 else self.participant2_balance
        )


class CooperativeSettleAcceptance(_Wire):
    channel_id: Bytes32
    signature: SignatureHex


class PeerLinks(Protocol):
    """What the service needs of `ConnectorNode`."""

    config: NodeConfig

    @property
    def links(self) -> dict: ...

    def register_message_handler(self, protocol_name: str, handler: Callable) -> None: ...


class CooperativeSettleService:
    """Both ends of the exchange in one connector. `register` before the node starts; set
    `claims` once the claim store is open (until then proposals are answered T00)."""

    def __init__(
        self,
        node: PeerLinks,
        registry: ChannelRegistry,
        chain_ready: Callable[[], Awaitable[ChainContext]],
        claims: ClaimReader | None = None,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._node = node
        self._registry = registry
        self._chain_ready = chain_ready
        self.claims = claims
        self._answer_timeout = answer_timeout

    def register(self) -> None:
        self._node.register_message_handler(PROTOCOL_NAME, self.handle_proposal)

    # --- asking (the connector activity `request_cooperative_settle`) ----------------------

    async def request(self, request: CooperativeSettleRequest) -> CooperativeSettleAnswer:
        """Send our signed proposal to the peer; its signature, checked, or why there is none."""
        chain = await self._chain_ready()
        deployment = chain.deployment
        settlement = CooperativeSettle.between(
            request.channel_id,
            {request.our_address: request.our_balance, request.peer_address: request.their_balance},
        )
        proposal = CooperativeSettleProposal(
            chain_id=deployment.chain_id,
            token_network=deployment.token_network,
            signature=request.our_signature,
            **settlement.model_dump(),
        )
        link = self._node.links.get(request.peer_id)
        if link is None or not link.is_open:
            return self._refused(request, f"no BTP link to {request.peer_id}")
        try:
            reply = await link.send_message(
                (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, proposal.to_json()),),
                self._answer_timeout,
            )
            acceptance = CooperativeSettleAcceptance.model_validate_json(reply[0].data)
        except LinkError as err:
            return self._refused(request, str(err))
        except (ValidationError, IndexError) as err:
            return self._refused(request, f"unreadable answer: {err}")
        try:
            signer = recover(
                settlement,
                bytes.fromhex(acceptance.signature[2:]),
                deployment.chain_id,
                deployment.token_network,
            )
        except InvalidSignature as err:
            return self._refused(request, f"invalid signature: {err}")
        if signer != to_checksum_address(request.peer_address):
            return self._refused(request, f"signed by {signer}, not by {request.peer_address}")
        log.info(
            "COOPERATIVE_SETTLE_SIGNED",
            peerId=request.peer_id,
            channelId=request.channel_id,
            ourBalance=str(request.our_balance),
            theirBalance=str(request.their_balance),
        )
        return CooperativeSettleAnswer(their_signature=acceptance.signature)

    @staticmethod
    def _refused(request: CooperativeSettleRequest, reason: str) -> CooperativeSettleAnswer:
        log.warning(
            "COOPERATIVE_SETTLE_REFUSED",
            peerId=request.peer_id,
            channelId=request.channel_id,
            reason=reason,
        )
        return CooperativeSettleAnswer(refused=reason)

    # --- answering (the BTP Message handler) ------------------------------------------------

    async def handle_proposal(
        self, peer_id: str, protocol_data: tuple[ProtocolData, ...]
    ) -> tuple[ProtocolData, ...]:
        """Check the peer's proposal against the chain and our claims; sign it or refuse."""
        try:
            proposal = CooperativeSettleProposal.model_validate_json(protocol_data[0].data)
        except ValidationError as err:
            raise BtpRefused(
                BtpErrorCode.F01_INVALID_FIELDS, f"unreadable proposal: {err}"
            ) from None
        claims = self.claims
        if claims is None:
            raise BtpRefused(BtpErrorCode.T00_UNREACHABLE, "claims are not loaded yet")
        try:
            chain = await asyncio.wait_for(self._chain_ready(), self._answer_timeout / 2)
        except TimeoutError:
            raise BtpRefused(BtpErrorCode.T00_UNREACHABLE, "chain not connected yet") from None
        reason = await self._check(peer_id, proposal, chain, claims)
        if reason is not None:
            log.warning(
                "COOPERATIVE_SETTLE_DECLINED",
                peerId=peer_id,
                channelId=proposal.channel_id,
                reason=reason,
            )
            raise BtpRefused(BtpErrorCode.F00_NOT_ACCEPTED, reason)
        # From here on no claim may move value the settlement would not pay. Held until our
        # keeper reads it settled, or still open long after (ChannelRegistry): the proposer
        # may never send it.
        self._registry.hold_for_cooperative_settle(peer_id, proposal.channel_id)
        deployment = chain.deployment
        signature = sign_cooperative_settle(
            bytes(chain.account.key),
            proposal.settlement(),
            deployment.chain_id,
            deployment.token_network,
        )
        log.info(
            "COOPERATIVE_SETTLE_ACCEPTED",
            peerId=peer_id,
            channelId=proposal.channel_id,
            ourBalance=str(proposal.balance_of(chain.account.address)),
        )
        acceptance = CooperativeSettleAcceptance(
            channel_id=proposal.channel_id, signature="0x" + signature.hex()
        )
        return (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, acceptance.to_json()),)

    async def _check(
        self,
        peer_id: str,
        proposal: CooperativeSettleProposal,
        chain: ChainContext,
        claims: ClaimReader,
    ) -> str | None:
        """Why we will not sign, or None."""
        deployment, ours = chain.deployment, chain.account.address
        if proposal.chain_id != deployment.chain_id:
            return f"chainId {proposal.chain_id}, expected {deployment.chain_id}"
        if proposal.token_network != to_checksum_address(deployment.token_network):
            return f"tokenNetwork {proposal.token_network}, expected {deployment.token_network}"
        partner = self._node.config.peer(peer_id).evm_address
        if partner is None:
            return "no evmAddress is configured for this peer"
        partner = to_checksum_address(partner)
        if {proposal.participant1, proposal.participant2} != {ours, partner}:
            return f"the channel is not between {ours} and {partner}"
        try:
            signer = recover(
                proposal.settlement(),
                bytes.fromhex(proposal.signature[2:]),
                deployment.chain_id,
                deployment.token_network,
            )
        except InvalidSignature as err:
            return f"invalid signature: {err}"
        if signer != partner:
            return f"signed by {signer}, not by the peer's address {partner}"
        w3, channel_id = chain.web3, proposal.channel_id
        current, info = await asyncio.gather(
            tn.get_channel_id(w3, deployment, ours, partner),
            tn.get_channel(w3, deployment, channel_id),
        )
        if current is None or current.lower() != channel_id.lower():
            return f"{channel_id} is not the pair's channel"
        if info.state is not ChannelState.OPENED:
            return f"channel {channel_id} is {info.state.name}, not open"
        our_side, their_side = await asyncio.gather(
            tn.get_participant(w3, deployment, channel_id, ours),
            tn.get_participant(w3, deployment, channel_id, partner),
        )
        holds = our_side.deposit + their_side.deposit - our_side.withdrawn - their_side.withdrawn
        if proposal.participant1_balance + proposal.participant2_balance != holds:
            return f"balances do not add up to the {holds} the channel holds"
        sent = claims.latest_sent(peer_id, channel_id)
        received = claims.best_received(peer_id, channel_id)
        owed = (
            our_side.deposit
            - our_side.withdrawn
            - (sent.claim.transferred_amount if sent else 0)
            + (received.claim.transferred_amount if received else 0)
        )
        offered = proposal.balance_of(ours)
        if offered < owed:
            return f"our balance {offered} is below the {owed} our claims leave us"
        return None
