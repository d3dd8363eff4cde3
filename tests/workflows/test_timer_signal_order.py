"""A keeper timer and a signal in one workflow task replay in the order they ran.

`regressions/keeper_timer_and_reconnect_in_one_task--channel.json.gz` is a READY keeper's
history from the chaos soak (`bench/chaos.py --rounds 50 --seed 3`): its keeper timer fired
while the worker that held it was killed, the restarted connector's reconnect signal came
before the task was handed to a fresh worker, and that worker, running the task live, took
the timer first (a channel read, the READY notification after it). A replay of the same
history (the next restart) took the signal first and failed as nondeterministic, so the
workflow was stuck and the connector never heard READY. Since `PATCH_TIMER_FIRST` a timer
due by the task's time goes first either way. The run was recorded before the patch, so the
replay here turns it on the way a run started today has it on.
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
from workflows.channel import PATCH_TIMER_FIRST, ChannelWorkflow

RECORDED = (
    Path(__file__).resolve().parent
    / "regressions"
    / "keeper_timer_and_reconnect_in_one_task--channel.json.gz"
)


@pytest.fixture
def timer_first(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda patch_id: patch_id == PATCH_TIMER_FIRST or patched(patch_id)
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


async def test_a_due_timer_goes_before_a_signal_of_the_same_task_as_it_ran_live(
    timer_first: None,
) -> None:
    assert await replay_failure() is None


async def test_without_the_rule_the_replay_takes_the_signal_first_and_fails() -> None:
    failure = await replay_failure()
    assert failure is not None and "Nondeterminism" in str(failure)
    assert "read_channel" in str(failure) and "mark_settlement_ready" in str(failure)
