"""The JSON-RPC client the chain activities are given.

web3's default async HTTP session closes the TCP connection after every request
(`force_close`), and its validation middleware asks `eth_chainId` before every `eth_call`:
two connects per call. Provisioning makes thousands of small calls in bursts (balance reads,
receipts), so the client keeps a pool of connections open and caches the chain id, which
cannot change under a running node.
"""

from __future__ import annotations

from aiohttp import ClientSession, TCPConnector
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

# Enough for a burst of parallel reads; more would only queue inside the node.
MAX_CONNECTIONS = 32


async def connect_rpc(url: str, *, max_connections: int = MAX_CONNECTIONS) -> AsyncWeb3:
    """An AsyncWeb3 for `url` with keep-alive connections; call inside the loop that uses it.
    Close it with `await w3.provider.disconnect()`."""
    provider = AsyncHTTPProvider(
        url,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    session = ClientSession(
        connector=TCPConnector(limit=max_connections),
        raise_for_status=True,
    )
    await provider.cache_async_session(session)
    return AsyncWeb3(provider)
