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
    # Channel keeping, after READY (workflows/provisioning/keeping.py).
    TOPPING_UP = "TOPPING_UP"
    CLOSING = "CLOSING"
    SETTLE_WINDOW = "SETTLE_WINDOW"
    SETTLING = "SETTLING"
    SETTLED = "SETTLED"


# Stages of a channel that is (or was) open and is being kept: the keeper timer runs in them.
KEEPING_STAGES = frozenset(
    {Stage.READY, Stage.TOPPING_UP, Stage.CLOSING, Stage.SETTLE_WINDOW, Stage.SETTLING}
)
# Stages in which the channel is being closed: no claims, no top-up.
CLOSING_STAGES = frozenset({Stage.CLOSING, Stage.SETTLE_WINDOW, Stage.SETTLING})


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


ZERO_LOCKS_ROOT = "0x" + "00" * 32


@dataclass(frozen=True)
class SignedClaim:
    """A balance proof one side signed (a `payment-channel-claim`): what its signer has
    transferred to the other side, cumulatively, at `nonce`. `signature` is 0x-hex."""

    nonce: int
    transferred_amount: int
    locked_amount: int = 0
    locks_root: str = ZERO_LOCKS_ROOT
    signature: str = ""


@dataclass(frozen=True)
class KeepingRules:
    """How the channel is kept once READY. Zero disables top-up or idle close."""

    # Top up when our remaining deposit (deposit - withdrawn - what our latest claim
    # transferred) falls below this many wei.
    top_up_below: int = 0
    # Close when no claim moved on the channel for this long.
    idle_close_seconds: float = 0.0
    # How often the keeper reads the channel while nothing else wakes it.
    check_every_seconds: float = 3600.0
    # Block time used to turn the settle window (in blocks) into a timer.
    seconds_per_block: float = 2.0


@dataclass(frozen=True)
class CloseRequest:
    """Why and how the channel is being closed."""

    cooperative: bool
    reason: str
    # A cooperative settle was asked for once; on refusal or revert the close is unilateral.
    cooperative_tried: bool = False
    # Its answer has not come back yet: a chain read meanwhile (one already queued when the
    # close began) must not decide a unilateral close under the partner's signature.
    awaiting_partner: bool = False


@dataclass(frozen=True)
class SettleWindow:
    """The channel is closed on-chain; `settleChannel` succeeds once a block > settle_block."""

    settle_block: int
    closed_by_us: bool
    # The chain's block number at `read_at` (workflow clock, unix seconds).
    block_number: int
    read_at: float


@dataclass(frozen=True)
class Payout:
    """What the settlement paid each side, from the contract's settle event."""

    our_amount: int
    their_amount: int
    cooperative: bool


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
    # Channel keeping (after READY); all default so states carried by older runs still load.
    rules: KeepingRules = field(default_factory=KeepingRules)
    # Workflow clock (unix seconds) of the last claim seen moving; None until the first read.
    last_activity_at: float | None = None
    # (latest sent, best received) claim nonces at the last read: a change is activity.
    claim_nonces: tuple[int, int] = (0, 0)
    closing: CloseRequest | None = None
    window: SettleWindow | None = None
    payout: Payout | None = None

    @property
    def is_waiting_for_operator(self) -> bool:
        return self.stage in (Stage.AWAITING_FUNDS, Stage.FAILED)
