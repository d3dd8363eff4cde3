"""RpcGate: a JSON-RPC forwarder between one worker and anvil that can hold chosen methods.

Crash tests use it to stop a worker at an exact step: hold `eth_sendRawTransaction` and the
worker freezes right after `sign_transactions`, with the signed bytes in history and nothing
on chain. A worker is killed while its call waits at the gate; `drop_held()` then answers
the dead process's calls with 503, so nothing it asked for ever reaches the chain.

Every call is forwarded unchanged to the real node; nothing is answered in its place.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from connector.devstack import free_port


@dataclass
class _HeldCall:
    methods: frozenset[str]
    # True: forward it; False: answer 503 (its caller is dead).
    verdict: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RpcGate:
    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._port = free_port()
        self._holding: set[str] = set()
        self._held: list[_HeldCall] = []
        self.calls: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        self.drop_held()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def hold(self, method: str) -> None:
        """From now on, calls of `method` wait at the gate."""
        self._holding.add(method)

    def release(self, method: str) -> None:
        """Stop holding `method` and forward the calls that no other hold keeps waiting."""
        self._holding.discard(method)
        for call in list(self._held):
            if not call.methods & self._holding:
                self._held.remove(call)
                call.verdict.set_result(True)

    def drop_held(self) -> None:
        """Answer every waiting call with 503 and stop holding: their caller was killed."""
        self._holding.clear()
        for call in self._held:
            call.verdict.set_result(False)
        self._held.clear()

    def held(self, method: str) -> int:
        return sum(method in call.methods for call in self._held)

    async def wait_held(self, method: str, *, timeout: float) -> None:
        """Until a call of `method` waits at the gate."""
        async with asyncio.timeout(timeout):
            while not self.held(method):
                await asyncio.sleep(0.01)

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        methods = _methods(body)
        self.calls.update(methods)
        if methods & self._holding:
            call = _HeldCall(methods)
            self._held.append(call)
            if not await call.verdict:
                return web.Response(status=503, text="caller killed at the gate")
        assert self._session is not None
        async with self._session.post(
            self._upstream, data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            return web.Response(
                body=await answer.read(), status=answer.status, content_type="application/json"
            )


def _methods(body: bytes) -> frozenset[str]:
    decoded = json.loads(body)
    calls = decoded if isinstance(decoded, list) else [decoded]
    return frozenset(call.get("method", "") for call in calls if isinstance(call, dict))
