"""CPU cost of one settlement claim (`connector/claims.py`): what the payer does to make it
and what the payee does to check it, without I/O (the SQLite write of a claim joins the
ledger's batch; the chain read is cached, see connector/chain_view.py).

A claim goes once per threshold crossing, not per packet: at a 1,000,000 threshold and
1,000-unit packets that is one claim per 1,000 packets on the link.

    .venv/bin/python -m bench.claims [--repeat 7]

Prints a markdown table for BENCHMARKS.md ("## Claims"): median and best of `repeat`
timings, each over enough calls to take ~0.2 s.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import coincurve
from eth_account import Account

from bench.codec import measure
from connector.claims import (
    ChannelFacts,
    ChannelSide,
    Claim,
    ClaimAck,
    ClaimDomain,
    ClaimSigner,
    check_against_channel,
    check_claim,
)

PAYER = Account.from_key("0x" + "11" * 32)
PAYEE = Account.from_key("0x" + "22" * 32)
DOMAIN = ClaimDomain(31337, "0x" + "ab" * 20)
CHANNEL = "0x" + "c1" * 32


def cases() -> list[tuple[str, Callable[[], object]]]:
    signer = ClaimSigner(PAYER.key, PAYER.address)
    last = signer.sign(DOMAIN, CHANNEL, 41, 41_000_000)
    claim = signer.sign(DOMAIN, CHANNEL, 42, 42_000_000)
    wire = claim.to_json()
    facts = ChannelFacts(
        CHANNEL,
        True,
        True,
        (PAYER.address, PAYEE.address),
        {PAYER.address: ChannelSide(10**20, 0), PAYEE.address: ChannelSide(10**20, 0)},
    )
    ack = ClaimAck(channel_id=CHANNEL, nonce=42).to_json()

    def payer() -> object:
        made = signer.sign(DOMAIN, CHANNEL, 42, 42_000_000)
        made.to_json()
        return ClaimAck.from_json(ack).acknowledges(made)

    def payee() -> object:
        received = Claim.from_json(wire)
        check_claim(received, domain=DOMAIN, partner=PAYER.address, last=last)
        check_against_channel(
            received, facts, our_address=PAYEE.address, partner=PAYER.address, our_transferred=0
        )
        return ClaimAck(channel_id=received.channel_id, nonce=received.nonce).to_json()

    return [
        ("sign (EIP-712 digest + secp256k1)", lambda: signer.sign(DOMAIN, CHANNEL, 42, 42)),
        ("claim to JSON", claim.to_json),
        ("claim from JSON (validated)", lambda: Claim.from_json(wire)),
        (
            "check_claim (recover signer, nonce, amount)",
            lambda: check_claim(claim, domain=DOMAIN, partner=PAYER.address, last=last),
        ),
        (
            "check_against_channel (cached facts)",
            lambda: check_against_channel(
                claim, facts, our_address=PAYEE.address, partner=PAYER.address, our_transferred=0
            ),
        ),
        ("payer: sign, encode, read the ack", payer),
        ("payee: decode, check, encode the ack", payee),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for name, function in cases():
        median, best = measure(function, args.repeat)
        rows.append(f"| {name} | {median:.1f} | {best:.1f} |")
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"coincurve {coincurve.__version__ if hasattr(coincurve, '__version__') else ''}"
    )
    print()
    print("| operation | median µs | best µs |")
    print("|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
