"""Load, short: 1,000 concurrent test payments across the 5-node example line (each node a
`paychan connector` process, settlement disabled), twice. Every packet is fulfilled, every
ledger moved by exactly the fulfilled amount at every hop (`check_line_conservation`), no
credit stays held and each node's memory matches its ledger file (`check_quiescent`).

The full run (10,000 concurrent, 50 peers on one node, peak RSS, p99) is `bench/load.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.btp.client import BtpClient
from tests.chaos.packet_load import (
    SENDER,
    SENDER_TOKEN,
    ExampleLine,
    RefuseMessages,
    amounts_for,
    check_line_conservation,
    check_quiescent,
    connected_client,
    send_test_payments,
)

pytestmark = pytest.mark.integration

PACKETS = 1_000
ROUNDS = 2


async def test_concurrent_packets_across_the_line_conserve_every_balance(tmp_path: Path) -> None:
    with ExampleLine.running(tmp_path) as line:
        sender = BtpClient(line.entry_url, "peer1", SENDER, SENDER_TOKEN, RefuseMessages())
        async with connected_client(sender):
            for round_number in range(ROUNDS):
                before = line.balances()
                amounts = amounts_for(PACKETS, seed=round_number)
                burst = await send_test_payments(sender, "g.peer5", amounts)
                assert (burst.fulfilled, dict(burst.rejects)) == (PACKETS, {})
                assert burst.fulfilled_amount == sum(amounts)
                check_line_conservation(before, line.balances(), burst.fulfilled_amount)
                check_quiescent(line.nodes)
        final = line.balances()
    # After SIGTERM each node flushed and closed its ledger: the files say the same.
    assert line.balances() == final
