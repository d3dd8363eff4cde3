"""ChannelChainView: what the chain says about a channel, read for claims and cached briefly.

A claim is checked against the channel's on-chain state (participants, open, deposits), and
our own next claim is bounded by our deposit. Claims come often under heavy traffic, so the
reads (one `getChannel` and two `getParticipant` calls) are cached for `ttl` seconds. A
check that would refuse on cached state (closed, amount above the deposit) asks again with
`fresh=True` before refusing, since a top-up may have landed since; what the cache can hide
is a close within the last `ttl` seconds.

Concurrent reads of one channel share one RPC round trip.

`funding` reads a participant's deposit and withdrawals from the contract's events instead:
the contract deletes participant state when it settles, and a settled channel's payout is
reconciled against what its payer put in (connector.payout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import ChannelState, Deployment
from connector.claims import ChannelFacts, ChannelSide

DEFAULT_TTL = 1.0


class ChannelChainView:
    def __init__(
        self,
        w3: AsyncWeb3,
        deployment: Deployment,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._w3 = w3
        self._deployment = deployment
        self._ttl = ttl
        self._clock = clock
        self._facts: dict[str, tuple[float, ChannelFacts]] = {}
        self._reads: dict[str, asyncio.Future[ChannelFacts]] = {}
        self.rpc_reads = 0  # channel reads that went to the chain (for tests and figures)

    async def facts(self, channel_id: str, *, fresh: bool = False) -> ChannelFacts:
        channel_id = "0x" + channel_id.removeprefix("0x").lower()
        cached = self._facts.get(channel_id)
        if not fresh and cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        read = self._reads.get(channel_id)
        if read is None:
            read = asyncio.ensure_future(self._read(channel_id))
            self._reads[channel_id] = read
            read.add_done_callback(lambda _: self._reads.pop(channel_id, None))
        return await asyncio.shield(read)

    async def _read(self, channel_id: str) -> ChannelFacts:
        started = self._clock()
        self.rpc_reads += 1
        channel = await tn.get_channel(self._w3, self._deployment, channel_id)
        if channel.state is ChannelState.NONE:
            facts = ChannelFacts(channel_id, False, False, ("", ""), {})
        else:
            participants = (
                to_checksum_address(channel.participant1),
                to_checksum_address(channel.participant2),
            )
            sides = await asyncio.gather(
                *(
                    tn.get_participant(self._w3, self._deployment, channel_id, address)
                    for address in participants
                )
            )
            facts = ChannelFacts(
                channel_id=channel_id,
                exists=True,
                is_open=channel.state is ChannelState.OPENED,
                participants=participants,
                sides={
                    address: ChannelSide(side.deposit, side.withdrawn)
                    for address, side in zip(participants, sides, strict=True)
                },
            )
        self._facts[channel_id] = (started, facts)
        return facts

    async def funding(self, channel_id: str, participant: str) -> ChannelSide:
        """`participant`'s total deposit and total withdrawn on the channel, from the
        contract's events (`token_network.get_funding`), so also once it is settled. Not
        cached."""
        deposit, withdrawn = await tn.get_funding(
            self._w3, self._deployment, channel_id, participant
        )
        return ChannelSide(deposit, withdrawn)
