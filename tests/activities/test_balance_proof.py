"""EIP-712 balance proofs, withdraw and cooperative-settle messages: pure, no network."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from pydantic import ValidationError

from activities.balance_proof import (
    BalanceProof,
    CooperativeSettle,
    InvalidSignature,
    WithdrawProof,
    digest,
    recover,
    recover_signer,
    sign,
    sign_balance_proof,
    sign_cooperative_settle,
    sign_withdraw_proof,
)

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADDRESS = Account.from_key(KEY).address
OTHER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
OTHER = Account.from_key(OTHER_KEY).address
CHAIN_ID = 31337
TOKEN_NETWORK = "0xCafac3dD18aC6c6e92c921884f9E4176737C052c"
CHANNEL = "0x" + "ab" * 32
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

DOMAIN = {
    "name": "TokenNetwork",
    "version": "1",
    "chainId": CHAIN_ID,
    "verifyingContract": TOKEN_NETWORK,
}
EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _reference_digest(primary: str, fields: list[tuple[str, str]], message: dict) -> bytes:
    """eth-account's generic EIP-712 encoder, as an independent implementation."""
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": EIP712_DOMAIN,
                primary: [{"name": n, "type": t} for n, t in fields],
            },
            "primaryType": primary,
            "domain": DOMAIN,
            "message": message,
        }
    )
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def test_balance_proof_digest_matches_eth_account_typed_data() -> None:
    proof = BalanceProof(
        channel_id=CHANNEL,
        nonce=7,
        transferred_amount=10**20,
        locked_amount=5,
        locks_root="0x" + "cd" * 32,
    )
    expected = _reference_digest(
        "BalanceProof",
        [
            ("channelId", "bytes32"),
            ("nonce", "uint256"),
            ("transferredAmount", "uint256"),
            ("lockedAmount", "uint256"),
            ("locksRoot", "bytes32"),
        ],
        {
            "channelId": bytes.fromhex("ab" * 32),
            "nonce": 7,
            "transferredAmount": 10**20,
            "lockedAmount": 5,
            "locksRoot": bytes.fromhex("cd" * 32),
        },
    )
    assert digest(proof, CHAIN_ID, TOKEN_NETWORK) == expected


def test_withdraw_and_cooperative_digests_match_eth_account_typed_data() -> None:
    withdraw = WithdrawProof(
        channel_id=CHANNEL, participant=ADDRESS, total_withdraw=99, expiration=1234
    )
    assert digest(withdraw, CHAIN_ID, TOKEN_NETWORK) == _reference_digest(
        "WithdrawProof",
        [
            ("channelId", "bytes32"),
            ("participant", "address"),
            ("totalWithdraw", "uint256"),
            ("expiration", "uint256"),
        ],
        {
            "channelId": bytes.fromhex("ab" * 32),
            "participant": ADDRESS,
            "totalWithdraw": 99,
            "expiration": 1234,
        },
    )
    settle = CooperativeSettle.between(CHANNEL, {ADDRESS: 10, OTHER: 20})
    assert digest(settle, CHAIN_ID, TOKEN_NETWORK) == _reference_digest(
        "CooperativeSettle",
        [
            ("channelId", "bytes32"),
            ("participant1", "address"),
            ("participant1Balance", "uint256"),
            ("participant2", "address"),
            ("participant2Balance", "uint256"),
        ],
        {
            "channelId": bytes.fromhex("ab" * 32),
            "participant1": settle.participant1,
            "participant1Balance": settle.participant1_balance,
            "participant2": settle.participant2,
            "participant2Balance": settle.participant2_balance,
        },
    )


def test_sign_then_recover_gives_the_signer() -> None:
    proof = BalanceProof(channel_id=CHANNEL, nonce=1, transferred_amount=500)
    signature = sign_balance_proof(KEY, proof, CHAIN_ID, TOKEN_NETWORK)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert recover_signer(proof, signature, CHAIN_ID, TOKEN_NETWORK) == ADDRESS


def test_signature_agrees_with_eth_account_sign_typed_data() -> None:
    proof = BalanceProof(channel_id=CHANNEL, nonce=3, transferred_amount=42)
    ours = sign_balance_proof(KEY, proof, CHAIN_ID, TOKEN_NETWORK)
    theirs = Account.unsafe_sign_hash(digest(proof, CHAIN_ID, TOKEN_NETWORK), KEY).signature
    assert ours == bytes(theirs)  # RFC 6979 nonces: both deterministic


def test_recover_of_a_changed_proof_is_someone_else() -> None:
    proof = BalanceProof(channel_id=CHANNEL, nonce=1, transferred_amount=500)
    signature = sign_balance_proof(KEY, proof, CHAIN_ID, TOKEN_NETWORK)
    raised = proof.model_copy(update={"transferred_amount": 501})
    assert recover_signer(raised, signature, CHAIN_ID, TOKEN_NETWORK) != ADDRESS


def test_domain_binds_chain_id_and_contract() -> None:
    proof = BalanceProof(channel_id=CHANNEL, nonce=1, transferred_amount=500)
    signature = sign_balance_proof(KEY, proof, CHAIN_ID, TOKEN_NETWORK)
    assert recover_signer(proof, signature, CHAIN_ID + 1, TOKEN_NETWORK) != ADDRESS
    assert recover_signer(proof, signature, CHAIN_ID, "0x" + "11" * 20) != ADDRESS


def test_withdraw_and_cooperative_messages_sign_and_recover() -> None:
    withdraw = WithdrawProof(channel_id=CHANNEL, participant=OTHER, total_withdraw=9, expiration=5)
    signature = sign_withdraw_proof(KEY, withdraw, CHAIN_ID, TOKEN_NETWORK)
    assert recover(withdraw, signature, CHAIN_ID, TOKEN_NETWORK) == ADDRESS
    settle = CooperativeSettle.between(CHANNEL, {ADDRESS: 1, OTHER: 2})
    signature = sign_cooperative_settle(OTHER_KEY, settle, CHAIN_ID, TOKEN_NETWORK)
    assert recover(settle, signature, CHAIN_ID, TOKEN_NETWORK) == OTHER


def test_malformed_signatures_are_rejected_as_the_contract_would() -> None:
    proof = BalanceProof(channel_id=CHANNEL, nonce=1, transferred_amount=500)
    signature = sign(KEY, proof, CHAIN_ID, TOKEN_NETWORK)
    with pytest.raises(InvalidSignature, match="64 bytes"):
        recover(proof, signature[:64], CHAIN_ID, TOKEN_NETWORK)
    with pytest.raises(InvalidSignature, match="v is 1"):
        recover(proof, signature[:64] + bytes([signature[64] - 27]), CHAIN_ID, TOKEN_NETWORK)
    # The malleable twin (n - s, flipped v) recovers the same key, but OpenZeppelin rejects it.
    s = int.from_bytes(signature[32:64], "big")
    twin = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    with pytest.raises(InvalidSignature, match="upper half"):
        recover(proof, twin, CHAIN_ID, TOKEN_NETWORK)


def test_models_reject_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        BalanceProof(channel_id="0x1234", nonce=1, transferred_amount=1)
    with pytest.raises(ValidationError):
        BalanceProof(channel_id=CHANNEL, nonce=-1, transferred_amount=1)
    with pytest.raises(ValidationError):
        BalanceProof(channel_id=CHANNEL, nonce=1, transferred_amount=2**256)
    with pytest.raises(ValidationError):
        WithdrawProof(channel_id=CHANNEL, participant="0x12", total_withdraw=1, expiration=1)


def test_cooperative_settle_orders_participants_like_the_contract() -> None:
    low, high = sorted((ADDRESS, OTHER), key=lambda a: int(a, 16))
    settle = CooperativeSettle.between(CHANNEL, {high: 7, low: 3})
    assert (settle.participant1, settle.participant1_balance) == (low, 3)
    assert (settle.participant2, settle.participant2_balance) == (high, 7)
    with pytest.raises(ValidationError, match="lower address"):
        CooperativeSettle(
            channel_id=CHANNEL,
            participant1=high,
            participant1_balance=7,
            participant2=low,
            participant2_balance=3,
        )


def test_proofs_are_frozen_and_normalised() -> None:
    proof = BalanceProof(
        channel_id=CHANNEL.upper().replace("0X", "0x"), nonce=1, transferred_amount=1
    )
    assert proof.channel_id == CHANNEL
    with pytest.raises(ValidationError):
        proof.nonce = 2  # type: ignore[misc]
