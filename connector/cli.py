"""`paychan`: the one console entry point.

Exit codes: 0 ok, 2 usage or config error, 1 runtime failure. Each subcommand imports its
implementation lazily so `paychan --help` stays fast and light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paychan",
        description="Interledger connector with EVM payment channels provisioned by Temporal.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
