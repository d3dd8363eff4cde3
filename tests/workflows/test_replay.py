"""Recorded histories of ChannelWorkflow and WalletSequencer replay without nondeterminism.

The histories under `histories/` were produced by real runs (`record_histories.py`): happy
path with a reconnect, AWAITING_FUNDS with a timer round then `retry`, SKIPPED, FAILED then
`retry`, both ends racing, and channel keeping to the end (top-up, close, settle window,
settle, completed). A workflow change that would break running workflows (a
command added, removed or reordered without `workflow.patched`) fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from workflows import ids
from workflows.channel import ChannelWorkflow
from workflows.sequencer import WalletSequencer

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))
SCENARIOS = {
    "happy_path",
    "awaiting_funds_retry",
    "skipped",
    "failed_retry",
    "race",
    "keeper_close",
}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def event_types(path: Path) -> set[str]:
    return {event["eventType"] for event in json.loads(path.read_text())["events"]}


def test_every_scenario_and_both_workflows_are_recorded() -> None:
    assert {path.stem.split("--")[0] for path in RECORDED} == SCENARIOS
    types = {path.stem.split("--")[1].split("-")[0] for path in RECORDED}
    assert types == {"channel", "sequencer"}
    # The recordings exercise what they are named after.
    assert "EVENT_TYPE_TIMER_FIRED" in event_types(HISTORIES / "awaiting_funds_retry--channel.json")
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED" in event_types(
        HISTORIES / "race--sequencer.json"
    )
    # The keeper's patch marker, its timer, and a run that ends settled.
    assert {
        "EVENT_TYPE_MARKER_RECORDED",
        "EVENT_TYPE_TIMER_FIRED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
    } <= event_types(HISTORIES / "keeper_close--channel.json")


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.stem)
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[ChannelWorkflow, WalletSequencer], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name=ids.CHANNEL_WORKFLOW)
class ReorderedChannelWorkflow:
    """A ChannelWorkflow that arms a timer before anything else: not what history says."""

    @workflow.signal(name=ids.SIGNAL_PEER_CONNECTED)
    def peer_connected(self) -> None:
        pass

    @workflow.run
    async def run(self, params: dict) -> None:
        await workflow.sleep(1)


async def test_a_reordered_workflow_fails_replay() -> None:
    # The guard above can fail: replaying the happy path against changed code is refused.
    replayer = Replayer(
        workflows=[ReorderedChannelWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    result = await replayer.replay_workflow(
        load(HISTORIES / "happy_path--channel.json"), raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
