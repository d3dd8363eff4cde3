"""The routing table: which peer a destination ILP address goes to next. Pure.

Longest-prefix match over whole address segments (RFC 0015): a route for `g.alice` matches
`g.alice` and `g.alice.bob` but not `g.alicex`. The empty prefix `""` is a default route.
Destinations under `peer.` (the peer protocols: CCP, ILDCP) are link-local and never resolve,
and no route may be configured for them.

Lookup walks the destination's own prefixes from the longest down, one dict lookup per
segment, so its cost does not grow with the number of routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PEER_PROTOCOL_PREFIX = "peer"


def is_peer_protocol(destination: str) -> bool:
    """Whether `destination` is a link-local peer-protocol address (`peer` or `peer.*`)."""
    return destination.startswith("peer.") or destination == PEER_PROTOCOL_PREFIX


class RoutingTable:
    """Static routes, prefix → next-hop peer id; immutable once built."""

    __slots__ = ("_default", "_routes")

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        table: dict[str, str] = {}
        for prefix, peer in routes:
            if is_peer_protocol(prefix):
                raise ValueError(f"route prefix {prefix!r}: peer.* addresses are never routed")
            if prefix.endswith(".") or ".." in prefix or prefix.startswith("."):
                raise ValueError(f"route prefix {prefix!r} is not whole address segments")
            if prefix in table and table[prefix] != peer:
                raise ValueError(
                    f"route prefix {prefix!r} is given twice ({table[prefix]!r}, {peer!r})"
                )
            table[prefix] = peer
        self._default = table.pop("", None)
        self._routes = table

    def resolve(self, destination: str) -> str | None:
        """The next-hop peer for `destination`, or None when no route matches."""
        if is_peer_protocol(destination):
            return None
        routes = self._routes
        prefix = destination
        while True:
            peer = routes.get(prefix)
            if peer is not None:
                return peer
            cut = prefix.rfind(".")
            if cut < 0:
                return self._default
            prefix = prefix[:cut]

    def entries(self) -> Mapping[str, str]:
        """All routes, prefix → peer (the default route under `""`), for the admin API."""
        out = dict(self._routes)
        if self._default is not None:
            out[""] = self._default
        return out
