"""`paychan deploy` and `paychan fund`: the contracts onto any RPC, test wallets funded.

Keys come only from an environment variable named on the command line, and are never
printed. Every failure is one line on stderr: exit 2 for a missing or malformed key, exit 1
for an unreachable RPC, an unfunded key or a reverted transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import Web3RPCError

from activities.deployment import DeploymentError, deploy, fund, read_deployment, write_deployment
from activities.token_network import TransactionReverted

RPC_TIMEOUT_SECONDS = 10
T = TypeVar("T")


class CommandError(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _account_from_env(variable: str) -> LocalAccount:
    value = os.environ.get(variable, "").strip()
    if not value:
        raise CommandError(f"environment variable {variable} (the private key) is not set", 2)
    try:
        return Account.from_key(value)
    except (ValueError, TypeError) as exc:
        # The exception text may quote the key: report only which variable is wrong.
        raise CommandError(
            f"environment variable {variable} does not hold a valid private key", 2
        ) from exc


def _web3(url: str) -> AsyncWeb3:
    # No provider-level retries: an unreachable RPC must fail in well under a second.
    return AsyncWeb3(
        AsyncHTTPProvider(
            url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=RPC_TIMEOUT_SECONDS)},
            exception_retry_configuration=None,
        )
    )


def _wei(amount: str, what: str) -> int:
    try:
        value = Decimal(amount) * 10**18
    except InvalidOperation as exc:
        raise CommandError(f"{what} amount {amount!r} is not a number", 2) from exc
    if value < 0 or value != value.to_integral_value():
        raise CommandError(f"{what} amount {amount!r} is negative or below 1 wei", 2)
    return int(value)


async def _with_chain(url: str, action: Callable[[AsyncWeb3], Awaitable[T]]) -> T:
    w3 = _web3(url)
    try:
        return await action(w3)
    except DeploymentError as exc:
        raise CommandError(str(exc), 1) from exc
    except TransactionReverted as exc:
        raise CommandError(str(exc), 1) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CommandError(f"cannot reach RPC at {url}: {exc or type(exc).__name__}", 1) from exc
    except Web3RPCError as exc:
        raise CommandError(f"RPC at {url} refused a request: {exc}", 1) from exc
    finally:
        await w3.provider.disconnect()


def _run(name: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CommandError as exc:
        print(f"paychan {name}: {exc}", file=sys.stderr)
        return exc.exit_code


def deploy_command(args: argparse.Namespace) -> int:
    def body() -> int:
        account = _account_from_env(args.key_env)
        deployment = asyncio.run(
            _with_chain(args.rpc_url, lambda w3: deploy(w3, account, rpc_url=args.rpc_url))
        )
        out: Path = args.out
        write_deployment(out, deployment)
        print(f"deployed to chain {deployment.chain_id} at block {deployment.deployed_block}")
        print(f"  registry       {deployment.registry}")
        print(f"  token (M2M)    {deployment.token}")
        print(f"  token network  {deployment.token_network}")
        print(f"wrote {out}")
        return 0

    return _run("deploy", body)


def fund_command(args: argparse.Namespace) -> int:
    def body() -> int:
        account = _account_from_env(args.key_env)
        eth_wei = _wei(args.eth, "--eth")
        m2m_wei = _wei(args.m2m, "--m2m")
        bad = [a for a in args.addresses if not is_address(a)]
        if bad:
            raise CommandError(f"not an address: {', '.join(bad)}", 2)
        try:
            deployment = read_deployment(args.deployment)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read deployment {args.deployment}: {exc}", 2) from exc
        asyncio.run(
            _with_chain(
                args.rpc_url,
                lambda w3: fund(
                    w3,
                    account,
                    deployment,
                    args.addresses,
                    eth_wei=eth_wei,
                    m2m_wei=m2m_wei,
                    rpc_url=args.rpc_url,
                ),
            )
        )
        for address in args.addresses:
            print(f"funded {address}: {args.eth} ETH, {args.m2m} M2M")
        return 0

    return _run("fund", body)
