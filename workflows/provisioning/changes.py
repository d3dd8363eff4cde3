"""Inputs to the provisioning transition (raiden's StateChange).

`Action*` come from the operator or the connector, `Receive*` from the peer link,
`Chain*` from activity results, `Timer*` from durable timers.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass
from enum import StrEnum

from workflows.provisioning.state import Channel, Payout, SignedClaim


@dataclass(frozen=True)
class ReceivePeerConnected:
    """The peer authenticated a BTP link (first connect or any reconnect); `peer_address` is
    its evmAddress in the connector's config then (None: none, or an older connector)."""

    peer_address: str | None = None


@dataclass(frozen=True)
class ActionRetry:
    """Operator (CLI, UI signal) or settlement asks to try again now."""


@dataclass(frozen=True)
class TimerFundsRecheck:
    """The durable AWAITING_FUNDS timer fired."""


@dataclass(frozen=True)
class GasLimits:
    approve: int
    open_channel: int
    set_total_deposit: int


@dataclass(frozen=True)
class ChainStateRead:
    """Balances and the pair's channel as one consistent read.

    `channel` is None when the pair has no open channel; `next_channel_id` is the id the
    pair's next `openChannel` will get, so a deposit can ride in the same block as the open.
    """

    eth_balance: int
    token_balance: int
    allowance: int
    channel: Channel | None
    next_channel_id: str
    # Max fee per gas a send signed now would carry, and the fixed gas limit of each kind of
    # send: together they bound the ETH the next batch can burn.
    fee_per_gas: int
    gas_limits: GasLimits
    # The workflow clock when the read came back: READY on it starts the keeper's idle
    # clock, so its first channel read comes a check interval later, not at once. None in
    # runs from before the workflow kept it (their first keeper read starts the clock).
    read_at: float | None = None


@dataclass(frozen=True)
class ChainSendsMined:
    """Receipts for one batch of sends. `reverted` holds "<kind>: <reason>" per revert;
    `state` is the pair's chain state read after them, when the send asked for it."""

    reverted: tuple[str, ...] = ()
    state: ChainStateRead | None = None


@dataclass(frozen=True)
class ChainSendFailed:
    """A send was refused for a reason that will not go away by itself (non-retryable)."""

    reason: str


# ---------------------------------------------------------------- channel keeping


@dataclass(frozen=True)
class ActionTopUp:
    """Operator or connector asks for a deposit check now (signal `top_up`)."""


@dataclass(frozen=True)
class ActionClose:
    """Operator asks to close the channel (signal `close`, `paychan close`)."""

    cooperative: bool = False
    reason: str = "operator"


@dataclass(frozen=True)
class TimerKeep:
    """The keeper's durable timer fired: time to read the channel again."""


class ChannelPhase(StrEnum):
    """`TokenNetwork.ChannelState` as the keeper sees it; NONE: no channel has that id."""

    NONE = "NONE"
    OPENED = "OPENED"
    CLOSED = "CLOSED"
    SETTLED = "SETTLED"


@dataclass(frozen=True)
class OnChainChannel:
    """The channel and our wallet as one chain read.

    Participant amounts are zero once SETTLED (the contract deletes them); `payout` then
    holds what the settle event paid. `partner_nonce` is the nonce of the partner's own
    proof on-chain (set by our close or by the partner's update).
    """

    channel_id: str
    phase: ChannelPhase
    block_number: int
    our_deposit: int = 0
    their_deposit: int = 0
    our_withdrawn: int = 0
    their_withdrawn: int = 0
    closed_by_us: bool = False
    settle_block: int = 0
    partner_nonce: int = 0
    payout: Payout | None = None
    # For a top-up: what the wallet holds and what a send costs.
    token_balance: int = 0
    eth_balance: int = 0
    allowance: int = 0
    fee_per_gas: int = 0
    gas_limits: GasLimits | None = None


@dataclass(frozen=True)
class ClaimsRead:
    """The connector's claim store for the channel: our latest sent claim (what we have
    transferred) and the best claim received from the partner (what it has transferred)."""

    latest_sent: SignedClaim | None = None
    best_received: SignedClaim | None = None
    # The connector holds claims on the channel for a cooperative settle it signed for the
    # partner, longer ago than that settle takes (connector.channels): a READY keeper that
    # reads the channel open tells it READY again. (Absent from older histories: False.)
    cooperative_hold_expired: bool = False


@dataclass(frozen=True)
class ChainChannelRead:
    """Chain and claims read together; `now` is the workflow clock when they were read.
    `sends_before` is the state's send sequence when the read was asked for (None: unknown)."""

    now: float
    chain: OnChainChannel
    claims: ClaimsRead
    sends_before: int | None = None


@dataclass(frozen=True)
class ReceiveCooperativeSignatures:
    """Both signatures over `terms` of a cooperative settle (ours and the partner's)."""

    our_balance: int
    their_balance: int
    our_signature: str
    their_signature: str


@dataclass(frozen=True)
class ReceiveCooperativeRefusal:
    """The partner refused or did not answer a cooperative settle in time."""

    reason: str


Change = (
    ReceivePeerConnected
    | ActionRetry
    | TimerFundsRecheck
    | ChainStateRead
    | ChainSendsMined
    | ChainSendFailed
    | ActionTopUp
    | ActionClose
    | TimerKeep
    | ChainChannelRead
    | ReceiveCooperativeSignatures
    | ReceiveCooperativeRefusal
)
