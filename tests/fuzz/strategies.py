"""Hypothesis strategies for fuzzing: valid encodings, and byte edits that break them where
decoders are weakest (length prefixes, truncation, duplicated spans)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import strategies as st

from connector.codec import btp, ilp
from connector.codec.btp import ProtocolData
from tests.fuzz import targets

SEEDS = targets.seeds()

# --- byte edits ---------------------------------------------------------------------------

MAX_EDITS = 4
MAX_EDIT_AT = 10_000
# Length prefixes: short form, or long form with 1-7 length bytes.
LENGTH_BYTES = (0x00, 0x7F, 0x80, 0x81, 0x82, 0x86, 0x87, 0xFF)

EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, MAX_EDIT_AT), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, MAX_EDIT_AT), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, MAX_EDIT_AT), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, MAX_EDIT_AT), st.just(0)),
    # A length prefix rewritten.
    st.tuples(st.just("length"), st.integers(0, MAX_EDIT_AT), st.sampled_from(LENGTH_BYTES)),
    st.tuples(st.just("duplicate"), st.integers(0, MAX_EDIT_AT), st.integers(1, 64)),
)


def apply_edits(data: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, at, arg in edits:
        pos = at % (len(buf) + 1)
        if kind == "set" and buf:
            buf[pos % len(buf)] = arg  # type: ignore[assignment]
        elif kind in ("insert", "length"):
            buf[pos:pos] = arg if isinstance(arg, bytes) else bytes([arg])  # type: ignore[arg-type]
        elif kind == "delete":
            del buf[pos : pos + arg]  # type: ignore[operator]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "duplicate":
            buf[pos:pos] = buf[pos : pos + arg]  # type: ignore[operator]
    return bytes(buf)


def random_edits(rng: random.Random) -> list[tuple[str, int, object]]:
    """Up to `MAX_EDITS` edits of the kinds `EDIT` draws, from a plain RNG: for a harness that
    mutates a million inputs in minutes, where a hypothesis draw per input costs too much."""
    edits: list[tuple[str, int, object]] = []
    for _ in range(rng.randrange(MAX_EDITS + 1)):
        kind = rng.choice(("set", "insert", "delete", "truncate", "length", "duplicate"))
        arg: object
        if kind == "set":
            arg = rng.randrange(256)
        elif kind == "insert":
            arg = rng.randbytes(rng.randint(1, 8))
        elif kind == "delete":
            arg = rng.randint(1, 8)
        elif kind == "length":
            arg = rng.choice(LENGTH_BYTES)
        elif kind == "duplicate":
            arg = rng.randint(1, 64)
        else:
            arg = 0
        edits.append((kind, rng.randrange(MAX_EDIT_AT + 1), arg))
    return edits


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(apply_edits, valid, st.lists(EDIT, max_size=MAX_EDITS))


# --- structured generators ------------------------------------------------------------------

SEGMENT = st.text(alphabet="abcXYZ019_~-", min_size=1, max_size=12)
ADDRESSES = st.builds(
    lambda scheme, segments: ".".join([scheme, *segments]),
    st.sampled_from(["g", "test", "private", "peer", "example", "local", "self", "test3"]),
    st.lists(SEGMENT, min_size=1, max_size=4),
)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
PACKETS = st.one_of(
    st.builds(
        ilp.Prepare,
        st.integers(0, ilp.MAX_AMOUNT),
        MOMENTS,
        st.binary(min_size=32, max_size=32),
        ADDRESSES,
        st.binary(max_size=300),
    ),
    st.builds(ilp.Fulfill, st.binary(min_size=32, max_size=32), st.binary(max_size=300)),
    st.builds(
        ilp.Reject,
        st.sampled_from([code.value for code in ilp.ErrorCode] + ["Z99", "F1x"]),
        st.one_of(st.just(""), ADDRESSES),
        st.text(max_size=50),
        st.binary(max_size=50),
    ),
)
ILP_BYTES = st.one_of(PACKETS.map(ilp.encode), st.sampled_from(SEEDS["ilp"]))

ENTRY_NAMES = st.sampled_from(["ilp", "auth", "auth_token", "payment-channel-claim", "x"])
ENTRIES = st.lists(
    st.builds(
        ProtocolData,
        ENTRY_NAMES,
        st.integers(0, 255),
        st.one_of(ILP_BYTES, st.binary(max_size=100)),
    ),
    max_size=3,
).map(tuple)
REQUEST_IDS = st.integers(0, btp.MAX_REQUEST_ID)
FRAMES = st.one_of(
    st.builds(btp.Message, REQUEST_IDS, ENTRIES),
    st.builds(btp.Response, REQUEST_IDS, ENTRIES),
    st.builds(btp.Transfer, REQUEST_IDS, st.integers(0, btp.MAX_AMOUNT), ENTRIES),
    st.builds(
        btp.Error,
        REQUEST_IDS,
        st.sampled_from(["F00", "F01", "T00", "ZZZ"]),
        st.sampled_from(["NotAcceptedError", ""]),
        st.sampled_from(["20261124000000.000Z", "", "garbage"]),
        st.binary(max_size=40),
        ENTRIES,
    ),
)
BTP_BYTES = st.one_of(FRAMES.map(btp.encode), st.sampled_from(SEEDS["btp"]))


MESSAGES = st.lists(
    st.one_of(mutated(BTP_BYTES), BTP_BYTES, st.binary(max_size=40)), min_size=1, max_size=8
)
AUTH_FIRST = st.one_of(
    st.sampled_from(
        [
            targets.auth_frame(b"alice", b"alice-token"),
            targets.auth_frame(b"", b"bob-token", 77),
            targets.auth_frame(b"bob", b"alice-token"),
        ]
    ),
    mutated(st.just(targets.auth_frame(b"alice", b"alice-token"))),
)


# --- what a live node acts on ----------------------------------------------------------------


def live_prepares(destinations: Sequence[str]) -> st.SearchStrategy[bytes]:
    """ILP Prepares the packet path acts on (to the node itself, to a peer, nowhere)."""
    return st.builds(
        lambda amount, destination, data: ilp.encode(
            ilp.Prepare(amount, targets.EXPIRES, bytes(32), destination, data)
        ),
        st.integers(0, 10**9),
        st.sampled_from(destinations),
        st.binary(max_size=64),
    )


def ilp_messages(destinations: Sequence[str]) -> st.SearchStrategy[bytes]:
    """BTP Messages carrying `ilp`: a live Prepare, any ILP packet, or a damaged one."""
    return st.builds(
        lambda request_id, packet: btp.encode(
            btp.Message(request_id, (ProtocolData("ilp", btp.ContentType.OCTET_STREAM, packet),))
        ),
        REQUEST_IDS,
        st.one_of(live_prepares(destinations), ILP_BYTES, mutated(ILP_BYTES)),
    )
