"""The one place web3 failures become Temporal failures.

    Exception
     ├── ContractLogicError / BadFunctionCallOutput  → ApplicationError(non_retryable)
     │     a call that reverts or finds no contract will do so again: bad config or state
     └── anything else (connection refused, timeouts, RPC busy) → re-raised as is,
           so Temporal's retry policy retries it with backoff

Workflows branch on `ApplicationError.type`, never on message text.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

P = ParamSpec("P")
R = TypeVar("R")

CHAIN_CALL_REVERTED = "ChainCallReverted"
CONTRACT_MISSING = "ContractMissing"


def classify(exc: BaseException) -> BaseException:
    if isinstance(exc, ContractLogicError):
        return ApplicationError(str(exc), type=CHAIN_CALL_REVERTED, non_retryable=True)
    if isinstance(exc, BadFunctionCallOutput):
        return ApplicationError(str(exc), type=CONTRACT_MISSING, non_retryable=True)
    return exc


def classified(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run `fn`, turning its web3 failures into retryable or non-retryable ones."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            mapped = classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    return run
