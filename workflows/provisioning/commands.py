"""Outputs of the provisioning transition (raiden's Event / ContractSend*).

The workflow interprets each as activities or timers; none does I/O itself.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass
from enum import StrEnum

from workflows.provisioning.state import Payout, Shortfall, SignedClaim


class SendKind(StrEnum):
    APPROVE = "approve"
    OPEN_CHANNEL = "open_channel"
    SET_TOTAL_DEPOSIT = "set_total_deposit"
    CLOSE_CHANNEL = "close_channel"
    UPDATE_NON_CLOSING = "update_non_closing_balance_proof"
    SETTLE_CHANNEL = "settle_channel"
    COOPERATIVE_SETTLE = "cooperative_settle"


@dataclass(frozen=True)
class CooperativeTerms:
    """Final balances of a cooperative settle, from our side, with both signatures once
    known (0x-hex; empty while being asked for)."""

    our_balance: int
    their_balance: int
    our_signature: str = ""
    their_signature: str = ""


@dataclass(frozen=True)
class TxIntent:
    """One transaction to send from the treasury wallet; the sequencer gives it a nonce."""

    kind: SendKind
    channel_id: str | None = None
    partner: str | None = None
    total_deposit: int | None = None
    # CLOSE_CHANNEL: the partner's proof; UPDATE_NON_CLOSING: the closer's (the partner's).
    proof: SignedClaim | None = None
    settlement: CooperativeTerms | None = None


@dataclass(frozen=True)
class ChainReadState:
    """Read balances, allowance and the pair's channel."""


@dataclass(frozen=True)
class ChainSend:
    """Sign, broadcast and await these intents, in order, as one pipelined batch.

    `request_id` is deterministic so a retried submission is recognised, not repeated.
    `read_after`: once mined, read the pair's chain state too (`ChainSendsMined.state`).
    """

    request_id: str
    intents: tuple[TxIntent, ...]
    read_after: bool = False


@dataclass(frozen=True)
class WaitForFunds:
    """Arm the durable re-check timer; a `retry` signal cuts it short."""


@dataclass(frozen=True)
class NotifySettlementReady:
    channel_id: str
    our_deposit: int
    their_deposit: int


@dataclass(frozen=True)
class EmitTelemetry:
    """A stable event name for logs/telemetry (CHANNEL_CREATION_*)."""

    event: str
    detail: str = ""


@dataclass(frozen=True)
class LogShortfall:
    shortfall: Shortfall


@dataclass(frozen=True)
class ReadChannel:
    """Read the channel on-chain (with our wallet) and its claims from the connector."""


@dataclass(frozen=True)
class RequestCooperativeSettle:
    """Sign these final balances and ask the partner to sign them too."""

    terms: CooperativeTerms


@dataclass(frozen=True)
class NotifyChannelClosing:
    """Tell the connector the channel is closing (no more claims on it) or settled."""

    channel_id: str
    stage: str
    payout: Payout | None = None


Command = (
    ChainReadState
    | ChainSend
    | WaitForFunds
    | NotifySettlementReady
    | EmitTelemetry
    | LogShortfall
    | ReadChannel
    | RequestCooperativeSettle
    | NotifyChannelClosing
)
