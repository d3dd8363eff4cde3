"""Recorded histories of ChannelWorkflow and WalletSequencer replay without nondeterminism.

The histories under `histories/` were produced by real runs (`record_histories.py`): happy
path with a reconnect, AWAITING_FUNDS with a timer round then `retry`, SKIPPED, FAILED then
`retry`, both ends racing, and channel keeping to the end (top-up, close, settle window,
settle, completed), all recorded before the patches below and kept as they are, since runs
that older code started must still replay. Recorded with the patched paths of today's code
(a workflow continued as new is saved run by run): AWAITING_FUNDS on the funds timer armed
between changes, cut there and taken to READY by the next run's timer; a READY keeper cut
while a `top_up` came in, which the next run carries and acts on; a sequencer that refused a
batch while continuing as new and the run that took it. Those runs were cut where the server
suggested continue-as-new, which their histories record, so they replay with the real
history limits. A workflow change that would break running workflows (a command added,
removed or reordered without `workflow.patched`) fails here.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from workflows import ids
from workflows.channel import PATCH_FEWER_ROUND_TRIPS, PATCH_FUNDS_TIMER, ChannelWorkflow
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
    "awaiting_funds_continued",
    "keeper_continued",
    "sequencer_continued",
}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def events(path: Path) -> list[dict]:
    return json.loads(path.read_text())["events"]


def event_types(path: Path) -> set[str]:
    return {event["eventType"] for event in events(path)}


def decoded(payload: dict) -> object:
    return json.loads(base64.b64decode(payload["data"]))


def decoded_only(payloads: dict) -> object:
    """The one payload of a history field (a workflow input, a marker's details)."""
    (payload,) = payloads["payloads"]
    return decoded(payload)


def patch_ids(path: Path) -> set[str]:
    markers = [
        event["markerRecordedEventAttributes"]
        for event in events(path)
        if event["eventType"] == "EVENT_TYPE_MARKER_RECORDED"
    ]
    return {
        decoded_only(marker["details"]["patch-data"])["id"]
        for marker in markers
        if marker["markerName"] == "core_patch"
    }


def started_with(path: Path) -> dict:
    started = events(path)[0]["workflowExecutionStartedEventAttributes"]
    return decoded_only(started["input"])


def last_event_type(path: Path) -> str:
    return events(path)[-1]["eventType"]


def happened(path: Path) -> list[str]:
    """What came in and what fired, in order: signal names, `timer`, `stage:<STAGE>`."""
    seen = []
    for event in events(path):
        match event["eventType"]:
            case "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED":
                seen.append(event["workflowExecutionSignaledEventAttributes"]["signalName"])
            case "EVENT_TYPE_TIMER_FIRED":
                seen.append("timer")
            case "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
                attributes = event["upsertWorkflowSearchAttributesEventAttributes"]
                stage = attributes["searchAttributes"]["indexedFields"].get("Stage")
                if stage is not None:
                    seen.append(f"stage:{decoded(stage)}")
    return seen


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


def test_recordings_of_todays_code_take_its_patched_paths() -> None:
    # AWAITING_FUNDS: the funds timer goes on after a reconnect, and its rounds cut the run.
    funds_1 = HISTORIES / "awaiting_funds_continued--channel-1.json"
    funds_2 = HISTORIES / "awaiting_funds_continued--channel-2.json"
    assert {PATCH_FEWER_ROUND_TRIPS, PATCH_FUNDS_TIMER} <= patch_ids(funds_1)
    assert "EVENT_TYPE_MARKER_RECORDED" in event_types(funds_1)  # local balance reads
    seen = happened(funds_1)
    assert seen[seen.index("peer_connected", 1) + 1] == "timer"
    assert last_event_type(funds_1) == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    # The next run starts there, and its timer (no signal) notices the funds.
    assert started_with(funds_2)["carried"]["stage"] == "AWAITING_FUNDS"
    assert happened(funds_2)[-5:] == [
        "peer_connected",
        "timer",
        "stage:CHECKING_BALANCES",
        "stage:OPENING",
        "stage:READY",
    ]

    # A READY keeper cut while its notifications drained; the `top_up` that came meanwhile
    # is carried to the next run, which tops up.
    keeper_1 = HISTORIES / "keeper_continued--channel-1.json"
    keeper_2 = HISTORIES / "keeper_continued--channel-2.json"
    assert PATCH_FEWER_ROUND_TRIPS in patch_ids(keeper_1)
    seen = happened(keeper_1)
    assert set(seen[seen.index("stage:READY") + 1 : -1]) == {"peer_connected"}
    assert seen[-1] == "top_up"
    assert last_event_type(keeper_1) == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    params = started_with(keeper_2)
    assert params["carried"]["stage"] == "READY"
    assert params["carried_signals"] == [{"name": ids.SIGNAL_TOP_UP, "close": None}]
    # No signal of its own; READY again with the new deposit.
    assert happened(keeper_2) == ["stage:READY", "stage:TOPPING_UP", "stage:READY", "stage:READY"]

    # The sequencer run that refused a batch continued as new; the next took it and carries
    # the answers it gave.
    sequencer_1 = HISTORIES / "sequencer_continued--sequencer-1.json"
    sequencer_2 = HISTORIES / "sequencer_continued--sequencer-2.json"
    assert last_event_type(sequencer_1) == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert started_with(sequencer_2)["remembered"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED" in event_types(sequencer_2)


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
