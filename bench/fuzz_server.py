"""Soak fuzzing of the BTP server over real websockets: a million inputs in under a minute.

    .venv/bin/python -m bench.fuzz_server [--inputs 1000000] [--links 4] [--seed 1] [--json]

A real `ConnectorNode` (the node of `tests/fuzz/btp_node.py`, no settlement) runs in a child
process on 127.0.0.1, so the node and the fuzzer each have a core. `--links` authenticated
connections stream inputs at it concurrently, each with up to `--window` answers awaited:
mutations (`strategies.random_edits`) of valid frames drawn from the hypothesis strategies
(Messages carrying live, foreign or damaged ILP Prepares, Responses, Errors, Transfers,
auth frames), the frames unmutated, random bytes and text messages. One input in
`--before-auth-every` goes instead on a fresh connection as its first message (mutated and
valid auth frames, mutated frames, bytes, text): slower, since each costs a handshake.

Checked as it goes (the rules of `connector/btp/protocol.py` and RFC 0023):

- after auth, each input gets exactly the answer its bytes call for: a Message carrying
  `ilp` a Response carrying an ILP Fulfill or Reject; an auth Message, a Transfer or a
  Message for which the node has no handler an Error F00; an unreadable frame whose type
  byte says request an Error F01; anything else nothing. An answer to nothing, a second
  answer, a wrong answer or a closed link is a crash. The fuzzer keeps request ids unique
  among its unanswered requests (a duplicate id is the sender's error and goes unanswered).
- before auth, a valid auth frame (peers alice / bob) gets `Response(id, ())`; anything else
  exactly one Error F00 naming the request id (none when fewer than 5 bytes came) and the
  connection closed. Valid auths name other peers than the links under fuzz, whose tokens
  are random, so a fresh connection can never replace one of them.
- no answer (nor close, before auth) takes longer than `--hang-s`: a hang.
- every `--probe-every` inputs, and at the end, each link answers a well-formed Prepare
  with a Response carrying `ilp` (the packet path's F02).
- the node logs nothing at error level, no warning but a fuzzed Fulfill's
  `WRONG_FULFILLMENT`, its event loop reports no stray exception, and at the end every
  link under fuzz is still up on the node's side. Polled every `POLL_S` seconds.

Prints inputs tried (before / after auth), seconds, inputs/s, answers checked, probes, the
slowest answer, crashes and hangs (details of the first few). Exit 1 on any crash or hang
or when fewer inputs than asked were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from connector.codec import btp, ilp
from connector.codec.errors import CodecError
from connector.config import NodeConfig
from connector.node import ConnectorNode
from tests.fuzz import targets
from tests.fuzz.btp_node import (
    authenticate,
    check_probe_answer,
    connect_to,
    forwarded_reply,
    node_config_data,
    probe,
)
from tests.fuzz.strategies import (
    AUTH_FIRST,
    BTP_BYTES,
    apply_edits,
    ilp_messages,
    random_edits,
)

POLL_S = 2.0
POOL_SIZE = 1500  # valid frames drawn per kind; mutations make each input new
MAX_FAILURES_SHOWN = 20
# Warnings a fuzzed input may rightly cause: a Response of ours that happened to carry the
# id of a Prepare the node forwarded to us, with a Fulfill that does not match it.
EXPECTED_WARNINGS = {"WRONG_FULFILLMENT"}


# --- the node, in its own process ----------------------------------------------------------


@dataclass
class NodeReport:
    events: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


class NodeWatch:
    """Counts the node's log events; keeps the unexpected ones (errors, stray exceptions)."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.format_exc_info,
                self._record,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )
        handler = _StdlibWatch(self)
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.WARNING)
        loop.set_exception_handler(self._loop_exception)

    def _record(self, _logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        name = str(event.get("event"))
        self.events[name] += 1
        level = event.get("level", "info")
        if level in ("error", "critical", "exception") or (
            level == "warning" and name not in EXPECTED_WARNINGS
        ):
            self.unexpected.append(f"{level} {event}")
        raise structlog.DropEvent

    def _loop_exception(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.unexpected.append(f"event loop: {context.get('message')} {context.get('exception')!r}")

    def report(self, node: ConnectorNode) -> NodeReport:
        return NodeReport(dict(self.events), list(self.unexpected), sorted(node.links))


class _StdlibWatch(logging.Handler):
    def __init__(self, watch: NodeWatch) -> None:
        super().__init__(logging.WARNING)
        self._watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._watch.unexpected.append(text)


def _run_node(config_data: dict[str, Any], conn: Connection) -> None:
    asyncio.run(_serve_node(config_data, conn))


async def _serve_node(config_data: dict[str, Any], conn: Connection) -> None:
    """Child process: start the node, send its BTP port, then answer "report" / "stop"."""
    watch = NodeWatch()
    watch.install(asyncio.get_running_loop())
    node = ConnectorNode(NodeConfig.model_validate(config_data))
    await node.start()
    conn.send(node.btp_port)
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command == "stop":
            report = watch.report(node)
            await node.stop()
            conn.send(report)
            return
        conn.send(watch.report(node))


class NodeProcess:
    def __init__(self, config_data: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_run_node, args=(config_data, child), daemon=True)

    def start(self) -> int:
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the node did not start within 60 s")
        port: int = self._conn.recv()
        return port

    async def report(self, command: str = "report") -> NodeReport | None:
        """The node's report; None when the node process is gone (it crashed)."""

        def ask() -> NodeReport | None:
            try:
                self._conn.send(command)
                if not self._conn.poll(30):
                    return None
                report: NodeReport = self._conn.recv()
                return report
            except (EOFError, OSError):
                return None

        return await asyncio.to_thread(ask)

    def stop(self) -> None:
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


# --- inputs ----------------------------------------------------------------------------------


def draw(strategy: st.SearchStrategy[bytes], count: int, seed: int) -> list[bytes]:
    """`count` examples of a hypothesis strategy (generation only, reproducible by seed)."""
    pool: list[bytes] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: bytes) -> None:
        pool.append(example)

    collect()
    return pool


@dataclass(frozen=True)
class Pools:
    frames: list[bytes]  # BTP frames of every type, valid
    ilp: list[bytes]  # Messages carrying live, foreign or damaged ILP packets
    auth: list[bytes]  # auth frames for alice / bob, valid or mutated

    @classmethod
    def drawn(cls, destinations: list[str], size: int, seed: int) -> Pools:
        return cls(
            draw(BTP_BYTES, size, seed),
            draw(ilp_messages(destinations), size, seed + 1),
            draw(AUTH_FIRST, size // 4, seed + 2),
        )


# Code points for text messages: ASCII (the request type bytes 6/7 among the controls), Latin,
# CJK, emoji; no surrogates (a text message must be valid UTF-8).
_TEXT_RANGES = ((0, 0x7F), (0x80, 0x7FF), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F))


class Inputs:
    def __init__(self, pools: Pools, rng: random.Random) -> None:
        self._pools = pools
        self._rng = rng

    def _mutate(self, data: bytes) -> bytes:
        return apply_edits(data, random_edits(self._rng))

    def _bytes(self) -> bytes:
        return self._rng.randbytes(self._rng.randrange(65))

    def _text(self) -> str:
        rng = self._rng
        low, high = rng.choice(_TEXT_RANGES)
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randrange(65)))

    def after_auth(self) -> bytes | str:
        rng, pools = self._rng, self._pools
        r = rng.random()
        if r < 0.35:
            return self._mutate(rng.choice(pools.frames))
        if r < 0.50:
            return rng.choice(pools.frames)
        if r < 0.62:
            return rng.choice(pools.ilp)
        if r < 0.70:
            return self._mutate(rng.choice(pools.ilp))
        if r < 0.76:
            return self._mutate(rng.choice(pools.auth))
        if r < 0.88:
            return self._bytes()
        return self._text()

    def before_auth(self) -> bytes | str:
        rng, pools = self._rng, self._pools
        r = rng.random()
        if r < 0.40:
            return self._mutate(rng.choice(pools.auth))
        if r < 0.50:
            return rng.choice(pools.auth)
        if r < 0.70:
            return self._mutate(rng.choice(pools.frames + pools.ilp))
        if r < 0.85:
            return self._bytes()
        return self._text()


# --- what the server must answer -------------------------------------------------------------


class Answer(Enum):
    ILP_RESPONSE = "Response carrying ilp"
    ERROR_F00 = "Error F00"
    ERROR_F01 = "Error F01"
    PROBE = "Response carrying ilp F02"


def expected_answer(data: bytes) -> Answer | None:
    """The answer an authenticated link owes for one websocket message; None: no answer."""
    try:
        frame = btp.decode(data)
    except CodecError:
        readable_request = len(data) >= 5 and data[0] in btp.REQUEST_TYPES
        return Answer.ERROR_F01 if readable_request else None
    if not isinstance(frame, btp.Message | btp.Transfer):
        return None  # Responses and Errors are never answered
    if frame.protocol_data and frame.protocol_data[0].protocol_name == "auth":
        return Answer.ERROR_F00  # already authenticated
    if isinstance(frame, btp.Transfer):
        return Answer.ERROR_F00  # settlement travels as Message protocol data
    if btp.find(frame.protocol_data, "ilp") is not None:
        return Answer.ILP_RESPONSE
    return Answer.ERROR_F00  # no settlement: the node has no other protocol handler


def check_answer(expected: Answer, frame: btp.Response | btp.Error) -> str | None:
    """Raise AssertionError / CodecError unless `frame` is the answer owed; the ILP code
    (or "fulfill") of a Response to an ILP Message."""
    if expected is Answer.PROBE:
        check_probe_answer(frame)
        return None
    if expected is Answer.ILP_RESPONSE:
        assert isinstance(frame, btp.Response), f"an ILP Message was answered with {frame!r}"
        entry = btp.find(frame.protocol_data, "ilp")
        assert entry is not None, f"Response to an ILP Message without ilp: {frame!r}"
        reply = ilp.decode_fulfill_or_reject(entry.data)
        return reply.code if isinstance(reply, ilp.Reject) else "fulfill"
    code = "F00" if expected is Answer.ERROR_F00 else "F01"
    assert isinstance(frame, btp.Error) and frame.code == code, f"{expected.value}: {frame!r}"
    return None


def _request_id(data: bytes) -> int:
    return int.from_bytes(data[1:5], "big")


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Tally:
    after_auth: int = 0
    before_auth: int = 0
    answers: int = 0
    probes: int = 0
    slowest_ms: float = 0.0
    crashes: int = 0
    hangs: int = 0
    failures: list[str] = field(default_factory=list)
    # What the inputs called for (after auth: the answer owed; before auth: the outcome)
    # and the ILP codes in the Responses to ILP Messages: the reach of the run.
    kinds: Counter[str] = field(default_factory=Counter)
    ilp_codes: Counter[str] = field(default_factory=Counter)

    def crash(self, what: str) -> None:
        self.crashes += 1
        self._note(f"crash: {what}")

    def hang(self, what: str) -> None:
        self.hangs += 1
        self._note(f"hang: {what}")

    def _note(self, text: str) -> None:
        if len(self.failures) < MAX_FAILURES_SHOWN:
            self.failures.append(text)

    def answered_in(self, seconds: float) -> None:
        self.answers += 1
        self.slowest_ms = max(self.slowest_ms, seconds * 1000)


class FuzzedLink:
    """One authenticated connection: sends inputs, accounts for every answer."""

    def __init__(self, ws: ClientConnection, peer: str, tally: Tally, window: int) -> None:
        self.peer = peer
        self._ws = ws
        self._tally = tally
        self._slots = asyncio.Semaphore(window)
        self.awaiting: dict[int, tuple[float, Answer, bytes]] = {}  # request id -> sent at, ...
        self._timed_out: set[int] = set()
        self._next_id = 0
        self._probes: dict[int, asyncio.Future[None]] = {}
        self.closing = False

    def _fresh_id(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & btp.MAX_REQUEST_ID
            if self._next_id not in self.awaiting and self._next_id not in self._timed_out:
                return self._next_id

    async def read(self) -> None:
        try:
            async for message in self._ws:
                assert isinstance(message, bytes), "the server sent a text message"
                frame = btp.decode(message)  # the server only sends well-formed frames
                if isinstance(frame, btp.Response | btp.Error):
                    self._settle(frame)
                else:
                    reply = forwarded_reply(frame)
                    if reply is not None:
                        await self._ws.send(reply)
        except ConnectionClosed:
            pass
        except (AssertionError, CodecError) as exc:
            self._tally.crash(f"{self.peer}: {exc!r}")
            self.closing = True
        if not self.closing:
            self._tally.crash(
                f"{self.peer}: link closed after auth ({self._ws.close_code} {self._ws.close_reason})"
            )
        for future in self._probes.values():
            if not future.done():
                future.set_exception(ConnectionError("link closed"))

    def _settle(self, frame: btp.Response | btp.Error) -> None:
        waiting = self.awaiting.pop(frame.request_id, None)
        if waiting is None:
            if frame.request_id in self._timed_out:
                self._timed_out.discard(frame.request_id)  # late; counted as a hang already
            else:
                self._tally.crash(f"{self.peer}: an answer to nothing (or a second one): {frame!r}")
            return
        sent_at, expected, data = waiting
        self._slots.release()
        self._tally.answered_in(time.monotonic() - sent_at)
        try:
            ilp_code = check_answer(expected, frame)
        except (AssertionError, CodecError) as exc:
            self._tally.crash(f"{self.peer}: input {data.hex()}: {exc}")
        else:
            if ilp_code is not None:
                self._tally.ilp_codes[ilp_code] += 1
        probe_done = self._probes.pop(frame.request_id, None)
        if probe_done is not None and not probe_done.done():
            probe_done.set_result(None)

    def expire(self, now: float, hang_s: float) -> None:
        for request_id, (sent_at, expected, data) in list(self.awaiting.items()):
            if now - sent_at > hang_s:
                del self.awaiting[request_id]
                self._timed_out.add(request_id)
                self._slots.release()
                self._tally.hang(f"{self.peer}: no {expected.value} in {hang_s}s to {data.hex()}")
                probe_done = self._probes.pop(request_id, None)
                if probe_done is not None and not probe_done.done():
                    probe_done.set_exception(TimeoutError("probe unanswered"))

    async def send(self, message: bytes | str) -> None:
        data = message.encode("utf-8") if isinstance(message, str) else message
        if len(data) >= 5 and data[0] in btp.REQUEST_TYPES:
            request_id = _request_id(data)
            if request_id in self.awaiting or request_id in self._timed_out:
                # Still unanswered: the node would rightly ignore it. Same bytes, a free id.
                data = data[:1] + self._fresh_id().to_bytes(4, "big") + data[5:]
                message = data
        expected = expected_answer(data)
        self._tally.kinds[expected.value if expected else "no answer"] += 1
        if isinstance(message, str):
            self._tally.kinds["text message"] += 1
        if expected is not None:
            await self._slots.acquire()
            self.awaiting[_request_id(data)] = (time.monotonic(), expected, data)
        await self._ws.send(message)

    async def probe(self) -> None:
        request_id = self._fresh_id()
        done = asyncio.get_running_loop().create_future()
        self._probes[request_id] = done
        data = probe(request_id)
        await self._slots.acquire()
        self.awaiting[request_id] = (time.monotonic(), Answer.PROBE, data)
        await self._ws.send(data)
        await done
        self._tally.probes += 1

    async def close(self) -> None:
        self.closing = True
        await self._ws.close()

    async def fuzz(self, count: int, inputs: Inputs, probe_every: int) -> None:
        try:
            for index in range(1, count + 1):
                await self.send(inputs.after_auth())
                self._tally.after_auth += 1
                if index % probe_every == 0:
                    await self.probe()
            await self.probe()  # the last one: every earlier input was read by now
            while self.awaiting:  # answers still being worked on (or expiring as hangs)
                await asyncio.sleep(0.01)
        except (ConnectionClosed, ConnectionError, TimeoutError):
            pass  # the reader or the watchdog has counted it


async def before_auth(url: str, message: bytes | str, tally: Tally, hang_s: float) -> None:
    """One fresh connection, one first message: a Response to a valid auth, else the Error
    F00 (when a request id can be read) and the close."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    valid = targets.is_valid_auth(data)
    tally.before_auth += 1
    received: list[btp.Frame] = []
    try:
        async with asyncio.timeout(hang_s):
            ws = await connect_to(url)
            try:
                await ws.send(message)
                if valid:
                    received.append(btp.decode(await ws.recv()))
                else:
                    while True:
                        received.append(btp.decode(await ws.recv()))
            except ConnectionClosed:
                pass
            finally:
                await ws.close()
    except TimeoutError:
        tally.hang(f"before auth: no answer or close in {hang_s}s to {data.hex()}")
        return
    except (OSError, CodecError) as exc:
        tally.crash(f"before auth: {exc!r} for {data.hex()}")
        return
    tally.kinds[
        "before auth: "
        + ("valid auth" if valid else "refused with F00" if len(data) >= 5 else "refused silently")
    ] += 1
    if valid:
        expected: list[btp.Frame] = [btp.Response(_request_id(data), ())]
        if received != expected:
            tally.crash(f"before auth: valid auth {data.hex()} answered {received!r}")
    elif len(data) >= 5:
        ok = (
            len(received) == 1
            and isinstance(received[0], btp.Error)
            and received[0].code == "F00"
            and received[0].request_id == _request_id(data)
        )
        if not ok:
            tally.crash(f"before auth: {data.hex()} answered {received!r}, not one Error F00")
    elif received:
        tally.crash(f"before auth: {data.hex()} (no request id) answered {received!r}")


@dataclass
class Result:
    inputs: int
    after_auth: int
    before_auth: int
    seconds: float
    inputs_per_s: float
    answers: int
    probes: int
    slowest_ms: float
    crashes: int
    hangs: int
    links: int
    failures: list[str]
    kinds: dict[str, int]
    ilp_codes: dict[str, int]
    node_events: dict[str, int]


async def soak(
    node: NodeProcess,
    port: int,
    link_peers: dict[str, str],
    *,
    inputs: int,
    before_auth_every: int,
    window: int,
    probe_every: int,
    hang_s: float,
    seed: int,
    pools: Pools,
) -> Result:
    url = f"ws://127.0.0.1:{port}"
    tally = Tally()
    links = []
    for peer, token in link_peers.items():
        links.append(FuzzedLink(await authenticate(url, peer, token), peer, tally, window))
    fresh = inputs // before_auth_every
    per_link, extra = divmod(inputs - fresh, len(links))
    readers = [asyncio.create_task(link.read()) for link in links]
    started = time.monotonic()

    async def fresh_connections(count: int, rng: random.Random) -> None:
        source = Inputs(pools, rng)
        for _ in range(count):
            await before_auth(url, source.before_auth(), tally, hang_s)

    # Two fresh-connection workers, so a handshake in progress never idles that part.
    senders = [
        link.fuzz(
            per_link + (index < extra), Inputs(pools, random.Random(f"{seed}/{index}")), probe_every
        )
        for index, link in enumerate(links)
    ] + [
        fresh_connections(fresh // 2 + (w < fresh % 2), random.Random(f"{seed}/fresh{w}"))
        for w in range(2)
    ]

    seen_unexpected = 0
    stop_watching = asyncio.Event()

    async def watch() -> None:
        nonlocal seen_unexpected
        last_poll = time.monotonic()
        last_progress = last_poll
        while not stop_watching.is_set():
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for link in links:
                link.expire(now, hang_s)
            if now - last_poll >= POLL_S:
                last_poll = now
                report = await node.report()
                if report is None:
                    tally.crash("the node process is gone")
                    return
                for line in report.unexpected[seen_unexpected:]:
                    tally.crash(f"node logged: {line}")
                seen_unexpected = len(report.unexpected)
            if now - last_progress >= 10:
                last_progress = now
                done = tally.after_auth + tally.before_auth
                print(
                    f"  {done:,} inputs, {now - started:.0f} s, {done / (now - started):,.0f}/s,"
                    f" crashes {tally.crashes}, hangs {tally.hangs}",
                    file=sys.stderr,
                )

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*senders)
    seconds = time.monotonic() - started
    stop_watching.set()
    await watcher
    # The node still holds every link under fuzz: none was dropped on its side either.
    report = await node.report()
    if report is not None and not set(link_peers) <= set(report.links):
        tally.crash(f"links up on the node at the end: {report.links}")
    for link in links:
        await link.close()
    await asyncio.gather(*readers)
    report = await node.report("stop")
    if report is None:
        tally.crash("the node process is gone")
        report = NodeReport()
    for line in report.unexpected[seen_unexpected:]:
        tally.crash(f"node logged: {line}")
    total = tally.after_auth + tally.before_auth
    return Result(
        inputs=total,
        after_auth=tally.after_auth,
        before_auth=tally.before_auth,
        seconds=round(seconds, 1),
        inputs_per_s=round(total / seconds),
        answers=tally.answers,
        probes=tally.probes,
        slowest_ms=round(tally.slowest_ms, 1),
        crashes=tally.crashes,
        hangs=tally.hangs,
        links=len(links),
        failures=tally.failures,
        kinds=dict(tally.kinds.most_common()),
        ilp_codes=dict(tally.ilp_codes.most_common()),
        node_events=report.events,
    )


def run(
    *,
    inputs: int,
    links: int = 4,
    before_auth_every: int = 100,
    window: int = 32,
    probe_every: int = 10_000,
    hang_s: float = 5.0,
    seed: int = 1,
    pool_size: int = POOL_SIZE,
) -> Result:
    link_peers = {f"fuzz{index}": secrets.token_hex(24) for index in range(links)}
    destinations = [
        *(f"g.{peer}.x" for peer in link_peers),
        "g.node",
        "g.alice.x",
        "g.nowhere",
    ]
    pools = Pools.drawn(destinations, pool_size, seed)
    with tempfile.TemporaryDirectory(prefix="btp-soak-") as tmp:
        node = NodeProcess(node_config_data(Path(tmp), link_peers))
        port = node.start()
        try:
            return asyncio.run(
                soak(
                    node,
                    port,
                    link_peers,
                    inputs=inputs,
                    before_auth_every=before_auth_every,
                    window=window,
                    probe_every=probe_every,
                    hang_s=hang_s,
                    seed=seed,
                    pools=pools,
                )
            )
        finally:
            node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--links", type=int, default=4, help="authenticated connections")
    parser.add_argument("--before-auth-every", type=int, default=100)
    parser.add_argument("--window", type=int, default=32, help="answers awaited per link")
    parser.add_argument("--probe-every", type=int, default=10_000)
    parser.add_argument("--hang-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(
        inputs=args.inputs,
        links=args.links,
        before_auth_every=args.before_auth_every,
        window=args.window,
        probe_every=args.probe_every,
        hang_s=args.hang_s,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"inputs tried {result.inputs:,} (after auth {result.after_auth:,} on "
            f"{result.links} links, before auth {result.before_auth:,} fresh connections) · "
            f"{result.seconds} s · {result.inputs_per_s:,} inputs/s · answers checked "
            f"{result.answers:,} · probes {result.probes} · slowest answer "
            f"{result.slowest_ms} ms · crashes {result.crashes} · hangs {result.hangs}"
        )
        print(f"  inputs: {result.kinds}")
        print(f"  ILP answers: {result.ilp_codes}")
        for failure in result.failures:
            print(f"  {failure}")
    failed = result.crashes or result.hangs or result.inputs < args.inputs
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
