"""Inputs to the provisioning transition (raiden's StateChange).

`Action*` come from the operator or the connector, `Receive*` from the peer link,
`Chain*` from activity results, `Timer*` from durable timers.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass

from workflows.provisioning.state import Channel


@dataclass(frozen=True)
class ReceivePeerConnected:
    """The peer authenticated a BTP link (first connect or any reconnect)."""


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


@dataclass(frozen=True)
class ChainSendsMined:
    """Receipts for one batch of sends. `reverted` holds "<kind>: <reason>" per revert."""

    reverted: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainSendFailed:
    """A send was refused for a reason that will not go away by itself (non-retryable)."""

    reason: str


Change = (
    ReceivePeerConnected
    | ActionRetry
    | TimerFundsRecheck
    | ChainStateRead
    | ChainSendsMined
    | ChainSendFailed
)
