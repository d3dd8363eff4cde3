"""Settlement claims: the `payment-channel-claim` BTP protocol data, its signing and the
receiver's checks.

A claim is the TokenNetwork's EIP-712 `BalanceProof` signed by the payer, as JSON
(DESIGN §6; uint256 values as decimal strings, since they outgrow a JavaScript number):

    {"version": 1, "blockchain": "evm", "chainId": 31337, "tokenNetwork": "0x…",
     "channelId": "0x…", "nonce": "3", "transferredAmount": "3000000", "lockedAmount": "0",
     "locksRoot": "0x00…", "signature": "0x…(65 bytes)", "signerAddress": "0x…"}

`transferredAmount` is cumulative over the channel and `nonce` grows by one per claim, so the
latest claim the receiver holds is all it needs to close: the chain pays out that amount.
The receiver acknowledges with a `ClaimAck` under the same protocol name.

The receiver's rules (`check_claim`, then `check_against_channel` with facts read from the
chain): the claim is for our chain and TokenNetwork, signed by the peer's configured address,
its nonce above the last accepted, its amount not below the last accepted and within what the
partner can pay on-chain. A claim that fails one is refused and changes nothing.

Pure: no I/O. Signatures are made and recovered by `activities.balance_proof`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Literal

from eth_utils import to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from activities.balance_proof import (
    ZERO_BYTES32,
    Address,
    BalanceProof,
    Bytes32,
    InvalidSignature,
    recover_signer,
    sign_balance_proof,
)

PROTOCOL_NAME = "payment-channel-claim"
CLAIM_VERSION = 1
_UINT256_MAX = 2**256 - 1

# A uint256 that reads from a JSON number or decimal string and writes a decimal string.
WireUint256 = Annotated[
    int, Field(ge=0, le=_UINT256_MAX), PlainSerializer(str, return_type=str, when_used="json")
]


def _signature_hex(value: str) -> str:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 65:
        raise ValueError(f"a signature is 65 bytes, got {len(raw)}")
    return "0x" + raw.hex()


SignatureHex = Annotated[str, AfterValidator(_signature_hex)]


class InvalidClaim(ValueError):
    """The protocol data is not a readable claim (JSON, fields, types)."""


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class Claim(_Wire):
    version: Literal[1] = CLAIM_VERSION
    blockchain: Literal["evm"] = "evm"
    chain_id: int = Field(gt=0)
    token_network: Address
    channel_id: Bytes32
    nonce: WireUint256
    transferred_amount: WireUint256
    locked_amount: WireUint256 = 0
    locks_root: Bytes32 = ZERO_BYTES32
    signature: SignatureHex
    signer_address: Address

    @classmethod
    def from_json(cls, data: bytes) -> Claim:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidClaim(_first_error(exc)) from None

    def balance_proof(self) -> BalanceProof:
        """The signed message, as the contract's closeChannel / update take it."""
        return BalanceProof(
            channel_id=self.channel_id,
            nonce=self.nonce,
            transferred_amount=self.transferred_amount,
            locked_amount=self.locked_amount,
            locks_root=self.locks_root,
        )

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature[2:])


class ClaimAck(_Wire):
    """The receiver's answer: this claim is stored and credited."""

    accepted: Literal[True] = True
    channel_id: Bytes32
    nonce: WireUint256

    @classmethod
    def from_json(cls, data: bytes) -> ClaimAck:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidClaim(_first_error(exc)) from None

    def acknowledges(self, claim: Claim) -> bool:
        return self.channel_id == claim.channel_id and self.nonce == claim.nonce


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "claim"
    return f"{where}: {error['msg']}"


@dataclass(frozen=True, slots=True)
class ClaimDomain:
    """The chain and TokenNetwork this node settles on; every claim names both."""

    chain_id: int
    token_network: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_network", to_checksum_address(self.token_network))


class ClaimSigner:
    """Signs claims with the node's treasury key. The key never appears in a repr or log."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes, address: str) -> None:
        self._key = private_key
        self.address = to_checksum_address(address)

    def __repr__(self) -> str:
        return f"ClaimSigner(address={self.address!r})"

    def sign(
        self, domain: ClaimDomain, channel_id: str, nonce: int, transferred_amount: int
    ) -> Claim:
        proof = BalanceProof(
            channel_id=channel_id, nonce=nonce, transferred_amount=transferred_amount
        )
        signature = sign_balance_proof(self._key, proof, domain.chain_id, domain.token_network)
        return Claim(
            chain_id=domain.chain_id,
            token_network=domain.token_network,
            channel_id=proof.channel_id,
            nonce=nonce,
            transferred_amount=transferred_amount,
            signature="0x" + signature.hex(),
            signer_address=self.address,
        )


# --- the receiver's checks ------------------------------------------------------------------


class RefusalReason(enum.StrEnum):
    MALFORMED = "malformed"
    NO_PARTNER_ADDRESS = "no_partner_address"
    WRONG_CHAIN = "wrong_chain"
    WRONG_CONTRACT = "wrong_contract"
    LOCKED_AMOUNT = "locked_amount"
    BAD_SIGNATURE = "bad_signature"
    NOT_PARTNER = "not_partner"
    STALE_NONCE = "stale_nonce"
    AMOUNT_DECREASED = "amount_decreased"
    UNKNOWN_CHANNEL = "unknown_channel"
    NOT_OUR_CHANNEL = "not_our_channel"
    CHANNEL_NOT_OPEN = "channel_not_open"
    CHANNEL_CLOSING = "channel_closing"
    ABOVE_DEPOSIT = "above_deposit"


# Depend on what the chain says now: worth one fresh read before refusing.
CHAIN_DEPENDENT = frozenset({RefusalReason.CHANNEL_NOT_OPEN, RefusalReason.ABOVE_DEPOSIT})


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    message: str

    @property
    def btp_code(self) -> str:
        """F01 for a claim we cannot read, F00 for one we read and do not accept."""
        return "F01" if self.reason is RefusalReason.MALFORMED else "F00"


@dataclass(frozen=True, slots=True)
class ChannelSide:
    deposit: int
    withdrawn: int


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """A channel as the chain shows it (activities.token_network views)."""

    channel_id: str
    exists: bool
    is_open: bool
    participants: tuple[str, str]
    sides: dict[str, ChannelSide]

    def side(self, address: str) -> ChannelSide:
        return self.sides.get(to_checksum_address(address), ChannelSide(0, 0))


def check_claim(
    claim: Claim, *, domain: ClaimDomain, partner: str | None, last: Claim | None
) -> Refusal | None:
    """The checks that need no chain read; `last` is the last claim accepted on the channel."""
    if partner is None:
        return Refusal(
            RefusalReason.NO_PARTNER_ADDRESS, "no evmAddress is configured for this peer"
        )
    if claim.chain_id != domain.chain_id:
        return Refusal(
            RefusalReason.WRONG_CHAIN, f"chainId {claim.chain_id}, expected {domain.chain_id}"
        )
    if claim.token_network != domain.token_network:
        return Refusal(
            RefusalReason.WRONG_CONTRACT,
            f"tokenNetwork {claim.token_network}, expected {domain.token_network}",
        )
    if claim.locked_amount != 0 or claim.locks_root != ZERO_BYTES32:
        return Refusal(RefusalReason.LOCKED_AMOUNT, "locked amounts are not supported")
    try:
        signer = recover_signer(
            claim.balance_proof(), claim.signature_bytes, domain.chain_id, domain.token_network
        )
    except InvalidSignature as exc:
        return Refusal(RefusalReason.BAD_SIGNATURE, f"invalid signature: {exc}")
    if signer != claim.signer_address:
        return Refusal(
            RefusalReason.BAD_SIGNATURE,
            f"signature recovers to {signer}, not signerAddress {claim.signer_address}",
        )
    if signer != to_checksum_address(partner):
        return Refusal(
            RefusalReason.NOT_PARTNER, f"signed by {signer}, not by the peer's address {partner}"
        )
    if last is not None:
        if claim.nonce <= last.nonce:
            return Refusal(
                RefusalReason.STALE_NONCE,
                f"nonce {claim.nonce} is not above the last accepted {last.nonce}",
            )
        if claim.transferred_amount < last.transferred_amount:
            return Refusal(
                RefusalReason.AMOUNT_DECREASED,
                f"transferredAmount {claim.transferred_amount} is below the last accepted "
                f"{last.transferred_amount}",
            )
    return None


def check_against_channel(
    claim: Claim, channel: ChannelFacts, *, our_address: str, partner: str, our_transferred: int
) -> Refusal | None:
    """The checks against the chain: our channel with the partner, open, and an amount the
    partner can pay: its deposit, less what it withdrew, plus what we transferred to it
    (claims it acknowledged); settlement pays exactly that without clamping."""
    if not channel.exists:
        return Refusal(RefusalReason.UNKNOWN_CHANNEL, f"no channel {claim.channel_id} on-chain")
    ours = {to_checksum_address(our_address), to_checksum_address(partner)}
    if set(channel.participants) != ours:
        return Refusal(
            RefusalReason.NOT_OUR_CHANNEL,
            f"channel {claim.channel_id} is not between {our_address} and {partner}",
        )
    if not channel.is_open:
        return Refusal(RefusalReason.CHANNEL_NOT_OPEN, f"channel {claim.channel_id} is not open")
    side = channel.side(partner)
    payable = side.deposit - side.withdrawn + our_transferred
    if claim.transferred_amount > payable:
        return Refusal(
            RefusalReason.ABOVE_DEPOSIT,
            f"transferredAmount {claim.transferred_amount} exceeds what the partner can pay "
            f"on-chain ({payable}: deposit {side.deposit}, withdrawn {side.withdrawn}, "
            f"received from us {our_transferred})",
        )
    return None


def is_replay(claim: Claim, last: Claim | None) -> bool:
    """The very claim already accepted (a lost acknowledgement): acknowledge it again."""
    return last is not None and claim == last
