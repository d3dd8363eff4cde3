"""Many workers: three `paychan worker` processes share the provisioning of 50 peers of one
node (one treasury wallet, so one wallet sequencer), on the real Temporal dev server and a
real anvil mining a block every second. One worker is SIGKILLed mid-way and not restarted.

End state (`SharedWalletNode.check`): all 50 READY in the connector's registry and in their
workflows, one channel per pair (pair counter 1, one `ChannelOpened`), our deposit exactly at
target on each, and the wallet's nonce stream without gaps: every nonce from the first one
provisioning used up to `latest` is a mined, successful transaction of ours, `latest` equals
`pending`, the count equals the intents the channel workflows asked for, and a gap-filling
self-transfer appears only where a worker logged a refused nonce.

Figures (time to all READY with and without the kill) come from `bench/many_workers.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.chaos.shared_wallet import Chain, KillPoint, SharedWalletNode, block_time_chain

pytestmark = pytest.mark.integration

PEERS = 50
WORKERS = 3
READY_TIMEOUT = 90.0


@pytest.fixture(scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    async with block_time_chain(tmp_path_factory.mktemp("many-workers")) as started:
        yield started


@pytest.mark.parametrize("kill", list(KillPoint))
async def test_one_of_three_workers_killed_mid_way_all_ready_no_gaps(
    kill: KillPoint,
    chain: Chain,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        node = await SharedWalletNode.open(
            stack,
            client=temporal_client,
            temporal_address=temporal_client.service_client.config.target_host,
            chain=chain,
            directory=tmp_path,
            peers=PEERS,
            workers=WORKERS,
        )
        await node.start_workers()
        figures = await node.provision(kill, timeout=READY_TIMEOUT)
        assert figures.ready_at_kill is not None and figures.ready_at_kill < PEERS, (
            "the kill landed after provisioning"
        )
        stream = await node.check()
        assert stream.gap_fills == 0, f"nonces refused and filled: {stream}"
    print(
        f"\n{kill}: all {PEERS} READY in {figures.seconds_to_all_ready:.2f}s, killed at "
        f"{figures.killed_after:.2f}s with {figures.ready_at_kill} READY; txs {stream.kinds}"
    )
