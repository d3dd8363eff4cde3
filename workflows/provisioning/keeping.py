"""Channel-keeping rules: the arithmetic behind top-up, idle close, cooperative terms and the
keeper's next wake-up. Pure (stdlib only); `transition.py` decides with them.

Amounts follow the contract: a participant's cumulative `transferred_amount` (from the latest
proof it signed) moves to the other side at settlement, `locked_amount` stays with its
sender, withdrawals have already left the channel.
"""

from __future__ import annotations

from workflows.provisioning.changes import ClaimsRead, OnChainChannel
from workflows.provisioning.commands import CooperativeTerms
from workflows.provisioning.state import ProvisioningState, Stage

# How soon the keeper looks again after a send it could not make (refused, reverted, short of
# funds) when no settle window says otherwise; the check interval caps it.
RETRY_AFTER_SECONDS = 60.0
# Blocks the non-closing side waits after the window before settling (see settle_from_block).
NON_CLOSER_GRACE_BLOCKS = 5


def sent_amount(claims: ClaimsRead) -> int:
    """What our latest claim commits to the partner: transferred plus still locked."""
    sent = claims.latest_sent
    return 0 if sent is None else sent.transferred_amount + sent.locked_amount


def remaining_deposit(chain: OnChainChannel, claims: ClaimsRead) -> int:
    """Our deposit not yet promised to the partner by our latest claim (never negative)."""
    return max(0, chain.our_deposit - chain.our_withdrawn - sent_amount(claims))


def top_up_total(state: ProvisioningState, chain: OnChainChannel, claims: ClaimsRead) -> int | None:
    """The new total deposit when the remaining deposit fell below the threshold: the current
    total plus what restores `deposit_target` remaining; None when no top-up is due."""
    threshold = state.rules.top_up_below
    if threshold <= 0:
        return None
    remaining = remaining_deposit(chain, claims)
    if remaining >= threshold:
        return None
    return chain.our_deposit + (state.deposit_target - remaining)


def top_up_shortfall(chain: OnChainChannel, new_total: int, approve: bool) -> tuple[int, int]:
    """(ETH wei, token wei) the wallet lacks to raise our deposit to `new_total`."""
    token_needed = new_total - chain.our_deposit
    limits = chain.gas_limits
    gas = 0 if limits is None else limits.set_total_deposit + (limits.approve if approve else 0)
    eth_needed = gas * chain.fee_per_gas
    return max(0, eth_needed - chain.eth_balance), max(0, token_needed - chain.token_balance)


def claim_nonces(claims: ClaimsRead) -> tuple[int, int]:
    sent, received = claims.latest_sent, claims.best_received
    return (sent.nonce if sent else 0, received.nonce if received else 0)


def is_idle(state: ProvisioningState, now: float) -> bool:
    idle_after = state.rules.idle_close_seconds
    if idle_after <= 0 or state.last_activity_at is None:
        return False
    return now - state.last_activity_at >= idle_after


def cooperative_terms(chain: OnChainChannel, claims: ClaimsRead) -> CooperativeTerms | None:
    """Final balances as `settleChannel` would pay them with both latest claims on-chain;
    None when they do not fit what the channel holds (then only a unilateral close is fair).
    Locked amounts stay with their sender, as at settlement."""
    holds = chain.our_deposit + chain.their_deposit - chain.our_withdrawn - chain.their_withdrawn
    sent, received = claims.latest_sent, claims.best_received
    ours = (
        chain.our_deposit
        - chain.our_withdrawn
        - (sent.transferred_amount if sent else 0)
        + (received.transferred_amount if received else 0)
    )
    if ours < 0 or ours > holds:
        return None
    return CooperativeTerms(our_balance=ours, their_balance=holds - ours)


def settle_from_block(settle_block: int, closed_by_us: bool) -> int:
    """The first latest-block at which we send `settleChannel`. It succeeds in a block after
    `settle_block` and a send lands after the latest block, so the closer sends at
    `settle_block`; the other side waits a few blocks more, so when both keepers run only
    one settle is sent, and the other side still settles if the closer never does."""
    return settle_block + (0 if closed_by_us else NON_CLOSER_GRACE_BLOCKS)


def blocks_left(state: ProvisioningState) -> int:
    """Blocks to wait before we send `settleChannel` (0: now), as of the last read."""
    window = state.window
    if window is None:
        return 0
    return max(0, settle_from_block(window.settle_block, window.closed_by_us) - window.block_number)


def next_check_in(state: ProvisioningState, now: float) -> float | None:
    """Seconds until the keeper should read the channel again (0: at once), or None when
    the stage needs no keeper timer. Time is an argument: the workflow passes its clock."""
    rules = state.rules
    every = max(rules.check_every_seconds, 0.0)
    if state.stage is Stage.READY:
        if state.last_activity_at is None:
            return 0.0  # first keeper read: it starts the idle clock
        wait = every
        if rules.idle_close_seconds > 0:
            wait = min(wait, state.last_activity_at + rules.idle_close_seconds - now)
        return max(0.0, wait)
    if state.stage in (Stage.SETTLE_WINDOW, Stage.SETTLING) and state.window is not None:
        # The chain keeps its own time: turn the blocks still to come into seconds, then read
        # again. Not shorter than a block, so a slow chain is not polled in a busy loop.
        due = state.window.read_at + blocks_left(state) * rules.seconds_per_block
        return min(max(due - now, rules.seconds_per_block), every)
    if state.stage in (Stage.CLOSING, Stage.TOPPING_UP, Stage.SETTLING):
        return min(RETRY_AFTER_SECONDS, every)
    return None
