"""Typed client for the TokenNetwork contracts: views over AsyncWeb3, transaction builders,
revert and event decoding.

Builders are pure: they return an `UnsignedTx` (to, data, value, gas, chainId) with a fixed gas
limit and send nothing, because provisioning signs with its own nonce stream and pipelines
approve + open + setTotalDeposit into one block, where `estimate_gas` of a later transaction
would fail against state that does not exist yet. The limits are the figures `bench/gas.py`
measures plus a margin (see BENCHMARKS.md, "## Gas").

`send_and_wait` / `send_batch` are the small sending path used by deploy, fund, the bench and
the tests: they fill nonce and fees, sign, broadcast and wait; a reverted receipt raises
`TransactionReverted` naming the contract's custom error.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from functools import cache
from typing import Any, TypedDict

import eth_abi
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from pydantic import BaseModel, ConfigDict
from web3 import AsyncWeb3
from web3.types import TxReceipt

from activities.balance_proof import BalanceProof, CooperativeSettle, WithdrawProof
from contracts import CONTRACTS, load_artifact
from contracts.abi import ContractAbi, DecodedError, DecodedEvent

ZERO_CHANNEL_ID = "0x" + "00" * 32


class GasLimit(enum.IntEnum):
    """Fixed gas limits: the worst case `bench/gas.py` measures as `eth_estimateGas` (gas
    before refunds; cold storage, payees with no token balance) plus about 30%."""

    APPROVE = 65_000
    MINT = 90_000
    OPEN_CHANNEL = 130_000
    SET_TOTAL_DEPOSIT = 120_000
    CLOSE_CHANNEL = 120_000
    UPDATE_NON_CLOSING = 110_000
    SETTLE = 170_000
    COOPERATIVE_SETTLE = 180_000
    WITHDRAW = 130_000
    TRANSFER_ETH = 21_000
    DEPLOY_TOKEN = 900_000
    DEPLOY_REGISTRY = 3_500_000
    CREATE_TOKEN_NETWORK = 3_000_000


class ChannelState(enum.IntEnum):
    """`TokenNetwork.ChannelState`; NONE means no channel has that id."""

    NONE = 0
    OPENED = 1
    CLOSED = 2
    SETTLED = 3


class Deployment(BaseModel):
    """Where the contracts live: the JSON `paychan deploy` writes and configs point at."""

    model_config = ConfigDict(frozen=True)

    chain_id: int
    registry: str
    token: str
    token_network: str
    deployed_block: int


class ChannelInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel_id: str
    state: ChannelState
    participant1: str
    participant2: str
    settle_timeout: int
    settle_block: int
    """Block after which `settleChannel` succeeds; 0 while open."""
    closing_participant: str | None

    @property
    def participants(self) -> tuple[str, str]:
        return (self.participant1, self.participant2)

    def partner_of(self, address: str) -> str:
        address = to_checksum_address(address)
        if address == self.participant1:
            return self.participant2
        if address == self.participant2:
            return self.participant1
        raise ValueError(f"{address} is not a participant of channel {self.channel_id}")


class ParticipantInfo(BaseModel):
    """One side of a channel; nonce / amounts are from the latest proof *this participant
    signed* that reached the chain (zero until close)."""

    model_config = ConfigDict(frozen=True)

    channel_id: str
    address: str
    deposit: int
    withdrawn: int
    nonce: int
    transferred_amount: int
    locked_amount: int


class UnsignedTx(TypedDict):
    to: str
    data: str
    value: int
    gas: int
    chainId: int


class TransactionReverted(RuntimeError):
    """A mined transaction has status 0; `error` is the contract's custom error name when the
    revert could be replayed and decoded."""

    def __init__(self, receipt: TxReceipt, error: DecodedError | None) -> None:
        self.receipt = receipt
        self.error = error.name if error else None
        self.error_args = error.args if error else {}
        super().__init__(
            f"transaction {receipt['transactionHash'].hex()} reverted"
            + (f": {error.name}{error.args}" if error else "")
        )


# ---------------------------------------------------------------- codecs


@cache
def contract_abi(name: str) -> ContractAbi:
    return ContractAbi(load_artifact(name))


def _token_network() -> ContractAbi:
    return contract_abi("TokenNetwork")


def _token() -> ContractAbi:
    return contract_abi("M2MToken")


def decode_revert_error(error_data: str | bytes | None) -> DecodedError | None:
    """Custom error (name and arguments) in revert data from any of our contracts."""
    if not error_data:
        return None
    data = HexBytes(error_data)
    for name in CONTRACTS:
        decoded = contract_abi(name).decode_error(data)
        if decoded is not None:
            return decoded
    return None


def decode_revert(error_data: str | bytes | None) -> str | None:
    """The custom error name ("ChannelAlreadyOpen", ...) in revert data, or None if the data
    is not one of our contracts' errors."""
    decoded = decode_revert_error(error_data)
    return decoded.name if decoded else None


def decode_events(receipt: TxReceipt) -> list[DecodedEvent]:
    """Events of our contracts in a receipt, in log order (foreign logs are skipped)."""
    events = []
    for log in receipt["logs"]:
        for name in CONTRACTS:
            event = contract_abi(name).decode_log(log["address"], log["topics"], log["data"])
            if event is not None:
                events.append(event)
                break
    return events


def compute_channel_id(chain_id: int, token_network: str, a: str, b: str, counter: int) -> str:
    """The id the contract gives the pair's channel number `counter` (0-based):
    keccak256(abi.encode(chainId, tokenNetwork, lowerAddress, higherAddress, counter))."""
    low, high = sorted((to_checksum_address(a), to_checksum_address(b)), key=lambda x: int(x, 16))
    encoded = eth_abi.encode(
        ("uint256", "address", "address", "address", "uint256"),
        (chain_id, to_checksum_address(token_network), low, high, counter),
    )
    return "0x" + keccak(encoded).hex()


# ---------------------------------------------------------------- views


async def call_function(
    w3: AsyncWeb3, to: str, codec: ContractAbi, function: str, *args: Any
) -> tuple[Any, ...]:
    """eth_call of any view of our contracts: `call_function(w3, address,
    contract_abi("TokenNetwork"), "token")` -> decoded outputs."""
    data = await w3.eth.call({"to": to, "data": "0x" + codec.encode_call(function, *args).hex()})
    return codec.decode_result(function, data)


async def get_channel_id(w3: AsyncWeb3, deployment: Deployment, a: str, b: str) -> str | None:
    """The pair's current (open or closed, not yet settled) channel, or None."""
    (channel_id,) = await call_function(
        w3, deployment.token_network, _token_network(), "getChannelId", a, b
    )
    return None if channel_id == ZERO_CHANNEL_ID else channel_id


async def get_pair_counter(w3: AsyncWeb3, deployment: Deployment, a: str, b: str) -> int:
    (counter,) = await call_function(
        w3, deployment.token_network, _token_network(), "getPairCounter", a, b
    )
    return counter


async def next_channel_id(w3: AsyncWeb3, deployment: Deployment, a: str, b: str) -> str:
    """The id the pair's next `openChannel` will create (valid while no channel is open)."""
    counter = await get_pair_counter(w3, deployment, a, b)
    return compute_channel_id(deployment.chain_id, deployment.token_network, a, b, counter)


async def get_channel(w3: AsyncWeb3, deployment: Deployment, channel_id: str) -> ChannelInfo:
    p1, p2, state, timeout, settle_block, closer = await call_function(
        w3, deployment.token_network, _token_network(), "getChannel", HexBytes(channel_id)
    )
    return ChannelInfo(
        channel_id=channel_id,
        state=ChannelState(state),
        participant1=p1,
        participant2=p2,
        settle_timeout=timeout,
        settle_block=settle_block,
        closing_participant=None if int(closer, 16) == 0 else closer,
    )


async def get_participant(
    w3: AsyncWeb3, deployment: Deployment, channel_id: str, participant: str
) -> ParticipantInfo:
    deposit, withdrawn, nonce, transferred, locked = await call_function(
        w3,
        deployment.token_network,
        _token_network(),
        "getParticipant",
        HexBytes(channel_id),
        participant,
    )
    return ParticipantInfo(
        channel_id=channel_id,
        address=to_checksum_address(participant),
        deposit=deposit,
        withdrawn=withdrawn,
        nonce=nonce,
        transferred_amount=transferred,
        locked_amount=locked,
    )


class Settlement(BaseModel):
    """What settling a channel paid each participant (`ChannelSettled` or
    `ChannelCooperativeSettled`)."""

    model_config = ConfigDict(frozen=True)

    channel_id: str
    cooperative: bool
    amounts: dict[str, int]
    """Checksum address -> token amount paid."""
    block_number: int
    tx_hash: str

    def paid_to(self, address: str) -> int:
        return self.amounts.get(to_checksum_address(address), 0)


_SETTLED_TOPIC = keccak(text="ChannelSettled(bytes32,address,uint256,address,uint256)")
_COOPERATIVE_SETTLED_TOPIC = keccak(
    text="ChannelCooperativeSettled(bytes32,address,uint256,address,uint256)"
)
_NEW_DEPOSIT_TOPIC = keccak(text="ChannelNewDeposit(bytes32,address,uint256)")
_WITHDRAWAL_TOPIC = keccak(text="ChannelWithdrawal(bytes32,address,uint256,uint256)")


def _topic_word(value: str) -> str:
    """An indexed bytes32 or address as a log filter topic (32 bytes, left-padded)."""
    return "0x" + HexBytes(value).hex().removeprefix("0x").lower().rjust(64, "0")


async def get_settlement(
    w3: AsyncWeb3, deployment: Deployment, channel_id: str, from_block: int | None = None
) -> Settlement | None:
    """The settle event of `channel_id`, or None while it is not settled. The contract
    deletes participant amounts on settlement, so the event is the record of the payout.
    Scans from `from_block` (default: the deployment block)."""
    logs = await w3.eth.get_logs(
        {
            "address": to_checksum_address(deployment.token_network),
            "fromBlock": deployment.deployed_block if from_block is None else from_block,
            "toBlock": "latest",
            "topics": [
                ["0x" + _SETTLED_TOPIC.hex(), "0x" + _COOPERATIVE_SETTLED_TOPIC.hex()],
                _topic_word(channel_id),
            ],
        }
    )
    for log in logs:
        event = _token_network().decode_log(log["address"], log["topics"], log["data"])
        if event is None:
            continue
        args = event.args
        return Settlement(
            channel_id=channel_id,
            cooperative=event.name == "ChannelCooperativeSettled",
            amounts={
                to_checksum_address(args["participant1"]): args["participant1Amount"],
                to_checksum_address(args["participant2"]): args["participant2Amount"],
            },
            block_number=log["blockNumber"],
            tx_hash="0x" + bytes(log["transactionHash"]).hex(),
        )
    return None


async def get_funding(
    w3: AsyncWeb3, deployment: Deployment, channel_id: str, participant: str
) -> tuple[int, int]:
    """`participant`'s total deposit and total withdrawn on the channel, from its
    `ChannelNewDeposit` and `ChannelWithdrawal` events (both carry running totals), so also
    once the channel is settled and the contract has deleted its state."""
    logs = await w3.eth.get_logs(
        {
            "address": to_checksum_address(deployment.token_network),
            "fromBlock": deployment.deployed_block,
            "toBlock": "latest",
            "topics": [
                ["0x" + _NEW_DEPOSIT_TOPIC.hex(), "0x" + _WITHDRAWAL_TOPIC.hex()],
                _topic_word(channel_id),
                _topic_word(participant),
            ],
        }
    )
    deposit = withdrawn = 0
    for log in logs:
        event = _token_network().decode_log(log["address"], log["topics"], log["data"])
        if event is None:
            continue
        # Totals only grow: the largest seen is the latest.
        if event.name == "ChannelNewDeposit":
            deposit = max(deposit, event.args["totalDeposit"])
        else:
            withdrawn = max(withdrawn, event.args["totalWithdraw"])
    return deposit, withdrawn


async def get_token_network(w3: AsyncWeb3, registry: str, token: str) -> str | None:
    (address,) = await call_function(
        w3, registry, contract_abi("TokenNetworkRegistry"), "getTokenNetwork", token
    )
    return None if int(address, 16) == 0 else address


async def token_balance(w3: AsyncWeb3, deployment: Deployment, address: str) -> int:
    (balance,) = await call_function(w3, deployment.token, _token(), "balanceOf", address)
    return balance


async def allowance(
    w3: AsyncWeb3, deployment: Deployment, owner: str, spender: str | None = None
) -> int:
    """How much `spender` (default: the token network) may pull from `owner`."""
    (amount,) = await call_function(
        w3, deployment.token, _token(), "allowance", owner, spender or deployment.token_network
    )
    return amount


async def eth_balance(w3: AsyncWeb3, address: str) -> int:
    return await w3.eth.get_balance(to_checksum_address(address))


# ---------------------------------------------------------------- builders


def _tx(deployment: Deployment, to: str, data: bytes, gas: int, value: int = 0) -> UnsignedTx:
    return UnsignedTx(
        to=to_checksum_address(to),
        data="0x" + data.hex(),
        value=value,
        gas=int(gas),
        chainId=deployment.chain_id,
    )


def build_approve(deployment: Deployment, amount: int, spender: str | None = None) -> UnsignedTx:
    """Let `spender` (default: the token network) pull `amount` M2M from the sender."""
    data = _token().encode_call("approve", spender or deployment.token_network, amount)
    return _tx(deployment, deployment.token, data, GasLimit.APPROVE)


def build_mint(deployment: Deployment, to: str, amount: int) -> UnsignedTx:
    """M2M faucet: open to anyone on dev chains, to the token's deployer elsewhere."""
    return _tx(
        deployment, deployment.token, _token().encode_call("mint", to, amount), GasLimit.MINT
    )


def build_open_channel(deployment: Deployment, partner: str, settle_timeout: int) -> UnsignedTx:
    data = _token_network().encode_call("openChannel", partner, settle_timeout)
    return _tx(deployment, deployment.token_network, data, GasLimit.OPEN_CHANNEL)


def build_set_total_deposit(
    deployment: Deployment, channel_id: str, participant: str, total_deposit: int
) -> UnsignedTx:
    """Raise `participant`'s deposit to `total_deposit`; the sender pays the difference."""
    data = _token_network().encode_call(
        "setTotalDeposit", HexBytes(channel_id), participant, total_deposit
    )
    return _tx(deployment, deployment.token_network, data, GasLimit.SET_TOTAL_DEPOSIT)


def _proof_args(proof: BalanceProof) -> tuple[Any, ...]:
    return (
        HexBytes(proof.channel_id),
        proof.nonce,
        proof.transferred_amount,
        proof.locked_amount,
        HexBytes(proof.locks_root),
    )


def build_close_channel(
    deployment: Deployment,
    channel_id: str,
    partner_proof: BalanceProof | None = None,
    partner_signature: bytes = b"",
) -> UnsignedTx:
    """Close as a participant, with the partner's latest signed proof (None: nothing
    received)."""
    proof = partner_proof or BalanceProof(channel_id=channel_id, nonce=0, transferred_amount=0)
    if HexBytes(proof.channel_id) != HexBytes(channel_id):
        raise ValueError("the balance proof belongs to another channel")
    data = _token_network().encode_call("closeChannel", *_proof_args(proof), partner_signature)
    return _tx(deployment, deployment.token_network, data, GasLimit.CLOSE_CHANNEL)


def build_update_non_closing(
    deployment: Deployment, closer_proof: BalanceProof, closer_signature: bytes
) -> UnsignedTx:
    """As the non-closing participant, submit the closer's latest signed proof."""
    data = _token_network().encode_call(
        "updateNonClosingBalanceProof", *_proof_args(closer_proof), closer_signature
    )
    return _tx(deployment, deployment.token_network, data, GasLimit.UPDATE_NON_CLOSING)


def build_settle(deployment: Deployment, channel_id: str) -> UnsignedTx:
    data = _token_network().encode_call("settleChannel", HexBytes(channel_id))
    return _tx(deployment, deployment.token_network, data, GasLimit.SETTLE)


def build_cooperative_settle(
    deployment: Deployment,
    settlement: CooperativeSettle,
    participant1_signature: bytes,
    participant2_signature: bytes,
) -> UnsignedTx:
    data = _token_network().encode_call(
        "cooperativeSettle",
        HexBytes(settlement.channel_id),
        settlement.participant1_balance,
        settlement.participant2_balance,
        participant1_signature,
        participant2_signature,
    )
    return _tx(deployment, deployment.token_network, data, GasLimit.COOPERATIVE_SETTLE)


def build_withdraw(
    deployment: Deployment, proof: WithdrawProof, partner_signature: bytes
) -> UnsignedTx:
    """Sent by `proof.participant`, with the partner's signature over the proof."""
    data = _token_network().encode_call(
        "withdraw",
        HexBytes(proof.channel_id),
        proof.total_withdraw,
        proof.expiration,
        partner_signature,
    )
    return _tx(deployment, deployment.token_network, data, GasLimit.WITHDRAW)


def build_create_token_network(deployment: Deployment, token: str) -> UnsignedTx:
    """Registry call creating `token`'s network (deploy uses it for M2M)."""
    data = contract_abi("TokenNetworkRegistry").encode_call("createTokenNetwork", token)
    return _tx(deployment, deployment.registry, data, GasLimit.CREATE_TOKEN_NETWORK)


def build_transfer_eth(deployment: Deployment, to: str, amount: int) -> UnsignedTx:
    return _tx(deployment, to, b"", GasLimit.TRANSFER_ETH, value=amount)


# ---------------------------------------------------------------- sending


async def fee_fields(w3: AsyncWeb3) -> dict[str, int]:
    """EIP-1559 fees with room for the base fee to double; legacy gasPrice where the chain
    has no base fee."""
    block = await w3.eth.get_block("latest")
    base_fee = block.get("baseFeePerGas")
    if base_fee is None:
        return {"gasPrice": await w3.eth.gas_price}
    priority = await w3.eth.max_priority_fee
    return {"maxFeePerGas": 2 * base_fee + priority, "maxPriorityFeePerGas": priority}


async def replay_error(
    w3: AsyncWeb3, sender: str, tx: dict[str, Any], receipt: TxReceipt
) -> DecodedError | None:
    # A receipt carries no revert data: re-run the call on the state before its block, with
    # that block's number and time (block overrides, so block-number checks replay too).
    # Exact on an automining chain (one tx per block); a best-effort name otherwise.
    call = {
        "from": sender,
        "data": tx["data"],
        "gas": hex(tx["gas"]),
        "value": hex(tx.get("value", 0)),
    }
    if tx.get("to"):
        call["to"] = tx["to"]
    number = receipt["blockNumber"]
    block = await w3.eth.get_block(number)
    overrides = {"number": hex(number), "time": hex(block["timestamp"])}
    response = await w3.provider.make_request("eth_call", [call, hex(number - 1), {}, overrides])
    error = response.get("error")
    if error and error.get("code") == -32602:  # node without block overrides
        response = await w3.provider.make_request("eth_call", [call, hex(number - 1)])
        error = response.get("error")
    return decode_revert_error(error.get("data")) if isinstance(error, dict) else None


async def send_batch(
    w3: AsyncWeb3,
    account: LocalAccount,
    txs: Sequence[UnsignedTx | dict[str, Any]],
    *,
    timeout: float = 120.0,
) -> list[TxReceipt]:
    """Sign `txs` with consecutive nonces, broadcast them all, then wait for every receipt
    (so they can land in one block). Raises TransactionReverted for the first reverted one."""
    nonce = await w3.eth.get_transaction_count(account.address, "pending")
    fees = await fee_fields(w3)
    hashes = []
    for offset, tx in enumerate(txs):
        signed = account.sign_transaction({**tx, **fees, "nonce": nonce + offset})
        hashes.append(await w3.eth.send_raw_transaction(signed.raw_transaction))
    receipts = [
        await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
        for tx_hash in hashes
    ]
    for tx, receipt in zip(txs, receipts, strict=True):
        if receipt["status"] != 1:
            raise TransactionReverted(
                receipt, await replay_error(w3, account.address, dict(tx), receipt)
            )
    return receipts


async def send_and_wait(
    w3: AsyncWeb3, account: LocalAccount, tx: UnsignedTx | dict[str, Any], *, timeout: float = 120.0
) -> TxReceipt:
    (receipt,) = await send_batch(w3, account, [tx], timeout=timeout)
    return receipt
