"""ChainActivities: every chain read and write of provisioning, given its web3 client,
signer and deployment (never building its own).

Sends are split so each step is durable before the next: `sign_transactions` returns raw
bytes and hashes (they land in workflow history), `broadcast_transactions` sends those same
bytes, `wait_for_receipts` polls by hash. Nonces are chosen by the wallet sequencer only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import ClientResponseError
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from temporalio import activity
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint, RPCResponse

from activities import token_network as tn
from activities.balance_proof import BalanceProof, CooperativeSettle, sign_cooperative_settle
from activities.block_watch import BlockWatch
from activities.errors import classified
from activities.liveness import heartbeating
from activities.shared_read import SharedRead
from activities.token_network import ChannelState, Deployment, GasLimit, UnsignedTx
from contracts.abi import ContractAbi
from workflows import ids
from workflows.messages import (
    BroadcastOutcome,
    CooperativeSettleInput,
    FillNoncesInput,
    ReadChainStateInput,
    ReadChannelInput,
    SignedTx,
    SignInput,
    WaitForReceiptsInput,
)
from workflows.provisioning.changes import (
    ChainSendsMined,
    ChainStateRead,
    ChannelPhase,
    GasLimits,
    OnChainChannel,
)
from workflows.provisioning.commands import SendKind, TxIntent
from workflows.provisioning.state import Channel, Payout, SignedClaim

log = structlog.get_logger(__name__)

MAX_ALLOWANCE = 2**256 - 1
_PHASES = {
    ChannelState.NONE: ChannelPhase.NONE,
    ChannelState.OPENED: ChannelPhase.OPENED,
    ChannelState.CLOSED: ChannelPhase.CLOSED,
    ChannelState.SETTLED: ChannelPhase.SETTLED,
}
# How often the chain head is polled for every receipt wait together.
RECEIPT_POLL_SECONDS = 0.1
# A receipt wait looks again this often without a new block (rebroadcast, dropped checks).
WAKE_WITHOUT_BLOCK_SECONDS = 1.0
# Node answers meaning "I already have this very transaction": success for a re-broadcast.
_ALREADY_HAVE = ("already known", "known transaction", "already imported", "nonce too low")
# A tx whose nonce the chain has used for something else for this long was replaced.
DROPPED_AFTER_SECONDS = 30.0
# A tx neither mined nor known to the node is sent again (same bytes) this often: an RPC node
# that restarted has lost its mempool, and nobody else will broadcast the tx.
REBROADCAST_SECONDS = 2.0
# Transactions per JSON-RPC batch when broadcasting (hosted RPC nodes cap batch sizes).
BROADCAST_BATCH_SIZE = 100


@dataclass(frozen=True)
class WalletState:
    """The treasury's side of a balance check, the same for every peer."""

    eth: int
    token: int
    allowance: int
    fees: dict[str, int]


class ChainActivities:
    def __init__(
        self, w3: AsyncWeb3, account: LocalAccount, deployment: Deployment, settle_timeout: int
    ) -> None:
        self._w3 = w3
        self._account = account
        self._deployment = deployment
        self._settle_timeout = settle_timeout
        # Every peer's balance check reads the same wallet: concurrent checks share a read.
        self._wallet_state = SharedRead(self._read_wallet)
        # Every receipt wait follows the same chain head: one poll serves them all.
        self._blocks = BlockWatch(self._read_head, RECEIPT_POLL_SECONDS)

    @activity.defn(name=ids.READ_CHAIN_STATE)
    @classified
    async def read_chain_state(self, request: ReadChainStateInput) -> ChainStateRead:
        """Balances, allowance, fees and the pair's channel. Read-only: safe to retry.

        Run as a local activity by new runs: those have no heartbeats (the workflow task
        that runs them is their liveness); older runs ask for it as an activity."""
        if activity.info().is_local:
            return await self._chain_state(request)
        return await heartbeating(self._chain_state)(request)

    async def _chain_state(self, request: ReadChainStateInput) -> ChainStateRead:
        deployment, ours = self._deployment, self._account.address
        peer = to_checksum_address(request.peer_address)
        views, wallet = await asyncio.gather(
            self._views(("getChannelId", ours, peer), ("getPairCounter", ours, peer)),
            self._wallet_state(),
        )
        [(channel_id,), (counter,)] = views
        channel = None
        if channel_id == tn.ZERO_CHANNEL_ID:
            next_id = tn.compute_channel_id(
                deployment.chain_id, deployment.token_network, ours, peer, counter
            )
        else:
            next_id = channel_id
            # getParticipant: (deposit, withdrawn, nonce, transferred, locked)
            (our_deposit, *_), (their_deposit, *_) = await self._views(
                ("getParticipant", HexBytes(channel_id), ours),
                ("getParticipant", HexBytes(channel_id), peer),
            )
            channel = Channel(channel_id, our_deposit, their_deposit)
        return ChainStateRead(
            eth_balance=wallet.eth,
            token_balance=wallet.token,
            allowance=wallet.allowance,
            channel=channel,
            next_channel_id=next_id,
            fee_per_gas=wallet.fees.get("maxFeePerGas") or wallet.fees["gasPrice"],
            gas_limits=_GAS_LIMITS,
        )

    @activity.defn(name=ids.READ_CHANNEL)
    @heartbeating
    @classified
    async def read_channel(self, request: ReadChannelInput) -> OnChainChannel:
        """The channel's phase, both sides, the settle window and the block number, with our
        wallet (for a top-up); once settled, the payout from its settle event. Read-only."""
        w3, deployment, ours = self._w3, self._deployment, self._account.address
        peer = to_checksum_address(request.peer_address)
        channel_id = request.channel_id
        info, block, wallet = await asyncio.gather(
            tn.get_channel(w3, deployment, channel_id),
            w3.eth.block_number,
            self._wallet_state(),
        )
        fields: dict = {}
        if info.state in (ChannelState.OPENED, ChannelState.CLOSED):
            our_side, their_side = await asyncio.gather(
                tn.get_participant(w3, deployment, channel_id, ours),
                tn.get_participant(w3, deployment, channel_id, peer),
            )
            fields = {
                "our_deposit": our_side.deposit,
                "their_deposit": their_side.deposit,
                "our_withdrawn": our_side.withdrawn,
                "their_withdrawn": their_side.withdrawn,
                "partner_nonce": their_side.nonce,
            }
        elif info.state is ChannelState.SETTLED:
            settlement = await tn.get_settlement(w3, deployment, channel_id)
            if settlement is not None:
                fields["payout"] = Payout(
                    our_amount=settlement.paid_to(ours),
                    their_amount=settlement.paid_to(peer),
                    cooperative=settlement.cooperative,
                )
        closer = info.closing_participant
        return OnChainChannel(
            channel_id=channel_id,
            phase=_PHASES[info.state],
            block_number=block,
            closed_by_us=closer is not None and to_checksum_address(closer) == ours,
            settle_block=info.settle_block,
            token_balance=wallet.token,
            eth_balance=wallet.eth,
            allowance=wallet.allowance,
            fee_per_gas=wallet.fees.get("maxFeePerGas") or wallet.fees["gasPrice"],
            gas_limits=_GAS_LIMITS,
            **fields,
        )

    @activity.defn(name=ids.SIGN_COOPERATIVE_SETTLE)
    @classified
    async def sign_cooperative_settle(self, request: CooperativeSettleInput) -> str:
        """Our EIP-712 signature (0x-hex) over the channel's final balances. Sends nothing;
        the partner's signature is needed too before anything can be sent."""
        settlement = CooperativeSettle.between(
            request.channel_id,
            {
                self._account.address: request.our_balance,
                request.peer_address: request.their_balance,
            },
        )
        signature = sign_cooperative_settle(
            self._account.key,
            settlement,
            self._deployment.chain_id,
            self._deployment.token_network,
        )
        return "0x" + signature.hex()

    async def _views(self, *calls: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """TokenNetwork views (`(function, *args)` each) as raw `eth_call`s in one JSON-RPC
        batch: one round trip, and none of web3's per-call formatting, which cost more CPU
        than the calls themselves with a hundred peers reading at once."""
        codec, to = tn.contract_abi("TokenNetwork"), self._deployment.token_network
        responses = await self._batch([_eth_call(to, codec, *call) for call in calls])
        return [
            _decoded(codec, call[0], response)
            for call, response in zip(calls, responses, strict=True)
        ]

    async def _read_head(self) -> int:
        return await self._w3.eth.block_number

    async def _read_wallet(self) -> WalletState:
        """Balances, allowance and fees in one JSON-RPC batch (see `_views`)."""
        ours, deployment = self._account.address, self._deployment
        token = tn.contract_abi("M2MToken")
        eth, balance, allowed, block, priority = await self._batch(
            [
                (RPCEndpoint("eth_getBalance"), [ours, "latest"]),
                _eth_call(deployment.token, token, "balanceOf", ours),
                _eth_call(deployment.token, token, "allowance", ours, deployment.token_network),
                (RPCEndpoint("eth_getBlockByNumber"), ["latest", False]),
                (RPCEndpoint("eth_maxPriorityFeePerGas"), []),
            ]
        )
        base_fee = (_result(block) or {}).get("baseFeePerGas")
        if base_fee is None or "error" in priority:
            # A chain without base fee, or a node without the priority-fee call: web3 knows
            # the fallbacks.
            fees = await tn.fee_fields(self._w3)
        else:
            tip = int(_result(priority), 16)
            # As `token_network.fee_fields`: room for the base fee to double.
            fees = {"maxFeePerGas": 2 * int(base_fee, 16) + tip, "maxPriorityFeePerGas": tip}
        return WalletState(
            eth=int(_result(eth), 16),
            token=_decoded(token, "balanceOf", balance)[0],
            allowance=_decoded(token, "allowance", allowed)[0],
            fees=fees,
        )

    @activity.defn(name=ids.READ_NEXT_NONCE)
    @heartbeating
    @classified
    async def read_next_nonce(self) -> int:
        """The wallet's next nonce including pending txs. Read-only: safe to retry."""
        return await self._w3.eth.get_transaction_count(self._account.address, "pending")

    @activity.defn(name=ids.SIGN_TRANSACTIONS)
    @heartbeating
    @classified
    async def sign_transactions(self, request: SignInput) -> list[SignedTx]:
        """Sign the intents with consecutive nonces from `first_nonce`. Sends nothing, so a
        retry only signs again; whichever result is recorded first is the one broadcast."""
        # Never below what the chain has mined: the wallet may have been used elsewhere.
        mined = await self._w3.eth.get_transaction_count(self._account.address, "latest")
        first = max(request.first_nonce, mined)
        fees = await tn.fee_fields(self._w3)
        signed = []
        for offset, intent in enumerate(request.intents):
            tx = self._account.sign_transaction(
                {**self._build(intent), **fees, "nonce": first + offset}
            )
            signed.append(
                SignedTx(
                    intent=intent,
                    nonce=first + offset,
                    tx_hash="0x" + tx.hash.hex().removeprefix("0x"),
                    raw="0x" + tx.raw_transaction.hex().removeprefix("0x"),
                )
            )
        return signed

    @activity.defn(name=ids.BROADCAST_TRANSACTIONS)
    @heartbeating
    @classified
    async def broadcast_transactions(self, txs: list[SignedTx]) -> list[BroadcastOutcome]:
        """Send the recorded bytes in nonce order, many per JSON-RPC batch. Safe to retry:
        re-sending a transaction the node already has is answered "already known" / "nonce
        too low", counted as sent."""
        ordered = sorted(txs, key=lambda t: t.nonce)
        outcomes = []
        for start in range(0, len(ordered), BROADCAST_BATCH_SIZE):
            chunk = ordered[start : start + BROADCAST_BATCH_SIZE]
            errors = await self._send_raws(chunk)
            outcomes += [
                BroadcastOutcome(tx.tx_hash, tx.nonce, error)
                for tx, error in zip(chunk, errors, strict=True)
            ]
        return outcomes

    @activity.defn(name=ids.FILL_NONCE_GAPS)
    @heartbeating
    @classified
    async def fill_nonce_gaps(self, request: FillNoncesInput) -> None:
        """Use each refused nonce with a zero-value self-transfer so later nonces can mine.
        Safe to retry: a nonce already used (by the filler or anything) is left alone."""
        fees = await tn.fee_fields(self._w3)
        own = self._account.address
        for nonce in request.nonces:
            filler = self._account.sign_transaction(
                {
                    "to": own,
                    "value": 0,
                    "gas": GasLimit.TRANSFER_ETH,
                    "nonce": nonce,
                    "chainId": self._deployment.chain_id,
                    **fees,
                }
            )
            try:
                await self._w3.eth.send_raw_transaction(filler.raw_transaction)
            except Web3RPCError as err:
                if not _already_have(str(err)):
                    raise
            log.warning("NONCE_GAP_FILLED", nonce=nonce, address=own)

    @activity.defn(name=ids.WAIT_FOR_RECEIPTS)
    @classified
    async def wait_for_receipts(self, request: WaitForReceiptsInput) -> ChainSendsMined:
        """Look for every tx's receipt at each new block until all are in; report the
        reverted ones by name; then, when asked (`read_after`), read the pair's chain state.

        Safe to retry: it sends nothing new. A tx the node no longer knows (neither mined nor
        in its mempool: the node restarted) is broadcast again from its recorded bytes. A tx
        whose nonce was used by another tx (replaced or dropped) is reported as reverted, and
        the workflow re-reads the chain instead of waiting forever.
        """
        pending = {tx.tx_hash: tx for tx in request.txs}
        # Hash -> the receipt as the node sent it; None: dropped (nonce used by another tx).
        receipts: dict[str, dict[str, Any] | None] = {}
        nonce_used_since: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        look_again_at = {tx_hash: loop.time() + REBROADCAST_SECONDS for tx_hash in pending}
        check_missing_at = loop.time() + REBROADCAST_SECONDS
        head = None
        while pending:
            found = await self._receipts(list(pending))
            for tx_hash, receipt in zip(list(pending), found, strict=True):
                if receipt is not None:
                    receipts[tx_hash] = receipt
                    del pending[tx_hash]
            if pending and loop.time() >= check_missing_at:
                # Only a tx that failed to mine for a while needs these.
                check_missing_at = loop.time() + REBROADCAST_SECONDS
                await self._missing_receipts(pending, receipts, nonce_used_since, look_again_at)
            activity.heartbeat(len(receipts))
            if pending:
                # Nothing can change before the next block; the timeout keeps the checks
                # above (and the heartbeat) going on a stalled chain.
                head = await self._blocks.after(head, timeout=WAKE_WITHOUT_BLOCK_SECONDS)
        reverted = []
        for tx in request.txs:
            receipt = receipts[tx.tx_hash]
            if receipt is None:
                reverted.append(f"{tx.intent.kind}: dropped (nonce {tx.nonce} used by another tx)")
            elif int(receipt["status"], 16) != 1:
                reverted.append(f"{tx.intent.kind}: {await self._revert_reason(tx)}")
        state = None
        if request.read_after is not None:
            state = await self._chain_state(request.read_after)
        return ChainSendsMined(reverted=tuple(reverted), state=state)

    async def _missing_receipts(
        self,
        pending: dict[str, SignedTx],
        receipts: dict[str, dict[str, Any] | None],
        nonce_used_since: dict[str, float],
        look_again_at: dict[str, float],
    ) -> None:
        """Txs without a receipt: dropped once their nonce has long been used by another tx;
        sent again when the node does not know them (one nonce read for them all)."""
        now = asyncio.get_running_loop().time()
        mined_nonces = await self._w3.eth.get_transaction_count(self._account.address, "latest")
        for tx_hash, tx in list(pending.items()):
            if mined_nonces > tx.nonce:
                first_seen = nonce_used_since.setdefault(tx_hash, now)
                if now - first_seen > DROPPED_AFTER_SECONDS:
                    receipts[tx_hash] = None
                    del pending[tx_hash]
            elif now >= look_again_at[tx_hash]:
                look_again_at[tx_hash] = now + REBROADCAST_SECONDS
                if not await self._is_known(tx_hash):
                    [error] = await self._send_raws([tx])
                    log.warning("TX_REBROADCAST", txHash=tx_hash, nonce=tx.nonce, error=error)

    def _build(self, intent: TxIntent) -> UnsignedTx:
        deployment = self._deployment
        match intent.kind:
            case SendKind.APPROVE:
                # Unlimited allowance for our own TokenNetwork: per-channel approvals from
                # parallel workflows would overwrite each other.
                return tn.build_approve(deployment, MAX_ALLOWANCE)
            case SendKind.OPEN_CHANNEL:
                assert intent.partner is not None
                return tn.build_open_channel(
                    deployment, to_checksum_address(intent.partner), self._settle_timeout
                )
            case SendKind.SET_TOTAL_DEPOSIT:
                assert intent.channel_id is not None and intent.total_deposit is not None
                return tn.build_set_total_deposit(
                    deployment, intent.channel_id, self._account.address, intent.total_deposit
                )
            case SendKind.CLOSE_CHANNEL:
                assert intent.channel_id is not None
                if intent.proof is None:  # nothing received from the partner
                    return tn.build_close_channel(deployment, intent.channel_id)
                proof, signature = _balance_proof(intent.channel_id, intent.proof)
                return tn.build_close_channel(deployment, intent.channel_id, proof, signature)
            case SendKind.UPDATE_NON_CLOSING:
                assert intent.channel_id is not None and intent.proof is not None
                proof, signature = _balance_proof(intent.channel_id, intent.proof)
                return tn.build_update_non_closing(deployment, proof, signature)
            case SendKind.SETTLE_CHANNEL:
                assert intent.channel_id is not None
                return tn.build_settle(deployment, intent.channel_id)
            case SendKind.COOPERATIVE_SETTLE:
                terms = intent.settlement
                assert intent.channel_id and intent.partner and terms is not None
                ours, partner = self._account.address, to_checksum_address(intent.partner)
                settlement = CooperativeSettle.between(
                    intent.channel_id, {ours: terms.our_balance, partner: terms.their_balance}
                )
                signatures = {ours: terms.our_signature, partner: terms.their_signature}
                return tn.build_cooperative_settle(
                    deployment,
                    settlement,
                    _signature_bytes(signatures[settlement.participant1]),
                    _signature_bytes(signatures[settlement.participant2]),
                )
        raise ValueError(f"unknown intent {intent.kind}")

    async def _send_raws(self, txs: list[SignedTx]) -> list[str | None]:
        """Each tx's refusal (None: sent), the txs sent as one JSON-RPC batch: one round trip
        instead of one per tx, each of which waited its turn on an event loop busy with
        every other peer's work."""
        responses = await self._batch(
            [(RPCEndpoint("eth_sendRawTransaction"), [tx.raw]) for tx in txs]
        )
        errors: list[str | None] = []
        for tx, response in zip(txs, responses, strict=True):
            error = response.get("error")
            if error is None or (_already_have(str(error)) and await self._is_known(tx.tx_hash)):
                errors.append(None)
            else:
                errors.append(str(error))
        return errors

    async def _receipts(self, tx_hashes: list[str]) -> list[dict[str, Any] | None]:
        """The receipts (None: not mined yet) as the node sends them, in one JSON-RPC batch:
        web3 would format every log of every receipt, which costs more than the lookup."""
        responses = await self._batch(
            [(RPCEndpoint("eth_getTransactionReceipt"), [tx_hash]) for tx_hash in tx_hashes]
        )
        return [_result(response) for response in responses]

    async def _batch(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse]:
        """The answers to `requests` (in their order), sent as one JSON-RPC batch; a node that
        refuses batches (an answer for the batch as a whole) gets them one by one."""
        provider = self._w3.provider
        try:
            responses = await provider.make_batch_request(requests)
        except NotImplementedError:  # a provider without batches
            responses = None
        except ClientResponseError as err:
            if err.status >= 500:
                raise  # the node's own trouble: retried
            responses = None  # the batch itself refused (too large, not supported)
        if isinstance(responses, list) and len(responses) == len(requests):
            return responses
        return [await provider.make_request(method, params) for method, params in requests]

    async def _is_known(self, tx_hash: str) -> bool:
        try:
            await self._w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    async def _revert_reason(self, tx: SignedTx) -> str:
        # Replay what was sent, not a rebuild from the intent: the worker that signed it may
        # have run with another config (a corrected settle timeout, say).
        receipt = await self._w3.eth.get_transaction_receipt(tx.tx_hash)
        sent = await self._w3.eth.get_transaction(tx.tx_hash)
        data = "0x" + bytes(sent["input"]).hex()
        call = {"to": sent["to"], "data": data, "gas": sent["gas"], "value": sent["value"]}
        error = await tn.replay_error(self._w3, self._account.address, call, receipt)
        return error.name if error else "reverted"


_GAS_LIMITS = GasLimits(
    approve=GasLimit.APPROVE,
    open_channel=GasLimit.OPEN_CHANNEL,
    set_total_deposit=GasLimit.SET_TOTAL_DEPOSIT,
)


def _balance_proof(channel_id: str, claim: SignedClaim) -> tuple[BalanceProof, bytes]:
    proof = BalanceProof(
        channel_id=channel_id,
        nonce=claim.nonce,
        transferred_amount=claim.transferred_amount,
        locked_amount=claim.locked_amount,
        locks_root=claim.locks_root,
    )
    return proof, _signature_bytes(claim.signature)


def _signature_bytes(signature: str) -> bytes:
    return bytes.fromhex(signature.removeprefix("0x"))


def _eth_call(
    to: str, codec: ContractAbi, function: str, *args: Any
) -> tuple[RPCEndpoint, list[Any]]:
    data = "0x" + codec.encode_call(function, *args).hex()
    return RPCEndpoint("eth_call"), [{"to": to, "data": data}, "latest"]


def _decoded(codec: ContractAbi, function: str, response: RPCResponse) -> tuple[Any, ...]:
    if "error" in response:
        raise _call_error(response["error"])
    return codec.decode_result(function, HexBytes(response["result"]))


def _result(response: RPCResponse) -> Any:
    if "error" in response:
        raise Web3RPCError(str(response["error"]))
    return response.get("result")


def _call_error(error: Any) -> Exception:
    """A failed raw `eth_call` as web3 would raise it: a revert (will revert again) apart
    from the node's own trouble (retried)."""
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    if "revert" in message.lower():
        data = error.get("data") if isinstance(error, dict) else None
        return ContractLogicError(message, data=data)
    return Web3RPCError(str(error))


def _already_have(error: str) -> bool:
    message = error.lower()
    return any(marker in message for marker in _ALREADY_HAVE)
