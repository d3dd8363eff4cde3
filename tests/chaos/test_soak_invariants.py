"""The chaos soak's invariant checks (pure): each one holds on consistent books and names
what breaks it."""

from __future__ import annotations

from tests.chaos.soak_invariants import (
    ClaimRow,
    LedgerSnapshot,
    PairOnChain,
    Payment,
    PeerState,
    ReadTwice,
    check_channels,
    check_claims,
    check_ledger,
    not_ready,
    subset_sums,
)

TARGET = 10_000
CHANNEL = "0x" + "ab" * 32


def pair(**changes) -> PairOnChain:
    fields = {
        "ends": ("a", "b"),
        "pair_counter": 1,
        "opened_events": 1,
        "channel_id": CHANNEL,
        "is_open": True,
        "deposits": {"a": TARGET, "b": TARGET},
    }
    return PairOnChain(**{**fields, **changes})


def channels(*pairs: PairOnChain, latest_sent: dict | None = None, depositors=("a", "b")):
    return check_channels(
        pairs,
        ready_ends={("a", "b"), ("b", "a")},
        depositors=set(depositors),
        target=TARGET,
        latest_sent=latest_sent or {},
    )


def test_one_channel_at_target_holds() -> None:
    assert channels(pair()) == []


def test_a_second_channel_or_a_missing_event_breaks_one_channel_per_pair() -> None:
    second = pair(pair_counter=2, opened_events=2, states=("OPENED", "OPENED"))
    assert [v.detail for v in channels(second)] == [
        "2 channels opened, 0 closed by the soak",
        "channel states ['OPENED', 'OPENED']",
    ]
    # A channel the soak closed and saw settled, then a new one: fine.
    reopened = pair(pair_counter=2, opened_events=2, states=("SETTLED", "OPENED"), closes_asked=1)
    assert channels(reopened) == []
    # Settled without anybody closing it.
    unasked = channels(pair(pair_counter=2, opened_events=2, states=("SETTLED", "OPENED")))
    assert [v.detail for v in unasked] == [
        "2 channels opened, 0 closed by the soak",
        "1 channels settled, 0 closed by the soak",
    ]
    settled = channels(pair(states=("SETTLED",), channel_id=None, is_open=False))
    assert "1 channels settled, 0 closed by the soak" in {v.detail for v in settled}
    assert channels(pair(opened_events=0))[0].detail == "pair counter 1, 0 ChannelOpened"
    closed = channels(pair(is_open=False))
    assert {v.detail for v in closed} == {
        "a READY without open channel",
        "b READY without open channel",
    }


def test_deposit_stays_between_target_and_target_plus_what_was_claimed() -> None:
    topped_up = pair(deposits={"a": TARGET + 6_000, "b": TARGET})
    assert channels(topped_up, latest_sent={("a", "b"): 6_000}) == []
    # The same top-up with less claimed: something was deposited twice.
    (twice,) = channels(topped_up, latest_sent={("a", "b"): 5_000})
    assert (twice.invariant, twice.where) == ("deposit", "a-b (a)")
    (short,) = channels(pair(deposits={"a": TARGET - 1, "b": TARGET}))
    assert short.detail == f"deposit {TARGET - 1}, expected {TARGET}..{TARGET}"
    # A side that never deposits (an extra peer) holds nothing.
    (extra,) = channels(pair(deposits={"a": TARGET, "b": 1}), depositors=("a",))
    assert extra.detail == "deposited 1"


def test_a_connected_peer_counts_ready_only_in_both_its_node_and_its_workflow() -> None:
    states = {
        "n": {
            "ready": PeerState(True, "READY", "READY"),
            "topping": PeerState(True, "TOPPING_UP", "READY"),
            "away": PeerState(False, None, None),
            "stale": PeerState(True, "READY", None),  # its run was cancelled
            "opening": PeerState(True, "OPENING", "OPENING"),
        }
    }
    assert [v.where for v in not_ready(states)] == ["n->opening", "n->stale"]


def claim(direction: str, nonce: int, transferred: int, amount: int, ack: bool = True) -> ClaimRow:
    return ClaimRow(direction, "x", CHANNEL, nonce, transferred, amount, ack)  # type: ignore[arg-type]


def claims_of(sent: list[ClaimRow], received: list[ClaimRow], deposit: int):
    return check_claims(
        "a", "b", ReadTwice.once(sent), ReadTwice.once(received), {CHANNEL: deposit}
    )


SENT = [claim("sent", 1, 100, 100), claim("sent", 2, 250, 150), claim("sent", 3, 300, 50, False)]
RECEIVED = [claim("received", 1, 100, 100), claim("received", 2, 250, 150)]


def test_claims_sent_once_and_accepted_once_hold() -> None:
    assert claims_of(SENT, RECEIVED, 1_000) == []
    # The payee stored the last one but its acknowledgement was lost: still consistent.
    received = [*RECEIVED, claim("received", 3, 300, 50)]
    assert claims_of(SENT, received, 1_000) == []


def test_a_claim_credited_twice_is_caught() -> None:
    twice = [*RECEIVED, claim("received", 3, 300, 100)]  # credited 100 for a 50 claim
    found = claims_of(SENT, twice, 1_000)
    assert [v.invariant for v in found] == ["no claim accepted twice"] * 2


def test_a_claim_acknowledged_but_not_stored_or_never_signed_or_above_the_deposit() -> None:
    (unstored,) = claims_of(SENT, RECEIVED[:1], 1_000)
    assert unstored.detail == "#2 acknowledged but not stored by b"
    forged = [*RECEIVED, claim("received", 3, 999, 749)]
    assert "b accepted #3 never sent" in {v.detail for v in claims_of(SENT, forged, 1_000)}
    (above,) = claims_of(SENT, RECEIVED, 299)
    assert above.detail == "claimed 300 above the deposit 299 + 0 received from b"
    # Paid back on the same channel: a may pay with what b paid it.
    returned = [ClaimRow("received", "b", CHANNEL, 1, 1, 1, True)]
    sent, received = ReadTwice.once(SENT), ReadTwice.once(RECEIVED)
    assert check_claims("a", "b", sent, received, {CHANNEL: 299}, returned) == []
    gap = [claim("sent", 1, 100, 100), claim("sent", 3, 300, 200)]
    assert claims_of(gap, [], 1_000)[0].detail == "sent nonces [1, 3]"


def test_a_ledger_equals_packets_fulfilled_plus_claims() -> None:
    payments = [
        Payment((("a", "b"), ("b", "c")), 70, fulfilled=True),
        Payment((("c", "b"),), 20, fulfilled=True),
        Payment((("a", "b"),), 1_000, fulfilled=False),
    ]
    claims = [
        ClaimRow("received", "a", CHANNEL, 1, 50, 50, True),
        ClaimRow("sent", "c", CHANNEL, 1, 30, 30, True),
        ClaimRow("sent", "c", CHANNEL, 2, 40, 10, False),  # not acknowledged: not credited
    ]
    # b: a paid 70 (50 of it by claim), b owes c 70 - 20 = 50 and paid 30 of it by claim.
    books = LedgerSnapshot("b", {"a": 20, "c": -20}, claims)
    assert check_ledger(books, payments) == ([], check_ledger(books, payments)[1])
    found, _ = check_ledger(LedgerSnapshot("b", {"a": 20, "c": -30}, claims), payments)
    assert [(v.where, v.invariant) for v in found] == [("b[c]", "ledger = fulfilled - claims")]
    # c's channel settled with the unacknowledged claim used: its 10 corrected the balance.
    settled = LedgerSnapshot("b", {"a": 20, "c": -10}, claims, {"c": 10})
    assert check_ledger(settled, payments)[0] == []


def test_only_payments_in_flight_through_a_killed_connector_may_explain_a_difference() -> None:
    uncertain = [
        Payment((("a", "b"),), 300, fulfilled=False, uncertain=True),
        Payment((("a", "b"),), 500, fulfilled=False, uncertain=True),
    ]
    # b committed the 500 one, a never heard back.
    found, figures = check_ledger(LedgerSnapshot("b", {"a": 500}), uncertain)
    assert (found, figures.explained_by_uncertain) == ([], 1)
    # Nothing sums to 600 (each payment counts at most once).
    found, _ = check_ledger(LedgerSnapshot("b", {"a": 600}), uncertain)
    assert len(found) == 1
    assert subset_sums([3, -5]) == {0, 3, -5, -2}


def test_a_claim_in_flight_between_the_two_reads_is_not_missing() -> None:
    # First pass: a is read (its #3 not yet signed), then b (it already accepted #3: a signed
    # and stored it in between, b acknowledged, a has not heard back). Second pass: both have it.
    sent_first, sent_then = SENT[:2], [*SENT[:2], claim("sent", 3, 300, 50, False)]
    received_then = [*RECEIVED, claim("received", 3, 300, 50)]
    sent, received = ReadTwice(sent_first, sent_then), ReadTwice(received_then, received_then)
    assert check_claims("a", "b", sent, received, {CHANNEL: 1_000}) == []
    # Read once, b's #3 looks accepted but never sent.
    found = check_claims("a", "b", ReadTwice.once(sent_first), received, {CHANNEL: 1_000})
    assert [v.detail for v in found] == ["b accepted #3 never sent"]
