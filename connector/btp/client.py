"""BTP client: connects to a peer's BTP server, authenticates, and stays connected.

After any end of a connection (refused, dropped, auth refused or timed out) it reconnects
with capped exponential backoff (+-20% jitter so restarted peers do not all return at
once), forever until `stop()`. The backoff restarts from the minimum once a link has been
open. WebSocket pings keep the link alive and detect a dead peer.
"""

from __future__ import annotations

import asyncio
import random

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.uri import parse_uri

from connector.btp.connection import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_MAX_FRAME_SIZE,
    BtpLink,
    LinkCallback,
    PeerHandler,
    utc_now,
)
from connector.btp.protocol import BtpProtocol

log = structlog.get_logger(__name__)


class BtpClient:
    def __init__(
        self,
        url: str,
        peer_id: str,
        auth_username: str,
        auth_token: str,
        handler: PeerHandler,
        on_link_up: LinkCallback | None = None,
        on_link_down: LinkCallback | None = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        auth_timeout: float = DEFAULT_AUTH_TIMEOUT,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        min_backoff: float = 0.1,
        max_backoff: float = 30.0,
    ) -> None:
        # ilp-plugin-btp writes server URLs as btp+ws:// / btp+wss://
        self.url = url.removeprefix("btp+")
        parse_uri(self.url)  # raises InvalidURI now rather than on every reconnect
        self.peer_id = peer_id
        self._username = auth_username
        self._token = auth_token
        self._handler = handler
        self._on_link_up = on_link_up
        self._on_link_down = on_link_down
        self._max_frame_size = max_frame_size
        self._auth_timeout = auth_timeout
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._link: BtpLink | None = None

    @property
    def link(self) -> BtpLink | None:
        """The current link if it is open."""
        link = self._link
        return link if link is not None and link.is_open else None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"btp-client-{self.peer_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        link = self._link
        if link is not None:
            await link.cancel_requests_in_progress()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if link is not None:
            await link.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            opened = False
            try:
                websocket = await connect(
                    self.url,
                    max_size=self._max_frame_size,
                    compression=None,
                    proxy=None,  # peers are dialled directly
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.warning(
                    "BTP_CONNECT_FAILED",
                    peer_id=self.peer_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                protocol = BtpProtocol.client(
                    self.peer_id, self._username, self._token, clock=utc_now
                )
                self._link = BtpLink(
                    websocket,
                    protocol,
                    self._handler,
                    direction="outbound",
                    on_link_up=self._on_link_up,
                    on_link_down=self._on_link_down,
                )
                opened = await self._link.run(self._auth_timeout)
            failures = 0 if opened else failures + 1
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        delay = min(self._max_backoff, self._min_backoff * 2 ** min(failures, 30))
        return delay * random.uniform(0.8, 1.2)
