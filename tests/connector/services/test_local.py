"""Local delivery: the receiver fulfils exactly what a credentialed sender makes."""

from __future__ import annotations

from datetime import timedelta
from hashlib import sha256

import pytest

from connector.codec import ilp
from connector.errors import UnexpectedPayment, WrongCondition
from connector.services.interface import LOCAL, IncomingRequest
from connector.services.local import (
    ReceiverService,
    Sender,
    make_prepare,
    make_test_prepare,
    receiver_credentials,
)

SECRET = b"receiver-secret-of-g.bob"


def incoming_of(prepare: ilp.Prepare) -> IncomingRequest:
    return IncomingRequest("alice", prepare, ilp.encode(prepare))


@pytest.mark.parametrize("tag", ["invoice-42", "a.b"])
async def test_receiver_fulfils_what_the_sender_made(tag: str, now) -> None:
    credentials = receiver_credentials("g.bob", SECRET, tag)
    assert credentials.destination == "g.bob." + tag
    prepare, fulfillment = make_prepare(credentials, 500, now + timedelta(seconds=5), b"memo")
    assert sha256(fulfillment).digest() == prepare.execution_condition
    answer = await ReceiverService("g.bob", SECRET).handle_request(incoming_of(prepare))
    assert answer == ilp.Fulfill(fulfillment, b"")


async def test_every_packet_gets_its_own_condition(now) -> None:
    credentials = receiver_credentials("g.bob", SECRET, "t")
    first, _ = make_prepare(credentials, 1, now)
    second, _ = make_prepare(credentials, 1, now)
    assert first.execution_condition != second.execution_condition


async def test_wrong_secret_or_tag_is_f05(now) -> None:
    receiver = ReceiverService("g.bob", SECRET)
    forged = receiver_credentials("g.bob", b"someone else's secret", "t")
    with pytest.raises(WrongCondition):
        await receiver.handle_request(incoming_of(make_prepare(forged, 1, now)[0]))
    # Credentials for one tag do not pay another.
    real = receiver_credentials("g.bob", SECRET, "t")
    prepare, _ = make_prepare(real, 1, now)
    moved = ilp.Prepare(1, now, prepare.execution_condition, "g.bob.other", prepare.data)
    with pytest.raises(WrongCondition):
        await receiver.handle_request(incoming_of(moved))


def test_credentials_never_show_the_secret() -> None:
    credentials = receiver_credentials("g.bob", SECRET, "t")
    assert credentials.shared_secret.hex() not in repr(credentials)


async def test_sender_sends_from_this_node(terminal, fulfill, now) -> None:
    path = terminal(fulfill)
    credentials = receiver_credentials("g.bob", SECRET, "t")
    assert await Sender(path).send(credentials, 7, now + timedelta(seconds=30)) is fulfill
    (request,) = path.seen
    assert request.from_peer == LOCAL
    assert ilp.decode_prepare(request.raw) == request.prepare
    assert (request.prepare.amount, request.prepare.destination) == (7, "g.bob.t")


async def test_test_payments_to_the_node_address_need_no_credentials(now) -> None:
    prepare, fulfillment = make_test_prepare("g.bob", 5, now)
    answer = await ReceiverService("g.bob", SECRET).handle_request(incoming_of(prepare))
    assert answer == ilp.Fulfill(fulfillment, b"")


async def test_node_address_refuses_anything_but_test_payments(now) -> None:
    keyed, _ = make_prepare(receiver_credentials("g.bob", SECRET, "t"), 1, now)
    bare = ilp.Prepare(1, now, keyed.execution_condition, "g.bob", keyed.data)
    with pytest.raises(UnexpectedPayment):
        await ReceiverService("g.bob", SECRET).handle_request(incoming_of(bare))


def test_tags_are_address_segments() -> None:
    for tag in ("", ".x", "x."):
        with pytest.raises(ValueError):
            receiver_credentials("g.bob", SECRET, tag)
