"""connector.claims: the claim's JSON, its signature, and every reason a receiver refuses one."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from activities.balance_proof import recover_signer
from connector.claims import (
    ChannelFacts,
    ChannelSide,
    Claim,
    ClaimAck,
    ClaimDomain,
    ClaimSigner,
    InvalidClaim,
    Refusal,
    RefusalReason,
    check_against_channel,
    check_claim,
    is_replay,
)

PAYER = Account.from_key("0x" + "11" * 32)
PAYEE = Account.from_key("0x" + "22" * 32)
STRANGER = Account.from_key("0x" + "33" * 32)
DOMAIN = ClaimDomain(31337, "0x" + "ab" * 20)
CHANNEL = "0x" + "c1" * 32
SIGNER = ClaimSigner(PAYER.key, PAYER.address)


def claim(nonce: int = 1, amount: int = 1_000, **changes: object) -> Claim:
    signed = SIGNER.sign(DOMAIN, CHANNEL, nonce, amount)
    return signed.model_copy(update=changes) if changes else signed


def check(candidate: Claim, last: Claim | None = None, partner: str | None = PAYER.address):
    return check_claim(candidate, domain=DOMAIN, partner=partner, last=last)


def reason(refusal: Refusal | None) -> RefusalReason | None:
    return refusal.reason if refusal else None


# --- the wire ------------------------------------------------------------------------------


def test_claim_json_round_trip_with_amounts_as_decimal_strings() -> None:
    original = claim(nonce=7, amount=2**200)
    document = json.loads(original.to_json())

    assert document == {
        "version": 1,
        "blockchain": "evm",
        "chainId": 31337,
        "tokenNetwork": DOMAIN.token_network,
        "channelId": CHANNEL,
        "nonce": "7",
        "transferredAmount": str(2**200),
        "lockedAmount": "0",
        "locksRoot": "0x" + "00" * 32,
        "signature": original.signature,
        "signerAddress": PAYER.address,
    }
    assert Claim.from_json(original.to_json()) == original


def test_claim_reads_json_numbers_and_any_hex_case() -> None:
    original = claim()
    document = json.loads(original.to_json())
    document |= {"nonce": 1, "transferredAmount": 1_000, "channelId": CHANNEL.upper()[2:]}
    document["tokenNetwork"] = document["tokenNetwork"].lower()

    assert Claim.from_json(json.dumps(document).encode()) == original


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"blockchain": "btc"}, "blockchain"),
        ({"version": 2}, "version"),
        ({"nonce": "-1"}, "nonce"),
        ({"transferredAmount": "1.5"}, "transferredAmount"),
        ({"transferredAmount": str(2**256)}, "transferredAmount"),
        ({"signature": "0x1234"}, "signature"),
        ({"channelId": "0x12"}, "channelId"),
        ({"signerAddress": "0xnot-an-address"}, "signerAddress"),
    ],
)
def test_unreadable_claim_names_the_field(change: dict, field: str) -> None:
    document = json.loads(claim().to_json()) | change
    with pytest.raises(InvalidClaim, match=field):
        Claim.from_json(json.dumps(document).encode())


def test_not_json_is_invalid() -> None:
    with pytest.raises(InvalidClaim):
        Claim.from_json(b"\x00\x01 not json")


def test_ack_names_the_claim_it_acknowledges() -> None:
    first, second = claim(nonce=1), claim(nonce=2, amount=2_000)
    ack = ClaimAck.from_json(ClaimAck(channel_id=CHANNEL, nonce=1).to_json())

    assert ack.acknowledges(first)
    assert not ack.acknowledges(second)


# --- signatures ----------------------------------------------------------------------------


def test_signature_recovers_to_the_signer_as_the_contract_would() -> None:
    signed = claim(nonce=3, amount=123_456)
    assert signed.signer_address == PAYER.address
    signer = recover_signer(
        signed.balance_proof(), signed.signature_bytes, DOMAIN.chain_id, DOMAIN.token_network
    )
    assert signer == PAYER.address
    assert check(signed) is None


def test_signer_never_shows_its_key() -> None:
    text = repr(SIGNER) + str(SIGNER)
    assert PAYER.key.hex().removeprefix("0x") not in text
    assert PAYER.address in text


# --- the receiver's checks that need no chain ------------------------------------------------


def test_forged_signature_is_refused() -> None:
    # Signed by a stranger's key but claiming to be from the payer.
    forged = ClaimSigner(STRANGER.key, STRANGER.address).sign(DOMAIN, CHANNEL, 1, 1_000)
    forged = forged.model_copy(update={"signer_address": PAYER.address})
    assert reason(check(forged)) is RefusalReason.BAD_SIGNATURE


def test_amount_changed_after_signing_is_refused() -> None:
    tampered = claim(amount=1_000).model_copy(update={"transferred_amount": 1_000_000})
    assert reason(check(tampered)) is RefusalReason.BAD_SIGNATURE


def test_high_s_signature_is_refused_as_the_contract_would() -> None:
    signed = claim()
    raw = bytearray(signed.signature_bytes)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(raw[32:64], "big")
    raw[32:64] = (n - s).to_bytes(32, "big")
    raw[64] = 55 - raw[64]  # 27 <-> 28
    malleated = signed.model_copy(update={"signature": "0x" + bytes(raw).hex()})
    assert reason(check(malleated)) is RefusalReason.BAD_SIGNATURE


def test_claim_signed_by_someone_other_than_the_peer_is_refused() -> None:
    theirs = ClaimSigner(STRANGER.key, STRANGER.address).sign(DOMAIN, CHANNEL, 1, 1_000)
    refusal = check(theirs)
    assert reason(refusal) is RefusalReason.NOT_PARTNER
    assert STRANGER.address in refusal.message


def test_peer_without_an_evm_address_cannot_pay_by_claim() -> None:
    assert reason(check(claim(), partner=None)) is RefusalReason.NO_PARTNER_ADDRESS


def test_wrong_chain_id_is_refused() -> None:
    other = ClaimSigner(PAYER.key, PAYER.address).sign(
        ClaimDomain(1, DOMAIN.token_network), CHANNEL, 1, 1_000
    )
    refusal = check(other)
    assert reason(refusal) is RefusalReason.WRONG_CHAIN
    assert "chainId 1, expected 31337" in refusal.message


def test_wrong_contract_is_refused() -> None:
    other = SIGNER.sign(ClaimDomain(DOMAIN.chain_id, "0x" + "cd" * 20), CHANNEL, 1, 1_000)
    assert reason(check(other)) is RefusalReason.WRONG_CONTRACT


def test_locked_amounts_are_refused() -> None:
    assert reason(check(claim(locked_amount=5))) is RefusalReason.LOCKED_AMOUNT


def test_replayed_or_lower_nonce_is_refused() -> None:
    last = claim(nonce=5, amount=5_000)
    assert reason(check(claim(nonce=5, amount=6_000), last)) is RefusalReason.STALE_NONCE
    assert reason(check(claim(nonce=4, amount=6_000), last)) is RefusalReason.STALE_NONCE
    assert check(claim(nonce=9, amount=6_000), last) is None  # nonces may skip


def test_decreasing_amount_is_refused_and_equal_is_not() -> None:
    last = claim(nonce=5, amount=5_000)
    assert reason(check(claim(nonce=6, amount=4_999), last)) is RefusalReason.AMOUNT_DECREASED
    assert check(claim(nonce=6, amount=5_000), last) is None


def test_the_same_claim_again_is_a_replay_and_nothing_else_is() -> None:
    last = claim(nonce=5, amount=5_000)
    assert is_replay(Claim.from_json(last.to_json()), last)
    assert not is_replay(claim(nonce=5, amount=5_001), last)
    assert not is_replay(last, None)


def test_refusal_codes() -> None:
    assert Refusal(RefusalReason.MALFORMED, "x").btp_code == "F01"
    assert Refusal(RefusalReason.STALE_NONCE, "x").btp_code == "F00"


# --- the receiver's checks against the chain -------------------------------------------------


def facts(
    *,
    participants: tuple[str, str] = (PAYER.address, PAYEE.address),
    is_open: bool = True,
    deposit: int = 10_000,
    withdrawn: int = 0,
    exists: bool = True,
) -> ChannelFacts:
    sides = {participants[0]: ChannelSide(deposit, withdrawn), participants[1]: ChannelSide(0, 0)}
    return ChannelFacts(CHANNEL, exists, is_open, participants, sides)


def against(candidate: Claim, channel: ChannelFacts, our_transferred: int = 0):
    return check_against_channel(
        candidate,
        channel,
        our_address=PAYEE.address,
        partner=PAYER.address,
        our_transferred=our_transferred,
    )


def test_claim_within_the_partners_deposit_passes() -> None:
    assert against(claim(amount=10_000), facts()) is None


def test_amount_above_the_partners_deposit_is_refused() -> None:
    refusal = against(claim(amount=10_001), facts())
    assert reason(refusal) is RefusalReason.ABOVE_DEPOSIT
    assert "10001" in refusal.message and "deposit 10000" in refusal.message


def test_withdrawn_reduces_and_our_transfers_raise_what_the_partner_can_pay() -> None:
    assert reason(against(claim(amount=8_000), facts(withdrawn=3_000))) is (
        RefusalReason.ABOVE_DEPOSIT
    )
    assert against(claim(amount=12_000), facts(), our_transferred=2_000) is None


def test_claim_for_someone_elses_channel_is_refused() -> None:
    theirs = facts(participants=(PAYER.address, STRANGER.address))
    assert reason(against(claim(), theirs)) is RefusalReason.NOT_OUR_CHANNEL


def test_unknown_and_closed_channels_are_refused() -> None:
    assert reason(against(claim(), facts(exists=False))) is RefusalReason.UNKNOWN_CHANNEL
    assert reason(against(claim(), facts(is_open=False))) is RefusalReason.CHANNEL_NOT_OPEN
