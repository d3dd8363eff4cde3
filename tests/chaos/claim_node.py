"""A connector process for claim crash tests: `paychan connector` (the same `run_node`), which
can SIGKILL itself at a deterministic point of settlement.

    python -m tests.chaos.claim_node CONFIG [--crash-after record_sent|record_received]

`--crash-after record_sent`: right after a claim we signed is durable in the claim store,
before it is sent (the sender dies between signing and sending).
`--crash-after record_received`: right after a received claim and its credit are durable,
before the acknowledgement goes out (the receiver dies between storing and acknowledging).

It logs `CLAIM_TEST_CRASH` (JSON on stderr, like every line) just before the SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from connector.claim_store import ClaimStore
from connector.config import load_config_or_exit
from connector.logs import configure_logging
from connector.node_command import run_node

log = structlog.get_logger(__name__)
CRASH_POINTS = ("record_sent", "record_received")


def crash_after(method: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(ClaimStore, method)

    async def then_die(self: ClaimStore, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        log.warning("CLAIM_TEST_CRASH", after=method, nonce=str(result.nonce))
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(ClaimStore, method, then_die)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--crash-after", choices=CRASH_POINTS)
    args = parser.parse_args()
    config = load_config_or_exit(args.config)
    configure_logging(config.log_format, config.log_level)
    if args.crash_after:
        crash_after(args.crash_after)
    asyncio.run(run_node(config))


if __name__ == "__main__":
    main()
