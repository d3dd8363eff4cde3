"""What crosses the Temporal boundary: workflow inputs, status documents, activity I/O.

Plain frozen dataclasses (the pydantic data converter serialises them), so workflow modules
stay free of web3 and sockets. Wei amounts shown to operators are decimal strings.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass

from workflows.provisioning.commands import TxIntent
from workflows.provisioning.state import ProvisioningState


@dataclass(frozen=True)
class CloseChannel:
    """The `close` signal's argument: close cooperatively (one transaction, no settle
    window) when the partner signs, else unilaterally."""

    cooperative: bool = False
    reason: str = "operator"


@dataclass(frozen=True)
class PeerConnected:
    """The `peer_connected` signal's argument: the peer's evmAddress in the connector's
    config as the link came up (None: it has none). A SKIPPED run given one provisions, so
    adding the address and restarting the connector is enough."""

    peer_address: str | None = None


@dataclass(frozen=True)
class CarriedSignal:
    """A signal a channel run had taken but not acted on when it continued as new (it came
    while the run waited for its notifications); the next run acts on it. `name` is the
    signal's name in `ids`; `close` and `connected` are the arguments of `close` and
    `peer_connected`."""

    name: str
    close: CloseChannel | None = None
    connected: PeerConnected | None = None


@dataclass(frozen=True)
class ChannelParams:
    """Everything a channel workflow needs; `carried` and `carried_signals` are set only by
    continue-as-new."""

    node_id: str
    peer_id: str
    token: str
    chain_id: int
    token_network: str
    our_address: str
    peer_address: str | None
    deposit_target: int
    funds_recheck_seconds: float = 60.0
    carried: ProvisioningState | None = None
    carried_signals: tuple[CarriedSignal, ...] = ()
    # Channel keeping after READY (see workflows/provisioning/keeping.py). Top up when our
    # remaining deposit falls below `top_up_below` wei (0: never); close after this long
    # without a claim moving (0: never); read the channel at least this often (keep it well
    # inside the settle window, so a partner's close is answered in time); block time turns
    # the settle window (blocks) into a timer.
    top_up_below: int = 0
    idle_close_seconds: float = 24 * 3600.0
    keep_check_seconds: float = 3600.0
    seconds_per_block: float = 2.0


@dataclass(frozen=True)
class ShortfallStatus:
    address: str
    eth_missing: str
    token_missing: str


@dataclass(frozen=True)
class PayoutStatus:
    """What settling the channel paid each side (wei, decimal strings)."""

    our_amount: str
    their_amount: str
    cooperative: bool


@dataclass(frozen=True)
class ChannelStatus:
    """The `status` query document, as the Temporal UI and `paychan channels` show it."""

    node_id: str
    peer_id: str
    token: str
    stage: str
    our_address: str
    peer_address: str | None
    channel_id: str | None
    our_deposit: str
    their_deposit: str
    deposit_target: str
    last_error: str | None
    shortfall: ShortfallStatus | None
    # Channel keeping: how it is being closed ("unilateral (idle)", ...), the block after
    # which it can be settled, and what the settlement paid (once SETTLED).
    closing: str | None = None
    settle_block: int | None = None
    payout: PayoutStatus | None = None


@dataclass(frozen=True)
class ReadChainStateInput:
    peer_address: str


@dataclass(frozen=True)
class SubmitRequest:
    """A batch of intents for the wallet sequencer. `request_id` is unique per batch and
    stable across retries, so the sequencer answers a repeat with the first answer."""

    request_id: str
    intents: tuple[TxIntent, ...]


@dataclass(frozen=True)
class SubmitBatch:
    """Several submissions in one Update: a worker process groups the ones that arrive
    together, since Temporal admits only a few Updates in flight per workflow."""

    requests: tuple[SubmitRequest, ...]


@dataclass(frozen=True)
class SignedTx:
    intent: TxIntent
    nonce: int
    tx_hash: str
    raw: str


@dataclass(frozen=True)
class SubmitResult:
    txs: tuple[SignedTx, ...]
    # Set when the node refused a transaction outright (not a revert): nothing will mine.
    refused: str | None = None


@dataclass(frozen=True)
class SignInput:
    intents: tuple[TxIntent, ...]
    first_nonce: int


@dataclass(frozen=True)
class BroadcastOutcome:
    tx_hash: str
    nonce: int
    error: str | None = None


@dataclass(frozen=True)
class FillNoncesInput:
    nonces: tuple[int, ...]


@dataclass(frozen=True)
class WaitForReceiptsInput:
    txs: tuple[SignedTx, ...]
    # Once every receipt is in, read the pair's chain state as `read_chain_state` would
    # (one activity less per send while provisioning); None: only wait.
    read_after: ReadChainStateInput | None = None


@dataclass(frozen=True)
class SettlementReady:
    """Told to the connector process of `node_id` when its peer's channel is READY."""

    node_id: str
    peer_id: str
    token: str
    channel_id: str
    our_deposit: str
    their_deposit: str


@dataclass(frozen=True)
class SequencerParams:
    node_id: str
    next_nonce: int | None = None
    # Recent answers by request id, carried across continue-as-new.
    remembered: tuple[tuple[str, SubmitResult], ...] = ()


@dataclass(frozen=True)
class ReadChannelInput:
    channel_id: str
    peer_address: str


@dataclass(frozen=True)
class ReadClaimsInput:
    """The claims of one peer's channel, from the connector's claim store."""

    peer_id: str
    channel_id: str


@dataclass(frozen=True)
class CooperativeSettleInput:
    """Final balances to sign as a cooperative settle of the channel with `peer_address`."""

    channel_id: str
    peer_address: str
    our_balance: int
    their_balance: int


@dataclass(frozen=True)
class CooperativeSettleRequest:
    """Ask the partner, through the connector's BTP link, to sign the same balances."""

    peer_id: str
    channel_id: str
    our_address: str
    peer_address: str
    our_balance: int
    their_balance: int
    our_signature: str


@dataclass(frozen=True)
class CooperativeSettleAnswer:
    """The partner's signature, or why there is none (refused, unreachable, no answer)."""

    their_signature: str | None = None
    refused: str | None = None


@dataclass(frozen=True)
class ChannelClosing:
    """Told to the connector process when its peer's channel starts closing (it must stop
    sending claims on it) and when it is settled (`payout` set)."""

    node_id: str
    peer_id: str
    token: str
    channel_id: str
    stage: str
    payout: PayoutStatus | None = None
