"""A peer that connects while the Temporal server is down, for longer than the Temporal
client's own retries (~10 s), is provisioned once the server is back (found by the chaos
soak: the signal used to be dropped, and the peer stayed without a channel until it happened
to reconnect).

Its own Temporal dev server (the session one cannot be killed), on a SQLite file, SIGKILLed
and started again on the same file and port; real anvil; the connector's provisioning
runtime as `paychan connector` runs it.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import pytest
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.deployment import write_deployment
from activities.token_network import Deployment
from connector.devstack import free_port, run_temporal
from connector.provisioning import ProvisioningRuntime
from tests.integration.settlement_nodes import PeerLink, config_of, node_yaml, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Past the client's own retries of one call: the runtime's signal has failed at least once.
OUTAGE_SECONDS = 12.0


async def test_a_peer_that_connects_during_a_temporal_outage_is_provisioned_after_it(
    anvil, anvil_w3: AsyncWeb3, deployment: Deployment, new_account, tmp_path: Path
) -> None:
    ours, partner = await new_account(), await new_account()
    deployment_file = tmp_path / "deployment.json"
    write_deployment(deployment_file, deployment)
    port, db_file = free_port(), tmp_path / "temporal.sqlite3"
    with ExitStack() as services:
        server = services.enter_context(run_temporal(port=port, ui=False, db_file=db_file))
        document = node_yaml(
            "outage",
            port=free_port(),
            peers=[PeerLink("p", partner.address)],
            data_dir=tmp_path,
            deployment_file=deployment_file,
            temporal_address=server.target,
            rpc_url=anvil.url,
        )
        runtime = ProvisioningRuntime(config_of(document, ours.key.hex()))
        await runtime.start()
        try:
            await asyncio.wait_for(runtime.wait_connected(), 30)
            server.kill()
            runtime.peer_connected("p")  # the link came up; Temporal is down
            await asyncio.sleep(OUTAGE_SECONDS)
            services.enter_context(run_temporal(port=port, ui=False, db_file=db_file))
            await wait_for(
                lambda: (view := runtime.registry.view("p")) is not None and view.is_ready,
                timeout=60,
                what="p READY after the outage, without a reconnect",
            )
        finally:
            await runtime.stop()
    assert await tn.get_pair_counter(anvil_w3, deployment, ours.address, partner.address) == 1
