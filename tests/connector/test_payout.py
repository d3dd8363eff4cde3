"""connector.payout.reconcile: a settled channel's payout against the claims the ledger
counted, as a table. Pure, no I/O. (With a real keeper, chain and claim store:
tests/integration/test_settlement_payout.py.)"""

from __future__ import annotations

import pytest
from eth_account import Account

from connector.claim_store import StoredClaim
from connector.claims import ChannelSide, ClaimDomain, ClaimSigner
from connector.payout import Outcome, reconcile

DOMAIN = ClaimDomain(31337, "0x" + "ab" * 20)
CHANNEL = "0x" + "c1" * 32
KEY = Account.from_key("0x" + "11" * 32)
SIGNER = ClaimSigner(KEY.key, KEY.address)
DEPOSIT = 10_000


def claim(nonce: int, transferred: int, *, acknowledged: bool = True) -> StoredClaim:
    return StoredClaim(
        "sent", "bob", SIGNER.sign(DOMAIN, CHANNEL, nonce, transferred), 0, acknowledged, 0.0
    )


@pytest.mark.parametrize(
    ("acknowledged", "received", "pending", "our_payout", "cooperative", "outcome", "adjustment"),
    [
        # Settled on exactly the claims counted: nothing to do (a waiting claim is void).
        (3_000, 1_000, None, DEPOSIT - 3_000 + 1_000, False, Outcome.AGREES, 0),
        (None, None, None, DEPOSIT, False, Outcome.AGREES, 0),
        (3_000, 1_000, 5_000, DEPOSIT - 3_000 + 1_000, False, Outcome.AGREES, 0),
        # Our unacknowledged claim (5,000) paid, by a close or a cooperative settle: its
        # 2,000 is credited now.
        (3_000, 1_000, 5_000, DEPOSIT - 5_000 + 1_000, False, Outcome.PENDING_USED, 2_000),
        (3_000, 1_000, 5_000, DEPOSIT - 5_000 + 1_000, True, Outcome.PENDING_USED, 2_000),
        (None, None, 5_000, DEPOSIT - 5_000, False, Outcome.PENDING_USED, 5_000),
        # A cooperative settle paid us 1,500 more than the peer's claims we hold (its own
        # unacknowledged claim): both signed it, the ledger follows.
        (3_000, 1_000, None, DEPOSIT - 3_000 + 2_500, True, Outcome.COOPERATIVE_BALANCES, -1_500),
        # A unilateral close on older proofs: the partner closed with our old claim (2,000
        # less moved to it), or our update missed the window (1,000 less moved to us). Both
        # ends counted the newest claims already: logged, the ledger left as it is.
        (3_000, 1_000, None, DEPOSIT - 1_000 + 1_000, False, Outcome.UNILATERAL_MISMATCH, 0),
        (3_000, 1_000, 5_000, DEPOSIT - 1_000 + 1_000, False, Outcome.UNILATERAL_MISMATCH, 0),
        (3_000, 1_000, None, DEPOSIT - 3_000, False, Outcome.UNILATERAL_MISMATCH, 0),
    ],
)
def test_payout_against_counted_claims(
    acknowledged: int | None,
    received: int | None,
    pending: int | None,
    our_payout: int,
    cooperative: bool,
    outcome: Outcome,
    adjustment: int,
) -> None:
    result = reconcile(
        our_funds=ChannelSide(DEPOSIT, 0),
        our_payout=our_payout,
        cooperative=cooperative,
        acknowledged=claim(1, acknowledged) if acknowledged is not None else None,
        received=claim(1, received) if received is not None else None,
        pending=claim(2, pending, acknowledged=False) if pending is not None else None,
    )
    assert (result.outcome, result.adjustment) == (outcome, adjustment)


def test_withdrawals_are_not_counted_as_paid_to_the_peer() -> None:
    result = reconcile(
        our_funds=ChannelSide(DEPOSIT, 4_000),
        our_payout=DEPOSIT - 4_000 - 3_000,
        cooperative=False,
        acknowledged=claim(1, 3_000),
        received=None,
        pending=None,
    )
    assert (result.paid_to_peer, result.outcome) == (3_000, Outcome.AGREES)
