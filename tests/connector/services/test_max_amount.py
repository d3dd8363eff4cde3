from __future__ import annotations

import pytest

from connector.codec import ilp
from connector.errors import AmountTooLarge, to_reject
from connector.services.max_amount import MaxAmountService


async def test_over_maximum_is_f08_with_data(terminal, incoming, fulfill) -> None:
    inner = terminal(fulfill)
    service = MaxAmountService({"upstream": 1_000_000}, inner)
    with pytest.raises(AmountTooLarge) as raised:
        await service.handle_request(incoming(amount=1_000_001))
    reject = to_reject(raised.value, "test.conn")
    assert reject.message == "packet size too large. maxAmount=1000000 actualAmount=1000001"
    assert reject.data.hex() == "00000000000f424100000000000f4240"
    assert ilp.decode_f08_data(reject.data) == ilp.AmountTooLargeData(1_000_001, 1_000_000)
    assert inner.seen == []


async def test_at_maximum_passes(terminal, incoming, fulfill) -> None:
    service = MaxAmountService({"upstream": 1_000_000}, terminal(fulfill))
    assert await service.handle_request(incoming(amount=1_000_000)) is fulfill


async def test_peers_without_maximum_are_not_limited(terminal, incoming, fulfill) -> None:
    service = MaxAmountService({"upstream": None, "other": 5}, terminal(fulfill))
    assert await service.handle_request(incoming(amount=2**64 - 1)) is fulfill
