"""The node under fuzz and how a fuzzer talks to it, shared by the hypothesis server test
(`tests/fuzz/test_btp_server.py`) and the million-input soak (`bench/fuzz_server.py`).

The node: a real `ConnectorNode` with its BTP server on 127.0.0.1 and its receiver, no
settlement, peers
`alice` and `bob` (the tokens `targets.auth_frame` / `strategies.AUTH_FIRST` use) plus any
extra peers a caller asks for, each with a route `g.<peer>`. Talking to it: connect,
authenticate, answer the Prepares it forwards to us, and the probe every fuzzer ends with:
a well-formed Prepare to an address nobody serves, answered by a BTP Response carrying
`ilp` (the packet path's own Reject F02).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from connector.codec import btp, ilp
from connector.codec.btp import ContentType, ProtocolData
from tests.fuzz import targets

ANSWER_WITHIN = 5.0
PROBE_DESTINATION = "g.nowhere.at.all"
FUZZ_PEERS = {"alice": "alice-token", "bob": "bob-token"}


def node_config_data(tmp: Path, extra_peers: Mapping[str, str] = {}) -> dict[str, Any]:
    """`NodeConfig` input for the node under fuzz (plain data, so it can cross processes)."""
    peers = {**FUZZ_PEERS, **extra_peers}
    return {
        "nodeId": "node",
        "ilpAddress": "g.node",
        "btpServerHost": "127.0.0.1",
        "btpServerPort": 0,
        "ledgerPath": str(tmp / "ledger.sqlite3"),
        "receiverSecret": "the receiver secret of the node under fuzz",
        "peers": [{"id": peer, "authToken": token} for peer, token in peers.items()],
        "routes": [{"prefix": f"g.{peer}", "peer": peer} for peer in peers],
    }


async def connect_to(url: str) -> ClientConnection:
    return await connect(url, proxy=None, max_size=None, open_timeout=ANSWER_WITHIN)


async def authenticate(
    url: str, username: str = "alice", token: str = "alice-token"
) -> ClientConnection:
    ws = await connect_to(url)
    await ws.send(targets.auth_frame(username.encode(), token.encode(), request_id=1))
    reply = btp.decode(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN))
    assert reply == btp.Response(1, ()), reply
    return ws


def forwarded_reply(frame: btp.Frame) -> bytes | None:
    """The node forwarded a Prepare to us (its route to our peer): the Response rejecting it,
    so it is done; None for a frame that is not a request."""
    if not isinstance(frame, btp.Message):
        return None
    reject = ilp.encode(ilp.Reject("F02", "g.fuzzer", "fuzzer", b""))
    entry = ProtocolData("ilp", ContentType.OCTET_STREAM, reject)
    return btp.encode(btp.Response(frame.request_id, (entry,)))


def probe(request_id: int) -> bytes:
    """A well-formed ILP Prepare in a BTP Message, to an address nobody serves."""
    expires = datetime.now(UTC) + timedelta(seconds=30)
    prepare = ilp.encode(ilp.Prepare(10, expires, bytes(32), PROBE_DESTINATION, b""))
    return btp.encode(
        btp.Message(request_id, (ProtocolData("ilp", ContentType.OCTET_STREAM, prepare),))
    )


def check_probe_answer(frame: btp.Frame) -> None:
    """The probe's answer is a Response carrying `ilp`: the packet path's Reject F02."""
    assert isinstance(frame, btp.Response), f"a Prepare was answered with {frame!r}"
    entry = btp.find(frame.protocol_data, "ilp")
    assert entry is not None, "Response to a Prepare without ilp"
    reply = ilp.decode_fulfill_or_reject(entry.data)
    assert isinstance(reply, ilp.Reject) and reply.code == "F02", reply


async def assert_serves(ws: ClientConnection, used_ids: set[int]) -> None:
    """The probe on `ws` is answered within `ANSWER_WITHIN`; forwarded Prepares on the way
    are rejected."""
    request_id = next(i for i in range(1_000_000, 2_000_000) if i not in used_ids)
    await ws.send(probe(request_id))
    async with asyncio.timeout(ANSWER_WITHIN):
        while True:
            frame = btp.decode(await ws.recv())  # the server only sends well-formed frames
            if frame.request_id == request_id and isinstance(frame, btp.Response | btp.Error):
                break
            reply = forwarded_reply(frame)
            if reply is not None:
                await ws.send(reply)
    check_probe_answer(frame)
