"""Outputs of the provisioning transition (raiden's Event / ContractSend*).

The workflow interprets each as activities or timers; none does I/O itself.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass
from enum import StrEnum

from workflows.provisioning.state import Shortfall


class SendKind(StrEnum):
    APPROVE = "approve"
    OPEN_CHANNEL = "open_channel"
    SET_TOTAL_DEPOSIT = "set_total_deposit"


@dataclass(frozen=True)
class TxIntent:
    """One transaction to send from the treasury wallet; the sequencer gives it a nonce."""

    kind: SendKind
    channel_id: str | None = None
    partner: str | None = None
    total_deposit: int | None = None


@dataclass(frozen=True)
class ChainReadState:
    """Read balances, allowance and the pair's channel."""


@dataclass(frozen=True)
class ChainSend:
    """Sign, broadcast and await these intents, in order, as one pipelined batch.

    `request_id` is deterministic so a retried submission is recognised, not repeated.
    """

    request_id: str
    intents: tuple[TxIntent, ...]


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


Command = (
    ChainReadState | ChainSend | WaitForFunds | NotifySettlementReady | EmitTelemetry | LogShortfall
)
