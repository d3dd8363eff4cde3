from __future__ import annotations

from datetime import timedelta

import pytest

from connector.codec import ilp
from connector.errors import InsufficientTimeout, WrongCondition
from connector.services.validator import FulfillmentValidatorService, IncomingValidatorService


async def test_expired_prepare_is_r02_and_goes_no_further(
    terminal, incoming, fulfill, clock
) -> None:
    inner = terminal(fulfill)
    with pytest.raises(InsufficientTimeout) as raised:
        await IncomingValidatorService(inner, clock).handle_request(
            incoming(expires_in=timedelta(seconds=-1))
        )
    assert raised.value.message.startswith("source transfer has already expired.")
    assert inner.seen == []


async def test_live_prepare_passes(terminal, incoming, fulfill, clock) -> None:
    service = IncomingValidatorService(terminal(fulfill), clock)
    assert await service.handle_request(incoming()) is fulfill


async def test_matching_fulfillment_passes(terminal, incoming, fulfill) -> None:
    service = FulfillmentValidatorService(terminal(fulfill))
    assert await service.send_request(incoming().to_outgoing("down")) is fulfill


async def test_wrong_fulfillment_is_f05(terminal, incoming) -> None:
    service = FulfillmentValidatorService(terminal(ilp.Fulfill(bytes([1]) * 32, b"")))
    with pytest.raises(WrongCondition) as raised:
        await service.send_request(incoming().to_outgoing("down"))
    assert raised.value.message == "fulfillment did not match expected value."


async def test_rejects_are_relayed_unchanged(terminal, incoming, reject) -> None:
    service = FulfillmentValidatorService(terminal(reject))
    assert await service.send_request(incoming().to_outgoing("down")) is reject
