"""TokenNetwork contracts on a real anvil, driven only through the Python chain client.

Every test uses fresh random accounts (the `new_account` fixture), so tests share the one
session deployment without snapshots and cannot see each other's channels. Reverts are sent
as real transactions (fixed gas, no estimate) and mined with status 0; the client names the
custom error by replaying the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import ContractCustomError

from activities import token_network as tn
from activities.balance_proof import (
    BALANCE_PROOF_TYPE,
    COOPERATIVE_SETTLE_TYPE,
    WITHDRAW_PROOF_TYPE,
    BalanceProof,
    CooperativeSettle,
    WithdrawProof,
    domain_separator,
    sign_balance_proof,
    sign_cooperative_settle,
    sign_withdraw_proof,
)
from activities.token_network import ChannelState, Deployment, TransactionReverted
from connector.devstack import ANVIL_KEYS

TIMEOUT = 5
BIG = 10**30


@dataclass
class Channel:
    a: LocalAccount
    b: LocalAccount
    id: str


async def _open(
    w3: AsyncWeb3,
    d: Deployment,
    new_account,
    deposit_a: int = 1000,
    deposit_b: int = 500,
    timeout: int = TIMEOUT,
) -> Channel:
    a, b = await new_account(), await new_account()
    channel_id = await tn.next_channel_id(w3, d, a.address, b.address)
    await tn.send_batch(
        w3,
        a,
        [
            tn.build_approve(d, BIG),
            tn.build_open_channel(d, b.address, timeout),
            tn.build_set_total_deposit(d, channel_id, a.address, deposit_a),
        ],
    )
    if deposit_b:
        await tn.send_batch(
            w3,
            b,
            [
                tn.build_approve(d, BIG),
                tn.build_set_total_deposit(d, channel_id, b.address, deposit_b),
            ],
        )
    return Channel(a, b, channel_id)


async def _reverts(w3: AsyncWeb3, account: LocalAccount, tx: tn.UnsignedTx) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as info:
        await tn.send_and_wait(w3, account, tx)
    assert info.value.receipt["status"] == 0  # mined and reverted on-chain
    return info.value


async def _mine_to(w3: AsyncWeb3, block: int) -> None:
    missing = block - await w3.eth.block_number
    if missing > 0:
        await w3.provider.make_request("anvil_mine", [hex(missing)])


def _proof(d: Deployment, key: bytes, channel_id: str, nonce: int, amount: int) -> tuple:
    proof = BalanceProof(channel_id=channel_id, nonce=nonce, transferred_amount=amount)
    return proof, sign_balance_proof(key, proof, d.chain_id, d.token_network)


def _event_names(receipt) -> list[str]:
    return [e.name for e in tn.decode_events(receipt)]


# ---------------------------------------------------------------- opening


async def test_next_channel_id_is_known_before_the_open_is_mined(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    a, b = await new_account(), await new_account()
    assert await tn.get_channel_id(anvil_w3, deployment, a.address, b.address) is None
    assert await tn.get_pair_counter(anvil_w3, deployment, a.address, b.address) == 0
    expected = tn.compute_channel_id(
        deployment.chain_id, deployment.token_network, b.address, a.address, 0
    )
    assert await tn.next_channel_id(anvil_w3, deployment, a.address, b.address) == expected
    (on_chain,) = await tn.call_function(
        anvil_w3,
        deployment.token_network,
        tn.contract_abi("TokenNetwork"),
        "computeChannelId",
        a.address,
        b.address,
        7,
    )
    assert on_chain == tn.compute_channel_id(
        deployment.chain_id, deployment.token_network, a.address, b.address, 7
    )

    receipt = await tn.send_and_wait(
        anvil_w3, a, tn.build_open_channel(deployment, b.address, TIMEOUT)
    )
    (event,) = tn.decode_events(receipt)
    assert event.name == "ChannelOpened" and event.args["channelId"] == expected
    assert await tn.get_channel_id(anvil_w3, deployment, b.address, a.address) == expected
    assert await tn.get_pair_counter(anvil_w3, deployment, a.address, b.address) == 1
    channel = await tn.get_channel(anvil_w3, deployment, expected)
    assert channel.state is ChannelState.OPENED
    assert set(channel.participants) == {a.address, b.address}
    assert int(channel.participant1, 16) < int(channel.participant2, 16)
    assert (channel.settle_timeout, channel.settle_block, channel.closing_participant) == (
        TIMEOUT,
        0,
        None,
    )


async def test_approve_open_and_deposit_land_in_one_block(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    a, b = await new_account(), await new_account()
    channel_id = await tn.next_channel_id(anvil_w3, deployment, a.address, b.address)
    txs = [
        tn.build_approve(deployment, 700),
        tn.build_open_channel(deployment, b.address, TIMEOUT),
        tn.build_set_total_deposit(deployment, channel_id, a.address, 700),
    ]
    # This is why builders carry fixed gas: the deposit cannot be estimated before the open.
    with pytest.raises(ContractCustomError) as info:
        await anvil_w3.eth.estimate_gas({**txs[2], "from": a.address})
    assert tn.decode_revert(info.value.data) == "ChannelNotOpen"

    await anvil_w3.provider.make_request("evm_setAutomine", [False])
    try:
        nonce = await anvil_w3.eth.get_transaction_count(a.address)
        fees = await tn.fee_fields(anvil_w3)
        hashes = [
            await anvil_w3.eth.send_raw_transaction(
                a.sign_transaction({**tx, **fees, "nonce": nonce + i}).raw_transaction
            )
            for i, tx in enumerate(txs)
        ]
        await anvil_w3.provider.make_request("evm_mine", [])
    finally:
        await anvil_w3.provider.make_request("evm_setAutomine", [True])
    receipts = [await anvil_w3.eth.get_transaction_receipt(h) for h in hashes]
    assert [r["status"] for r in receipts] == [1, 1, 1]
    assert len({r["blockNumber"] for r in receipts}) == 1
    participant = await tn.get_participant(anvil_w3, deployment, channel_id, a.address)
    assert participant.deposit == 700


async def test_second_open_for_a_pair_reverts_channel_already_open(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    channel = await _open(anvil_w3, deployment, new_account)
    for opener, partner in ((channel.a, channel.b), (channel.b, channel.a)):
        error = await _reverts(
            anvil_w3, opener, tn.build_open_channel(deployment, partner.address, TIMEOUT)
        )
        assert error.error == "ChannelAlreadyOpen"
        assert error.error_args == {"channelId": channel.id}
    assert (
        await tn.get_pair_counter(anvil_w3, deployment, channel.a.address, channel.b.address) == 1
    )


async def test_open_rejects_self_partner_and_settle_timeouts_out_of_bounds(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    a, b = await new_account(), await new_account()
    assert (
        await _reverts(anvil_w3, a, tn.build_open_channel(deployment, a.address, TIMEOUT))
    ).error == "InvalidPartner"
    for timeout in (4, 2_000_001):
        error = await _reverts(anvil_w3, a, tn.build_open_channel(deployment, b.address, timeout))
        assert error.error == "InvalidSettleTimeout"
        assert error.error_args == {"settleTimeout": timeout, "min": 5, "max": 2_000_000}
    await tn.send_and_wait(anvil_w3, a, tn.build_open_channel(deployment, b.address, 2_000_000))


# ---------------------------------------------------------------- deposits


async def test_set_total_deposit_moves_only_the_difference(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    channel = await _open(anvil_w3, deployment, new_account, deposit_a=1000, deposit_b=0)
    a = channel.a
    wallet = await tn.token_balance(anvil_w3, deployment, a.address)
    held = await tn.token_balance(anvil_w3, deployment, deployment.token_network)

    receipt = await tn.send_and_wait(
        anvil_w3, a, tn.build_set_total_deposit(deployment, channel.id, a.address, 1500)
    )
    assert _event_names(receipt) == ["ChannelNewDeposit", "Transfer"]
    assert tn.decode_events(receipt)[0].args["totalDeposit"] == 1500
    assert await tn.token_balance(anvil_w3, deployment, a.address) == wallet - 500
    assert await tn.token_balance(anvil_w3, deployment, deployment.token_network) == held + 500

    for stale in (1500, 1000):
        error = await _reverts(
            anvil_w3, a, tn.build_set_total_deposit(deployment, channel.id, a.address, stale)
        )
        assert error.error == "DepositNotIncreasing"
        assert error.error_args == {"currentTotal": 1500, "requestedTotal": stale}
    assert await tn.token_balance(anvil_w3, deployment, a.address) == wallet - 500
    assert (await tn.get_participant(anvil_w3, deployment, channel.id, a.address)).deposit == 1500


async def test_anyone_may_fund_a_participant_but_not_a_stranger(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    channel = await _open(anvil_w3, deployment, new_account, deposit_b=0)
    funder, stranger = await new_account(), await new_account()
    await tn.send_and_wait(anvil_w3, funder, tn.build_approve(deployment, BIG))
    before = await tn.token_balance(anvil_w3, deployment, channel.b.address)
    await tn.send_and_wait(
        anvil_w3, funder, tn.build_set_total_deposit(deployment, channel.id, channel.b.address, 300)
    )
    assert (
        await tn.get_participant(anvil_w3, deployment, channel.id, channel.b.address)
    ).deposit == 300
    assert await tn.token_balance(anvil_w3, deployment, channel.b.address) == before
    assert await tn.allowance(anvil_w3, deployment, funder.address) == BIG - 300

    error = await _reverts(
        anvil_w3, funder, tn.build_set_total_deposit(deployment, channel.id, stranger.address, 300)
    )
    assert error.error == "NotParticipant"
    unknown = await _reverts(
        anvil_w3,
        funder,
        tn.build_set_total_deposit(deployment, "0x" + "42" * 32, channel.b.address, 1),
    )
    assert unknown.error == "ChannelNotOpen"


# ---------------------------------------------------------------- close, update, settle


async def test_close_update_settle_pays_out_exactly_what_the_channel_holds(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account, deposit_a=1000, deposit_b=500)
    a, b = channel.a, channel.b
    proof_b, sig_b = _proof(d, b.key, channel.id, nonce=4, amount=200)  # b paid a 200
    proof_a, sig_a = _proof(d, a.key, channel.id, nonce=9, amount=300)  # a paid b 300
    wallets = {x.address: await tn.token_balance(anvil_w3, d, x.address) for x in (a, b)}
    held = await tn.token_balance(anvil_w3, d, d.token_network)

    receipt = await tn.send_and_wait(
        anvil_w3, a, tn.build_close_channel(d, channel.id, proof_b, sig_b)
    )
    (closed,) = tn.decode_events(receipt)
    assert closed.name == "ChannelClosed" and closed.args["closingParticipant"] == a.address
    info = await tn.get_channel(anvil_w3, d, channel.id)
    assert info.state is ChannelState.CLOSED and info.closing_participant == a.address
    assert info.settle_block == receipt["blockNumber"] + TIMEOUT == closed.args["settleBlock"]
    side_b = await tn.get_participant(anvil_w3, d, channel.id, b.address)
    assert (side_b.nonce, side_b.transferred_amount) == (4, 200)

    receipt = await tn.send_and_wait(anvil_w3, b, tn.build_update_non_closing(d, proof_a, sig_a))
    assert _event_names(receipt) == ["NonClosingBalanceProofUpdated"]
    assert (await tn.get_participant(anvil_w3, d, channel.id, a.address)).transferred_amount == 300

    # Settle window: the last block it may not settle in is settle_block itself.
    await _mine_to(anvil_w3, info.settle_block - 1)
    early = await _reverts(anvil_w3, b, tn.build_settle(d, channel.id))
    assert early.error == "SettleTimeoutNotExpired"
    assert early.error_args["settleBlock"] == info.settle_block
    receipt = await tn.send_and_wait(anvil_w3, b, tn.build_settle(d, channel.id))
    assert receipt["blockNumber"] == info.settle_block + 1
    settled = tn.decode_events(receipt)[0]
    assert settled.name == "ChannelSettled"
    payouts = {
        settled.args["participant1"]: settled.args["participant1Amount"],
        settled.args["participant2"]: settled.args["participant2Amount"],
    }
    assert payouts == {a.address: 1000 - 300 + 200, b.address: 500 + 300 - 200}
    assert sum(payouts.values()) == 1500
    for x in (a, b):
        assert (
            await tn.token_balance(anvil_w3, d, x.address)
            == wallets[x.address] + payouts[x.address]
        )
    assert await tn.token_balance(anvil_w3, d, d.token_network) == held - 1500

    again = await _reverts(anvil_w3, a, tn.build_settle(d, channel.id))
    assert again.error == "ChannelAlreadySettled"
    assert (await tn.get_channel(anvil_w3, d, channel.id)).state is ChannelState.SETTLED
    assert await tn.get_channel_id(anvil_w3, d, a.address, b.address) is None

    # The pair may open again; the new channel has the next counter's id.
    second = tn.compute_channel_id(d.chain_id, d.token_network, a.address, b.address, 1)
    assert await tn.next_channel_id(anvil_w3, d, a.address, b.address) == second
    await tn.send_and_wait(anvil_w3, b, tn.build_open_channel(d, a.address, TIMEOUT))
    assert await tn.get_channel_id(anvil_w3, d, a.address, b.address) == second


async def test_close_without_a_proof_returns_deposits(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    channel = await _open(anvil_w3, deployment, new_account, deposit_a=800, deposit_b=200)
    receipt = await tn.send_and_wait(
        anvil_w3, channel.b, tn.build_close_channel(deployment, channel.id)
    )
    assert tn.decode_events(receipt)[0].args["nonce"] == 0
    info = await tn.get_channel(anvil_w3, deployment, channel.id)
    await _mine_to(anvil_w3, info.settle_block)
    receipt = await tn.send_and_wait(anvil_w3, channel.a, tn.build_settle(deployment, channel.id))
    args = tn.decode_events(receipt)[0].args
    payouts = {
        args["participant1"]: args["participant1Amount"],
        args["participant2"]: args["participant2Amount"],
    }
    assert payouts == {channel.a.address: 800, channel.b.address: 200}


async def test_close_rejects_bad_signatures_and_strangers(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account)
    a, b = channel.a, channel.b
    proof = BalanceProof(channel_id=channel.id, nonce=1, transferred_amount=100)
    forged = sign_balance_proof(a.key, proof, d.chain_id, d.token_network)  # a signs for b
    wrong_chain = sign_balance_proof(b.key, proof, d.chain_id + 1, d.token_network)
    wrong_contract = sign_balance_proof(b.key, proof, d.chain_id, d.token)
    garbage = b"\x01" * 65
    for signature in (forged, wrong_chain, wrong_contract, garbage, b""):
        error = await _reverts(anvil_w3, a, tn.build_close_channel(d, channel.id, proof, signature))
        assert error.error == "InvalidSignature"
    stranger = await new_account()
    valid = sign_balance_proof(b.key, proof, d.chain_id, d.token_network)
    error = await _reverts(anvil_w3, stranger, tn.build_close_channel(d, channel.id, proof, valid))
    assert error.error == "NotParticipant"
    assert (await tn.get_channel(anvil_w3, d, channel.id)).state is ChannelState.OPENED
    # The proof of another channel cannot be replayed here.
    with pytest.raises(ValueError, match="another channel"):
        tn.build_close_channel(d, "0x" + "42" * 32, proof, valid)


async def test_update_non_closing_rules(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account, timeout=20)  # each revert mines a block
    a, b = channel.a, channel.b
    proof_a, sig_a = _proof(d, a.key, channel.id, nonce=5, amount=50)
    early = await _reverts(anvil_w3, b, tn.build_update_non_closing(d, proof_a, sig_a))
    assert early.error == "ChannelNotClosed"

    await tn.send_and_wait(anvil_w3, a, tn.build_close_channel(d, channel.id))
    closer = await _reverts(anvil_w3, a, tn.build_update_non_closing(d, proof_a, sig_a))
    assert closer.error == "OnlyNonClosingParticipant"
    forged = sign_balance_proof(b.key, proof_a, d.chain_id, d.token_network)
    assert (
        await _reverts(anvil_w3, b, tn.build_update_non_closing(d, proof_a, forged))
    ).error == "InvalidSignature"

    await tn.send_and_wait(anvil_w3, b, tn.build_update_non_closing(d, proof_a, sig_a))
    for nonce in (5, 4):
        stale, stale_sig = _proof(d, a.key, channel.id, nonce=nonce, amount=10)
        error = await _reverts(anvil_w3, b, tn.build_update_non_closing(d, stale, stale_sig))
        assert error.error == "StaleNonce" and error.error_args == {
            "currentNonce": 5,
            "givenNonce": nonce,
        }
    newer, newer_sig = _proof(d, a.key, channel.id, nonce=6, amount=60)
    await tn.send_and_wait(anvil_w3, b, tn.build_update_non_closing(d, newer, newer_sig))

    info = await tn.get_channel(anvil_w3, d, channel.id)
    await _mine_to(anvil_w3, info.settle_block)
    latest, latest_sig = _proof(d, a.key, channel.id, nonce=7, amount=70)
    late = await _reverts(anvil_w3, b, tn.build_update_non_closing(d, latest, latest_sig))
    assert late.error == "SettleWindowOver"
    assert (await tn.get_participant(anvil_w3, d, channel.id, a.address)).transferred_amount == 60


async def test_operations_in_the_wrong_state_revert(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account)
    assert (
        await _reverts(anvil_w3, channel.a, tn.build_settle(d, channel.id))
    ).error == "ChannelNotClosed"
    await tn.send_and_wait(anvil_w3, channel.a, tn.build_close_channel(d, channel.id))
    for tx in (
        tn.build_set_total_deposit(d, channel.id, channel.a.address, 5000),
        tn.build_close_channel(d, channel.id),
    ):
        assert (await _reverts(anvil_w3, channel.b, tx)).error == "ChannelNotOpen"
    unknown = "0x" + "99" * 32
    assert (await tn.get_channel(anvil_w3, d, unknown)).state is ChannelState.NONE
    assert (
        await _reverts(anvil_w3, channel.a, tn.build_settle(d, unknown))
    ).error == "ChannelNotClosed"


@pytest.mark.parametrize(
    ("transferred_a", "transferred_b", "expected_a"),
    [
        (300, 200, 900),  # consistent: 1000 - 300 + 200
        (10**30, 0, 0),  # a "paid" more than it ever had: a gets nothing, b everything
        (0, 2**256 - 1, 1500),  # b's proof is absurd: a gets what the channel holds, no more
        # Both proofs absurd enough to saturate: any split, but no revert and nothing extra.
        (2**256 - 1, 2**256 - 1, None),
        (2**256 - 1, 2**256 - 2, None),
    ],
)
async def test_settlement_never_pays_more_than_the_channel_holds(
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    transferred_a: int,
    transferred_b: int,
    expected_a: int | None,
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account, deposit_a=1000, deposit_b=500)
    proof_b, sig_b = _proof(d, channel.b.key, channel.id, nonce=1, amount=transferred_b)
    proof_a, sig_a = _proof(d, channel.a.key, channel.id, nonce=1, amount=transferred_a)
    await tn.send_and_wait(
        anvil_w3, channel.a, tn.build_close_channel(d, channel.id, proof_b, sig_b)
    )
    await tn.send_and_wait(anvil_w3, channel.b, tn.build_update_non_closing(d, proof_a, sig_a))
    await _mine_to(anvil_w3, (await tn.get_channel(anvil_w3, d, channel.id)).settle_block)
    receipt = await tn.send_and_wait(anvil_w3, channel.b, tn.build_settle(d, channel.id))
    args = tn.decode_events(receipt)[0].args
    payouts = {
        args["participant1"]: args["participant1Amount"],
        args["participant2"]: args["participant2Amount"],
    }
    assert set(payouts) == {channel.a.address, channel.b.address}
    assert sum(payouts.values()) == 1500
    if expected_a is not None:
        assert payouts[channel.a.address] == expected_a


# ---------------------------------------------------------------- cooperative settle


async def test_cooperative_settle_conserves_balances(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account, deposit_a=1000, deposit_b=500)
    a, b = channel.a, channel.b
    keys = {a.address: a.key, b.address: b.key}

    def signatures(
        settlement: CooperativeSettle, chain_id: int = d.chain_id
    ) -> tuple[bytes, bytes]:
        return (
            sign_cooperative_settle(
                keys[settlement.participant1], settlement, chain_id, d.token_network
            ),
            sign_cooperative_settle(
                keys[settlement.participant2], settlement, chain_id, d.token_network
            ),
        )

    too_much = CooperativeSettle.between(channel.id, {a.address: 1000, b.address: 501})
    error = await _reverts(
        anvil_w3, a, tn.build_cooperative_settle(d, too_much, *signatures(too_much))
    )
    assert error.error == "CooperativeSettleMismatch"
    assert error.error_args["channelHolds"] == 1500

    settlement = CooperativeSettle.between(channel.id, {a.address: 600, b.address: 900})
    sig1, sig2 = signatures(settlement)
    swapped = await _reverts(anvil_w3, a, tn.build_cooperative_settle(d, settlement, sig2, sig1))
    assert swapped.error == "InvalidSignature"
    wrong_chain = await _reverts(
        anvil_w3,
        a,
        tn.build_cooperative_settle(d, settlement, *signatures(settlement, d.chain_id + 1)),
    )
    assert wrong_chain.error == "InvalidSignature"

    wallets = {x.address: await tn.token_balance(anvil_w3, d, x.address) for x in (a, b)}
    held = await tn.token_balance(anvil_w3, d, d.token_network)
    third_party = await new_account(m2m=0)  # anyone may submit both signatures
    receipt = await tn.send_and_wait(
        anvil_w3, third_party, tn.build_cooperative_settle(d, settlement, sig1, sig2)
    )
    assert _event_names(receipt)[0] == "ChannelCooperativeSettled"
    assert await tn.token_balance(anvil_w3, d, a.address) == wallets[a.address] + 600
    assert await tn.token_balance(anvil_w3, d, b.address) == wallets[b.address] + 900
    assert await tn.token_balance(anvil_w3, d, d.token_network) == held - 1500
    assert (await tn.get_channel(anvil_w3, d, channel.id)).state is ChannelState.SETTLED
    assert await tn.get_channel_id(anvil_w3, d, a.address, b.address) is None

    replay = await _reverts(anvil_w3, a, tn.build_cooperative_settle(d, settlement, sig1, sig2))
    assert replay.error == "ChannelNotOpen"


# ---------------------------------------------------------------- withdraw


async def test_withdraw_with_partner_signature_then_settle_conserves(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    channel = await _open(anvil_w3, d, new_account, deposit_a=1000, deposit_b=500)
    a, b = channel.a, channel.b
    expiration = await anvil_w3.eth.block_number + 50

    def withdraw(total: int, signer: LocalAccount = b, expires: int = expiration) -> tn.UnsignedTx:
        proof = WithdrawProof(
            channel_id=channel.id, participant=a.address, total_withdraw=total, expiration=expires
        )
        return tn.build_withdraw(
            d, proof, sign_withdraw_proof(signer.key, proof, d.chain_id, d.token_network)
        )

    wallet = await tn.token_balance(anvil_w3, d, a.address)
    held = await tn.token_balance(anvil_w3, d, d.token_network)
    receipt = await tn.send_and_wait(anvil_w3, a, withdraw(300))
    event = tn.decode_events(receipt)[0]
    assert event.name == "ChannelWithdrawal"
    assert (event.args["totalWithdraw"], event.args["amount"]) == (300, 300)
    assert await tn.token_balance(anvil_w3, d, a.address) == wallet + 300
    assert (await tn.get_participant(anvil_w3, d, channel.id, a.address)).withdrawn == 300

    receipt = await tn.send_and_wait(anvil_w3, a, withdraw(400))  # a total: moves 100 more
    assert tn.decode_events(receipt)[0].args["amount"] == 100
    assert await tn.token_balance(anvil_w3, d, a.address) == wallet + 400

    stale = await _reverts(anvil_w3, a, withdraw(400))
    assert stale.error == "WithdrawNotIncreasing"
    assert (await _reverts(anvil_w3, a, withdraw(500, signer=a))).error == "InvalidSignature"
    assert (await _reverts(anvil_w3, a, withdraw(1501))).error == "WithdrawExceedsChannel"
    past = await anvil_w3.eth.block_number
    assert (await _reverts(anvil_w3, a, withdraw(500, expires=past))).error == "WithdrawExpired"

    # a received 250 from b off-chain before withdrawing; the settlement accounts for it.
    proof_b, sig_b = _proof(d, b.key, channel.id, nonce=2, amount=250)
    await tn.send_and_wait(anvil_w3, a, tn.build_close_channel(d, channel.id, proof_b, sig_b))
    await _mine_to(anvil_w3, (await tn.get_channel(anvil_w3, d, channel.id)).settle_block)
    receipt = await tn.send_and_wait(anvil_w3, b, tn.build_settle(d, channel.id))
    args = tn.decode_events(receipt)[0].args
    payouts = {
        args["participant1"]: args["participant1Amount"],
        args["participant2"]: args["participant2Amount"],
    }
    assert payouts == {a.address: 1000 + 250 - 400, b.address: 500 - 250}
    assert sum(payouts.values()) + 400 == 1500
    assert await tn.token_balance(anvil_w3, d, d.token_network) == held - 1500
    # Settled, the contract no longer holds the sides; the events still tell each one's funding.
    assert await tn.get_funding(anvil_w3, d, channel.id, a.address) == (1000, 400)
    assert await tn.get_funding(anvil_w3, d, channel.id, b.address) == (500, 0)


# ---------------------------------------------------------------- registry, token, views


async def test_registry_maps_token_to_its_network(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    d = deployment
    assert await tn.get_token_network(anvil_w3, d.registry, d.token) == d.token_network
    (token,) = await tn.call_function(
        anvil_w3, d.token_network, tn.contract_abi("TokenNetwork"), "token"
    )
    assert token == d.token

    sender = await new_account(m2m=0)

    exists = await _reverts(anvil_w3, sender, tn.build_create_token_network(d, d.token))
    assert exists.error == "TokenNetworkExists"
    assert exists.error_args == {"token": d.token, "tokenNetwork": d.token_network}
    assert (
        await _reverts(anvil_w3, sender, tn.build_create_token_network(d, sender.address))
    ).error == "InvalidToken"
    assert await tn.get_token_network(anvil_w3, d.registry, sender.address) is None


async def test_m2m_token_metadata_and_dev_faucet(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    token = tn.contract_abi("M2MToken")
    for function, expected in (
        ("name", "M2M"),
        ("symbol", "M2M"),
        ("decimals", 18),
        ("isDevChain", True),
    ):
        assert await tn.call_function(anvil_w3, deployment.token, token, function) == (expected,)
    anyone = await new_account(m2m=0)
    await tn.send_and_wait(anvil_w3, anyone, tn.build_mint(deployment, anyone.address, 5))
    assert await tn.token_balance(anvil_w3, deployment, anyone.address) == 5


async def test_views_report_balances(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    account = await new_account(eth=12345, m2m=0)
    assert await tn.eth_balance(anvil_w3, account.address) == 12345
    assert await tn.token_balance(anvil_w3, deployment, account.address) == 0
    assert await tn.allowance(anvil_w3, deployment, account.address) == 0


async def test_funded_accounts_fixture_holds_m2m(
    anvil_w3: AsyncWeb3, deployment: Deployment, funded_accounts: list[LocalAccount]
) -> None:
    assert ["0x" + bytes(a.key).hex() for a in funded_accounts] == list(ANVIL_KEYS[1:])
    for account in funded_accounts:
        assert await tn.token_balance(anvil_w3, deployment, account.address) >= 1_000_000 * 10**18


async def test_eip712_domain_and_type_hashes_match_the_contract(
    anvil_w3: AsyncWeb3, deployment: Deployment
) -> None:
    abi = tn.contract_abi("TokenNetwork")
    (separator,) = await tn.call_function(
        anvil_w3, deployment.token_network, abi, "domainSeparator"
    )
    assert separator == "0x" + domain_separator(deployment.chain_id, deployment.token_network).hex()
    for function, text in (
        ("BALANCE_PROOF_TYPEHASH", BALANCE_PROOF_TYPE),
        ("WITHDRAW_PROOF_TYPEHASH", WITHDRAW_PROOF_TYPE),
        ("COOPERATIVE_SETTLE_TYPEHASH", COOPERATIVE_SETTLE_TYPE),
    ):
        (on_chain,) = await tn.call_function(anvil_w3, deployment.token_network, abi, function)
        assert on_chain == "0x" + keccak(text=text).hex()


def test_decode_revert_names_only_our_errors() -> None:
    abi = tn.contract_abi("TokenNetwork")
    selector = next(s for s, e in abi.errors.items() if e.name == "ChannelAlreadyOpen")
    assert tn.decode_revert("0x" + (selector + b"\x00" * 32).hex()) == "ChannelAlreadyOpen"
    assert tn.decode_revert(HexBytes(selector + b"\x00" * 32)) == "ChannelAlreadyOpen"
    error_string = "0x08c379a0" + "00" * 64  # Error(string), not a custom error
    assert tn.decode_revert(error_string) is None
    assert tn.decode_revert(None) is None
    assert tn.decode_revert("0x") is None
