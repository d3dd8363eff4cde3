"""A keeper timer and a signal in one workflow task replay in the order they ran.

`regressions/keeper_timer_and_reconnect_in_one_task--channel.json.gz` is a READY keeper's
history from the chaos soak (`bench/chaos.py --rounds 50 --seed 3`): its keeper timer fired
while the worker that held it was dead, the restarted connector signalled a reconnect, and the
fresh worker ran the task live timer first (a channel read, the READY notification after it;
how it took the two apart is not established). A replay of the same history gets the timer and the signal in one
activation, where the SDK applies signals first: it took the signal first and failed as
nondeterministic, so the workflow was stuck and the connector never heard READY. Since
`PATCH_SIGNALS_LAST` signals are acted on after results and due timers however they are
delivered. The run was recorded before the patch, so the replay here turns it on the way a
run started today has it on.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from worker.data_converter import DATA_CONVERTER
from workflows.channel import PATCH_SIGNALS_LAST, ChannelWorkflow

RECORDED = (
    Path(__file__).resolve().parent
    / "regressions"
    / "keeper_timer_and_reconnect_in_one_task--channel.json.gz"
)


@pytest.fixture
def timer_first(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda patch_id: patch_id == PATCH_SIGNALS_LAST or patched(patch_id)
    )
    yield


async def replay_failure() -> Exception | None:
    history = WorkflowHistory.from_json(
        "channel/peer2/peer1/M2M", gzip.decompress(RECORDED.read_bytes()).decode()
    )
    # Unsandboxed, so the replay runs this module's `workflow.patched`.
    replayer = Replayer(
        workflows=[ChannelWorkflow],
        data_converter=DATA_CONVERTER,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return result.replay_failure


async def test_a_due_timer_goes_before_a_signal_of_the_same_task_as_it_did_live(
    timer_first: None,
) -> None:
    assert await replay_failure() is None


async def test_without_the_rule_the_replay_takes_the_signal_first_and_fails() -> None:
    failure = await replay_failure()
    assert failure is not None and "Nondeterminism" in str(failure)
    assert "read_channel" in str(failure) and "mark_settlement_ready" in str(failure)
