"""The chaos soak, short: one round of each fault (a hub worker, a connector, the Temporal
dev server, anvil) on the full stack of `bench/chaos.py` — the 5-node line of `paychan
connector` processes, 10 extra peers on the hub, two `paychan worker` processes for the hub,
anvil mining a block a second — with churn, re-provisioning, claims and admin-API payments
throughout. Every round recovers within its bound and breaks no invariant
(`tests/chaos/soak_invariants.py`).

The long run (50 rounds, random faults, long Temporal outages) is `bench/chaos.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.soak import Fault, Soak, SoakTiming
from tests.chaos.soak_stack import soak_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROUNDS = (Fault.WORKER, Fault.CONNECTOR, Fault.TEMPORAL, Fault.ANVIL)
# The long Temporal outage has its own test (tests/integration/test_provisioning_temporal_outage.py).
SHORT = SoakTiming(traffic_seconds=4.0, long_temporal_outage=0.0)


async def test_one_round_of_each_fault_breaks_no_invariant(tmp_path: Path) -> None:
    async with soak_stack(tmp_path) as stack:
        soak = Soak(stack, seed=7, timing=SHORT)
        await soak.start()
        for number, fault in enumerate(ROUNDS, 1):
            report = await soak.round(number, fault)
            assert report.violations == [], "\n".join(map(str, report.violations))
            assert report.recovery_seconds is not None
    figures = soak.report
    assert sorted(figures.faults) == sorted(str(fault) for fault in ROUNDS)
    # Traffic flowed and settled by claims through the faults.
    assert figures.fulfilled > 0 and figures.claims_accepted > 0
