"""Codec cost per packet: ILP Prepare / Fulfill / Reject, the forwarding patch, BTP frames.

The last row is the codec work of one forwarded packet at one hop: decode the incoming
BTP Message and its Prepare, patch amount and expiry, encode the outgoing BTP Message;
then decode the BTP Response and its Fulfill, and encode the Response upstream.
The budget for a whole hop is ~160 µs CPU (DESIGN §9, the interledgerjs connector).

    .venv/bin/python -m bench.codec [--repeat 7]

Prints a markdown table for BENCHMARKS.md ("## Codecs"): median and best of `repeat`
timings, each over enough calls to take ~0.2 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from connector.codec import btp, ilp
from connector.codec.btp import ContentType, ProtocolData

EXPIRES = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CONDITION = bytes(range(32))


def _ilp_entry(packet: bytes) -> tuple[ProtocolData, ...]:
    return (ProtocolData("ilp", ContentType.OCTET_STREAM, packet),)


def cases() -> list[tuple[str, Callable[[], object]]]:
    small = ilp.Prepare(1000, EXPIRES, CONDITION, "test.downstream.bob", b"ping")
    stream = ilp.Prepare(1000, EXPIRES, CONDITION, "g.example.receiver.~stream.x7f3", bytes(256))
    fulfill = ilp.Fulfill(bytes(32), b"hello from bob")
    reject = ilp.Reject("F02", "test.conn", "no route found. destination=test.nowhere.alice", b"")
    small_bytes = ilp.encode(small)
    stream_bytes = ilp.encode(stream)
    reject_bytes = ilp.encode(reject)
    fulfill_bytes = ilp.encode(fulfill)
    message = btp.Message(233823305, _ilp_entry(stream_bytes))
    message_bytes = btp.encode(message)
    response_bytes = btp.encode(btp.Response(233823305, _ilp_entry(fulfill_bytes)))
    earlier = EXPIRES - timedelta(seconds=1)

    def forward_one_hop() -> bytes:
        incoming = btp.decode(message_bytes)
        prepare_bytes = incoming.protocol_data[0].data
        prepare = ilp.decode_prepare(prepare_bytes)
        outgoing = ilp.encode_prepare_forward(prepare_bytes, prepare.amount, earlier)
        btp.encode(btp.Message(7, _ilp_entry(outgoing)))
        reply = btp.decode(response_bytes)
        reply_bytes = reply.protocol_data[0].data
        ilp.decode(reply_bytes)
        return btp.encode(btp.Response(incoming.request_id, _ilp_entry(reply_bytes)))

    return [
        ("ILP Prepare decode (4 B data)", lambda: ilp.decode(small_bytes)),
        ("ILP Prepare encode (4 B data)", lambda: ilp.encode(small)),
        ("ILP Prepare decode (256 B data)", lambda: ilp.decode(stream_bytes)),
        ("ILP Prepare encode (256 B data)", lambda: ilp.encode(stream)),
        (
            "ILP Prepare forward patch (amount + expiry)",
            lambda: ilp.encode_prepare_forward(stream_bytes, 999, earlier),
        ),
        ("ILP Fulfill decode", lambda: ilp.decode(fulfill_bytes)),
        ("ILP Fulfill encode", lambda: ilp.encode(fulfill)),
        ("ILP Reject decode", lambda: ilp.decode(reject_bytes)),
        ("ILP Reject encode", lambda: ilp.encode(reject)),
        ("BTP Message with ilp decode", lambda: btp.decode(message_bytes)),
        ("BTP Message with ilp encode", lambda: btp.encode(message)),
        ("codec work of one forwarded packet (one hop)", forward_one_hop),
    ]


def measure(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, best) in µs per call."""
    timer = timeit.Timer(function)
    calls, _ = timer.autorange()
    calls = max(calls, int(calls * 0.2 / max(timer.timeit(calls), 1e-9)))
    runs = [seconds / calls * 1e6 for seconds in timer.repeat(repeat, calls)]
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for name, function in cases():
        median, best = measure(function, args.repeat)
        rows.append(f"| {name} | {median:.2f} | {best:.2f} |")
    print(f"Python {platform.python_version()} on {platform.machine()}")
    print()
    print("| operation | median µs | best µs |")
    print("|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
