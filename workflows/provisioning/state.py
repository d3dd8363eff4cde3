"""Provisioning state: where one peer's channel stands. Pure data, stdlib only.

Amounts are wei as `int` here; the `status` query renders them as decimal strings because
the Temporal UI is JavaScript and loses precision above 2**53.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    CHECKING_CONFIG = "CHECKING_CONFIG"
    SKIPPED = "SKIPPED"
    CHECKING_BALANCES = "CHECKING_BALANCES"
    AWAITING_FUNDS = "AWAITING_FUNDS"
    OPENING = "OPENING"
    DEPOSITING = "DEPOSITING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Shortfall:
    """What the treasury lacks for the next step, and where to send it."""

    address: str
    eth_needed: int
    eth_have: int
    token_needed: int
    token_have: int

    @property
    def eth_missing(self) -> int:
        return max(0, self.eth_needed - self.eth_have)

    @property
    def token_missing(self) -> int:
        return max(0, self.token_needed - self.token_have)


@dataclass(frozen=True)
class Channel:
    """The pair's channel as last read from (or predicted for) the chain."""

    channel_id: str
    our_deposit: int = 0
    their_deposit: int = 0


@dataclass(frozen=True)
class ProvisioningState:
    our_address: str
    peer_address: str | None
    deposit_target: int
    stage: Stage = Stage.CHECKING_CONFIG
    channel: Channel | None = None
    shortfall: Shortfall | None = None
    last_error: str | None = None
    # Chain sends that reverted since the last success; bounds the automatic re-tries.
    reverted_sends: int = 0
    # Bumped on every chain send so each batch gets a fresh, deterministic request id.
    send_sequence: int = 0
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_waiting_for_operator(self) -> bool:
        return self.stage in (Stage.AWAITING_FUNDS, Stage.FAILED)
