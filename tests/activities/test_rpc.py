"""connect_rpc against a real anvil: calls reuse kept-alive connections (web3's default
session opens and closes one per request, two per eth_call with its chain-id check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities import token_network as tn
from activities.rpc import connect_rpc
from activities.token_network import Deployment
from connector.devstack import Anvil

pytestmark = pytest.mark.integration

TIME_WAIT = "06"


def closed_connections(port: int) -> int:
    """Loopback TCP connections of `port` lingering in TIME_WAIT (each one was closed)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
        if port in ports and fields[3] == TIME_WAIT:
            count += 1
    return count


async def calls(w3: AsyncWeb3, deployment: Deployment, n: int) -> None:
    for _ in range(n):
        assert await tn.token_balance(w3, deployment, deployment.token) == 0
        assert await w3.eth.chain_id == 31337


async def test_calls_reuse_kept_alive_connections(anvil: Anvil, deployment: Deployment) -> None:
    w3 = await connect_rpc(anvil.url)
    try:
        before = closed_connections(anvil.port)
        await calls(w3, deployment, 50)
        assert closed_connections(anvil.port) - before <= 2
    finally:
        await w3.provider.disconnect()


async def test_the_default_session_closes_a_connection_per_request(
    anvil: Anvil, deployment: Deployment
) -> None:
    # What connect_rpc is for: shows the check above can fail.
    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    try:
        before = closed_connections(anvil.port)
        await calls(w3, deployment, 50)
        assert closed_connections(anvil.port) - before >= 100
    finally:
        await w3.provider.disconnect()
