"""EIP-712 messages of the TokenNetwork contract, and signing / recovery of them.

Domain: ("TokenNetwork", "1", chainId, verifyingContract = the token network). Messages:

    BalanceProof(bytes32 channelId,uint256 nonce,uint256 transferredAmount,uint256 lockedAmount,bytes32 locksRoot)
    WithdrawProof(bytes32 channelId,address participant,uint256 totalWithdraw,uint256 expiration)
    CooperativeSettle(bytes32 channelId,address participant1,uint256 participant1Balance,address participant2,uint256 participant2Balance)

Pure: no web3, no network. Digests are built here with eth-abi + keccak and signed with
coincurve directly (a few tens of microseconds), and recovery applies the same rules as
OpenZeppelin's ECDSA (65 bytes, v in {27, 28}, low s), so a signature accepted here is
accepted on-chain. `tests/activities/test_balance_proof.py` checks the digests against
eth-account's generic EIP-712 encoder and against the deployed contract.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import coincurve
import eth_abi
from eth_utils import keccak, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ZERO_BYTES32 = "0x" + "00" * 32
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_UINT256_MAX = 2**256 - 1

_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
BALANCE_PROOF_TYPE = (
    "BalanceProof(bytes32 channelId,uint256 nonce,uint256 transferredAmount,"
    "uint256 lockedAmount,bytes32 locksRoot)"
)
WITHDRAW_PROOF_TYPE = (
    "WithdrawProof(bytes32 channelId,address participant,uint256 totalWithdraw,uint256 expiration)"
)
COOPERATIVE_SETTLE_TYPE = (
    "CooperativeSettle(bytes32 channelId,address participant1,uint256 participant1Balance,"
    "address participant2,uint256 participant2Balance)"
)
_BALANCE_PROOF_TYPEHASH = keccak(text=BALANCE_PROOF_TYPE)
_WITHDRAW_PROOF_TYPEHASH = keccak(text=WITHDRAW_PROOF_TYPE)
_COOPERATIVE_SETTLE_TYPEHASH = keccak(text=COOPERATIVE_SETTLE_TYPE)


class InvalidSignature(ValueError):
    """A signature is malformed (length, v, high s) or does not recover to any key."""


def _bytes32_hex(value: str) -> str:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return "0x" + raw.hex()


Bytes32 = Annotated[str, AfterValidator(_bytes32_hex)]
Address = Annotated[str, AfterValidator(to_checksum_address)]
Uint256 = Annotated[int, Field(ge=0, le=_UINT256_MAX)]


class BalanceProof(BaseModel):
    """What the sender signs: its cumulative `transferred_amount` to the partner at `nonce`."""

    model_config = ConfigDict(frozen=True)

    channel_id: Bytes32
    nonce: Uint256
    transferred_amount: Uint256
    locked_amount: Uint256 = 0
    locks_root: Bytes32 = ZERO_BYTES32

    def struct_hash(self) -> bytes:
        return keccak(
            eth_abi.encode(
                ("bytes32", "bytes32", "uint256", "uint256", "uint256", "bytes32"),
                (
                    _BALANCE_PROOF_TYPEHASH,
                    bytes.fromhex(self.channel_id[2:]),
                    self.nonce,
                    self.transferred_amount,
                    self.locked_amount,
                    bytes.fromhex(self.locks_root[2:]),
                ),
            )
        )


class WithdrawProof(BaseModel):
    """What the partner signs to let `participant` withdraw up to `total_withdraw`, until
    block `expiration`."""

    model_config = ConfigDict(frozen=True)

    channel_id: Bytes32
    participant: Address
    total_withdraw: Uint256
    expiration: Uint256

    def struct_hash(self) -> bytes:
        return keccak(
            eth_abi.encode(
                ("bytes32", "bytes32", "address", "uint256", "uint256"),
                (
                    _WITHDRAW_PROOF_TYPEHASH,
                    bytes.fromhex(self.channel_id[2:]),
                    self.participant,
                    self.total_withdraw,
                    self.expiration,
                ),
            )
        )


class CooperativeSettle(BaseModel):
    """What both participants sign to settle at once; participant1 is the lower address,
    as in the contract. Build it with `CooperativeSettle.between` to get the order right."""

    model_config = ConfigDict(frozen=True)

    channel_id: Bytes32
    participant1: Address
    participant1_balance: Uint256
    participant2: Address
    participant2_balance: Uint256

    @model_validator(mode="after")
    def _ordered(self) -> CooperativeSettle:
        if int(self.participant1, 16) >= int(self.participant2, 16):
            raise ValueError("participant1 must be the lower address of the pair")
        return self

    @classmethod
    def between(cls, channel_id: str, balances: dict[str, int]) -> CooperativeSettle:
        """From {address: final balance} for the two participants, in either order."""
        if len(balances) != 2:
            raise ValueError("a cooperative settlement has exactly two participants")
        (a, a_balance), (b, b_balance) = sorted(
            ((to_checksum_address(k), v) for k, v in balances.items()),
            key=lambda item: int(item[0], 16),
        )
        return cls(
            channel_id=channel_id,
            participant1=a,
            participant1_balance=a_balance,
            participant2=b,
            participant2_balance=b_balance,
        )

    def struct_hash(self) -> bytes:
        return keccak(
            eth_abi.encode(
                ("bytes32", "bytes32", "address", "uint256", "address", "uint256"),
                (
                    _COOPERATIVE_SETTLE_TYPEHASH,
                    bytes.fromhex(self.channel_id[2:]),
                    self.participant1,
                    self.participant1_balance,
                    self.participant2,
                    self.participant2_balance,
                ),
            )
        )


Message = BalanceProof | WithdrawProof | CooperativeSettle


@lru_cache(maxsize=64)
def domain_separator(chain_id: int, token_network: str) -> bytes:
    return keccak(
        eth_abi.encode(
            ("bytes32", "bytes32", "bytes32", "uint256", "address"),
            (
                _DOMAIN_TYPEHASH,
                keccak(text="TokenNetwork"),
                keccak(text="1"),
                chain_id,
                to_checksum_address(token_network),
            ),
        )
    )


def digest(message: Message, chain_id: int, token_network: str) -> bytes:
    """The EIP-712 hash that is signed: keccak(0x1901 || domainSeparator || structHash)."""
    return keccak(b"\x19\x01" + domain_separator(chain_id, token_network) + message.struct_hash())


def _private_key_bytes(private_key: str | bytes) -> bytes:
    raw = (
        bytes.fromhex(private_key.removeprefix("0x"))
        if isinstance(private_key, str)
        else private_key
    )
    if len(raw) != 32:
        raise ValueError("a private key is 32 bytes")
    return raw


def sign(private_key: str | bytes, message: Message, chain_id: int, token_network: str) -> bytes:
    """65-byte r || s || v signature (v = 27 or 28, low s) over the message's EIP-712 digest."""
    signature = coincurve.PrivateKey(_private_key_bytes(private_key)).sign_recoverable(
        digest(message, chain_id, token_network), hasher=None
    )
    return signature[:64] + bytes([signature[64] + 27])


def recover(message: Message, signature: bytes, chain_id: int, token_network: str) -> str:
    """The checksum address that signed `message`; raises InvalidSignature where the
    contract's ECDSA would reject the signature."""
    if len(signature) != 65:
        raise InvalidSignature(f"signature is {len(signature)} bytes, not 65")
    v = signature[64]
    if v not in (27, 28):
        raise InvalidSignature(f"signature v is {v}, not 27 or 28")
    s = int.from_bytes(signature[32:64], "big")
    if s > _SECP256K1_N // 2:
        raise InvalidSignature("signature s is in the upper half of the curve order")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest(message, chain_id, token_network), hasher=None
        )
    except ValueError as exc:
        raise InvalidSignature(str(exc)) from exc
    return to_checksum_address(keccak(public_key.format(compressed=False)[1:])[-20:])


def sign_balance_proof(
    private_key: str | bytes, proof: BalanceProof, chain_id: int, token_network: str
) -> bytes:
    return sign(private_key, proof, chain_id, token_network)


def recover_signer(proof: Message, signature: bytes, chain_id: int, token_network: str) -> str:
    """Signer of a balance proof (or of a withdraw / cooperative-settle message)."""
    return recover(proof, signature, chain_id, token_network)


def sign_withdraw_proof(
    private_key: str | bytes, proof: WithdrawProof, chain_id: int, token_network: str
) -> bytes:
    return sign(private_key, proof, chain_id, token_network)


def sign_cooperative_settle(
    private_key: str | bytes, settlement: CooperativeSettle, chain_id: int, token_network: str
) -> bytes:
    return sign(private_key, settlement, chain_id, token_network)
