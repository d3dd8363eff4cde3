"""ChannelRegistry: a channel being closed stops being READY for settlement."""

from __future__ import annotations

import asyncio

from connector.channels import ChannelRegistry
from workflows.messages import SettlementReady

CHANNEL = "0x" + "ab" * 32


def ready(channel_id: str = CHANNEL) -> SettlementReady:
    return SettlementReady("node", "peer", "M2M", channel_id, "10", "10")


async def test_closing_channel_is_not_ready_and_waiters_wait_for_the_next_one() -> None:
    stages: list[tuple[str, str]] = []
    registry = ChannelRegistry(on_stage=lambda peer, stage: stages.append((peer, stage)))
    registry.mark_ready(ready())
    assert (await registry.wait_ready("peer")).is_ready
    assert registry.mark_closing("peer", CHANNEL.upper().replace("0X", "0x"), "CLOSING")
    view = registry.view("peer")
    assert view is not None and view.stage == "CLOSING" and not view.is_ready
    # A repeat (a retried activity) changes nothing.
    assert not registry.mark_closing("peer", CHANNEL, "CLOSING")
    waiter = asyncio.ensure_future(registry.wait_ready("peer"))
    await asyncio.sleep(0)
    assert not waiter.done()
    other = "0x" + "cd" * 32
    registry.mark_ready(ready(other))
    assert (await asyncio.wait_for(waiter, 1)).channel_id == other
    assert stages == [("peer", "READY"), ("peer", "CLOSING"), ("peer", "READY")]


def test_closing_another_channel_leaves_the_view_alone() -> None:
    registry = ChannelRegistry()
    assert not registry.mark_closing("peer", CHANNEL, "SETTLED")  # unknown peer
    registry.mark_ready(ready())
    assert not registry.mark_closing("peer", "0x" + "cd" * 32, "SETTLED")
    view = registry.view("peer")
    assert view is not None and view.is_ready


def test_deposit_listeners_hear_a_ready_channel_s_new_deposits_only() -> None:
    registry = ChannelRegistry()
    heard: list[tuple[str, int]] = []
    registry.deposit_listeners.append(lambda view: heard.append((view.peer_id, view.our_deposit)))
    assert registry.mark_ready(ready())  # first READY: news, not a deposit change
    assert not registry.mark_ready(ready())  # a repeat
    assert not registry.mark_ready(SettlementReady("node", "peer", "M2M", CHANNEL, "25", "10"))
    assert heard == [("peer", 25)]
    assert registry.mark_ready(ready("0x" + "cd" * 32))  # another channel is news
    assert heard == [("peer", 25)]


def test_a_cooperative_hold_is_lifted_only_by_the_workflow_and_only_once_expired() -> None:
    now = [100.0]
    registry = ChannelRegistry(cooperative_hold_seconds=120.0, clock=lambda: now[0])
    registry.mark_ready(ready())
    assert registry.hold_for_cooperative_settle("peer", CHANNEL.upper().replace("0X", "0x"))
    assert registry.view("peer").stage == "CLOSING"
    assert not registry.cooperative_hold_expired("peer", CHANNEL)
    # The stage refresh (search attribute READY) and a repeated READY leave it alone.
    registry.record_stage("peer", "M2M", "READY")
    assert not registry.mark_ready(SettlementReady("node", "peer", "M2M", CHANNEL, "10", "30"))
    view = registry.view("peer")
    assert (view.stage, view.their_deposit) == ("CLOSING", 30)
    now[0] += 120.0
    assert registry.cooperative_hold_expired("peer", CHANNEL)
    assert not registry.cooperative_hold_expired("peer", "0x" + "cd" * 32)
    # The keeper read it open while READY: READY again, the hold gone.
    assert registry.mark_ready(ready())
    assert registry.view("peer").is_ready
    assert not registry.cooperative_hold_expired("peer", CHANNEL)


def test_our_workflow_s_close_replaces_a_cooperative_hold() -> None:
    now = [0.0]
    registry = ChannelRegistry(cooperative_hold_seconds=1.0, clock=lambda: now[0])
    assert not registry.hold_for_cooperative_settle("peer", CHANNEL)  # no view: nothing held
    registry.mark_ready(ready())
    assert not registry.hold_for_cooperative_settle("peer", "0x" + "cd" * 32)  # not its channel
    assert registry.hold_for_cooperative_settle("peer", CHANNEL)
    assert not registry.mark_closing("peer", CHANNEL, "CLOSING")  # same stage, now the workflow's
    now[0] += 5.0
    assert not registry.cooperative_hold_expired("peer", CHANNEL)
    registry.mark_closing("peer", CHANNEL, "SETTLED")
    assert registry.view("peer").stage == "SETTLED"


def test_a_reconnect_leaves_a_running_workflow_s_stage_alone() -> None:
    stages: list[str] = []
    registry = ChannelRegistry(on_stage=lambda peer, stage: stages.append(stage))
    registry.record_signalled("peer", "M2M")  # first connect: a new run
    registry.record_stage("peer", "M2M", "SKIPPED")  # what the workflow then says
    registry.record_signalled("peer", "M2M")  # a reconnect attaches to it
    assert registry.view("peer").stage == "SKIPPED"
    registry.record_stage("peer", "M2M", "FAILED")
    registry.record_signalled("peer", "M2M")
    assert stages == ["CHECKING_CONFIG", "SKIPPED", "FAILED"]
    # A settled channel's run has ended: the next connect starts another.
    registry.mark_ready(ready())
    registry.mark_closing("peer", CHANNEL, "SETTLED")
    registry.record_signalled("peer", "M2M")
    assert stages[-2:] == ["SETTLED", "CHECKING_CONFIG"]
