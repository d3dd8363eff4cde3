"""BTP server: accepts websocket connections, authenticates peers, runs one `BtpLink` each.

Peers are named by the auth Message: `auth_username` is the peer id and must match a
configured token. ilp-plugin-btp sends an empty username; then the token alone names the
peer, if exactly one configured token matches. Tokens are compared with
`hmac.compare_digest` and never logged.

A peer that authenticates again while its previous link is still up replaces it: the old
link is closed (its `on_link_down` runs) before the new one's `on_link_up`.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
from collections.abc import Mapping

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve

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


class BtpServer:
    def __init__(
        self,
        host: str,
        port: int,
        peers: Mapping[str, str],
        handler: PeerHandler,
        on_link_up: LinkCallback | None = None,
        on_link_down: LinkCallback | None = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        auth_timeout: float = DEFAULT_AUTH_TIMEOUT,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._tokens = {peer_id: token.encode("utf-8") for peer_id, token in peers.items()}
        self._handler = handler
        self._on_link_up = on_link_up
        self._on_link_down = on_link_down
        self._max_frame_size = max_frame_size
        self._auth_timeout = auth_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._server: Server | None = None
        self._links: dict[str, BtpLink] = {}
        self._all_links: set[BtpLink] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("BtpServer is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def links(self) -> Mapping[str, BtpLink]:
        """Open links by peer id."""
        return dict(self._links)

    async def start(self) -> None:
        self._server = await serve(
            self._accept,
            self.host,
            self._requested_port,
            max_size=self._max_frame_size,
            compression=None,  # small binary frames on the hot path; deflate costs more than it saves
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            server_header=None,
        )
        log.info("BTP_SERVER_STARTED", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await asyncio.gather(*(link.cancel_requests_in_progress() for link in self._all_links))
        # Stops listening and closes every connection (1001); wait_closed returns once every
        # connection handler, hence every link's on_link_down, has finished.
        server.close()
        await server.wait_closed()
        log.info("BTP_SERVER_STOPPED", host=self.host)

    def authenticate(self, username: str, token: str) -> str | None:
        """The peer id these credentials name, or None. Constant-time in the token."""
        given = token.encode("utf-8")
        if username:
            expected = self._tokens.get(username)
            if expected is not None and hmac.compare_digest(given, expected):
                return username
            return None
        # No username (ilp-plugin-btp): compare against every token, without stopping early.
        matches = [
            peer_id
            for peer_id, expected in self._tokens.items()
            if hmac.compare_digest(given, expected)
        ]
        return matches[0] if len(matches) == 1 else None

    async def _accept(self, websocket: ServerConnection) -> None:
        protocol = BtpProtocol.server(self.authenticate, clock=utc_now)
        link = BtpLink(
            websocket,
            protocol,
            self._handler,
            direction="inbound",
            on_link_up=self._link_up,
            on_link_down=self._link_down,
        )
        self._all_links.add(link)
        try:
            await link.run(self._auth_timeout)
        finally:
            self._all_links.discard(link)

    async def _link_up(self, link: BtpLink) -> None:
        previous = self._links.get(link.peer_id)
        if previous is not None and previous is not link:
            log.info("BTP_LINK_REPLACED", peer_id=link.peer_id)
            await previous.close()
        self._links[link.peer_id] = link
        if self._on_link_up is not None:
            result = self._on_link_up(link)
            if inspect.isawaitable(result):
                await result

    async def _link_down(self, link: BtpLink) -> None:
        if self._links.get(link.peer_id) is link:
            del self._links[link.peer_id]
        if self._on_link_down is not None:
            result = self._on_link_down(link)
            if inspect.isawaitable(result):
                await result
