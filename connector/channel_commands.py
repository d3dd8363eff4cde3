"""`paychan channels`, `paychan retry <peer>`, `paychan cancel <peer>`, `paychan close <peer>`:
the operator's view of this node's channel workflows, the two levers a stuck provisioning
needs, and closing a READY channel (the workflow's `close` signal, with `{"cooperative":
true}` for a cooperative settle; the Temporal UI's Send a Signal does the same).

The same levers are the Temporal web UI's buttons: `retry` is the workflow's `retry` signal
(SignalWorkflowExecution), `cancel` is Temporal cancellation (RequestCancelWorkflowExecution),
so an operator may use either; docs/operations.md lists the UI steps and filter strings.

Where the rows come from: each configured peer's workflow (`channel/<node>/<peer>/<token>`,
token = the peer's first preferred token) is described directly (strongly consistent, so a
peer that just connected is never shown as NOT_STARTED), other running channel workflows of
the node are listed by search attribute, and every running one is asked its `status` query.
A query needs a worker of the node; when none answers in time, the row falls back to the
Stage and ChannelId search attributes and says `(no worker)`. The latest claims sent and
received on each channel come from the node's ledger file (read-only), when it is on this host.

Exit codes: 0 ok, 2 usage or config error (unknown peer), 1 runtime failure (Temporal
unreachable, no such workflow). The treasury key is never needed or read here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from connector.claim_store import ClaimIndex, read_claims
from connector.config import NodeConfig, PeerConfig, TemporalConfig, load_config_or_exit
from workflows import ids
from workflows.messages import ChannelStatus, CloseChannel

NOT_STARTED = "NOT_STARTED"
# M2M (the only settlement token so far) and ETH both have 18 decimals.
TOKEN_DECIMALS = 18
CONNECT_TIMEOUT_SECONDS = 5.0
RPC_TIMEOUT = timedelta(seconds=10)
MIN_WIDTH = 80
# A long revert reason is cut after this many lines; the JSON keeps it whole.
NOTE_MAX_LINES = 3
T = TypeVar("T")

# A wei amount: an int in Python, a decimal string in JSON (it does not fit a JS number).
Wei = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]


class CommandError(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- rows: what the table and --json show (pure) ---------------------------------------------


class _Document(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ShortfallRow(_Document):
    address: str
    eth_missing: Wei
    token_missing: Wei


class ChannelRow(_Document):
    """One peer of the node: its workflow's stage, channel and deposits, as far as known."""

    peer_id: str
    token: str
    workflow_id: str
    # A provisioning stage, or NOT_STARTED when the peer never connected.
    stage: str
    # RUNNING, CANCELED, TERMINATED, ...; None when there is no workflow.
    execution: str | None = None
    # True when the workflow answered its `status` query; False: search attributes only.
    live: bool = False
    in_config: bool = True
    channel_id: str | None = None
    our_deposit: Wei | None = None
    their_deposit: Wei | None = None
    deposit_target: Wei | None = None
    last_error: str | None = None
    shortfall: ShortfallRow | None = None
    # Channel keeping: how it is being closed, and the block after which it settles.
    closing: str | None = None
    settle_block: int | None = None
    # The latest claims on the channel, from the node's ledger file (connector/claim_store.py);
    # amounts cumulative over the channel. None when no claim went that way (or no file here).
    sent_claim_nonce: Wei | None = None
    sent_claim_amount: Wei | None = None
    sent_claim_acknowledged: bool | None = None
    received_claim_nonce: Wei | None = None
    received_claim_amount: Wei | None = None

    @property
    def is_running(self) -> bool:
        return self.execution == WorkflowExecutionStatus.RUNNING.name


class ChannelsReport(_Document):
    """The `paychan channels --json` document."""

    node_id: str
    temporal_address: str
    namespace: str
    peers: list[ChannelRow]


@dataclass(frozen=True)
class WorkflowSnapshot:
    """What Temporal said about one channel workflow (its latest run)."""

    workflow_id: str
    peer_id: str
    token: str
    execution: WorkflowExecutionStatus
    stage: str | None
    channel_id: str | None
    # The workflow's own `status` answer; None when it is closed or no worker answered.
    status: ChannelStatus | None = None


def peer_token(peer: PeerConfig) -> str:
    """The token whose channel the connector provisions for `peer`."""
    return peer.preferred_tokens[0]


def peer_workflow_id(node_id: str, peer: PeerConfig) -> str:
    return ids.channel_workflow_id(node_id, peer.id, peer_token(peer))


def build_rows(
    node_id: str, peers: Sequence[PeerConfig], snapshots: Mapping[str, WorkflowSnapshot]
) -> list[ChannelRow]:
    """Configured peers in config order (NOT_STARTED without a workflow), then any other
    workflow of the node (a peer since removed from the config, another token) by id."""
    rows = []
    expected = set()
    for peer in peers:
        workflow_id = peer_workflow_id(node_id, peer)
        expected.add(workflow_id)
        snapshot = snapshots.get(workflow_id)
        if snapshot is None:
            rows.append(
                ChannelRow(
                    peer_id=peer.id,
                    token=peer_token(peer),
                    workflow_id=workflow_id,
                    stage=NOT_STARTED,
                )
            )
        else:
            rows.append(row_of(snapshot, in_config=True))
    rows += [
        row_of(snapshots[workflow_id], in_config=False)
        for workflow_id in sorted(set(snapshots) - expected)
    ]
    return rows


def row_of(snapshot: WorkflowSnapshot, *, in_config: bool) -> ChannelRow:
    base = ChannelRow(
        peer_id=snapshot.peer_id,
        token=snapshot.token,
        workflow_id=snapshot.workflow_id,
        stage=snapshot.stage or NOT_STARTED,
        execution=snapshot.execution.name,
        in_config=in_config,
        channel_id=snapshot.channel_id,
    )
    status = snapshot.status
    if status is None:
        return base
    shortfall = status.shortfall
    return base.model_copy(
        update={
            "stage": status.stage,
            "live": True,
            "channel_id": status.channel_id,
            "our_deposit": int(status.our_deposit),
            "their_deposit": int(status.their_deposit),
            "deposit_target": int(status.deposit_target),
            "last_error": status.last_error,
            "closing": status.closing,
            "settle_block": status.settle_block,
            "shortfall": ShortfallRow(
                address=shortfall.address,
                eth_missing=int(shortfall.eth_missing),
                token_missing=int(shortfall.token_missing),
            )
            if shortfall
            else None,
        }
    )


# --- rendering (pure) ------------------------------------------------------------------------


def format_units(wei: int | None, decimals: int = TOKEN_DECIMALS) -> str:
    """Wei as a human amount with at least one decimal: 10**19 → "10.0", None → "-"."""
    if wei is None:
        return "-"
    whole, fraction = divmod(abs(wei), 10**decimals)
    digits = str(fraction).rjust(decimals, "0").rstrip("0") or "0"
    return f"{'-' if wei < 0 else ''}{whole}.{digits}"


def short_channel_id(channel_id: str | None) -> str:
    if not channel_id:
        return "-"
    if len(channel_id) <= 14:
        return channel_id
    return f"{channel_id[:8]}..{channel_id[-4:]}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 2)] + ".."


def row_notes(row: ChannelRow) -> list[str]:
    """The lines under a row: why it is stuck and what the operator can do."""
    notes = []
    if not row.in_config:
        notes.append("peer not in this config")
    if row.execution is not None and not row.is_running:
        notes.append(
            f"workflow {row.execution} at stage {row.stage}; a new run starts when "
            "the peer next connects"
        )
    elif row.is_running and not row.live:
        notes.append("(no worker) stage from search attributes; deposits unknown")
    if row.shortfall is not None:
        missing = [
            f"{format_units(amount)} {unit}"
            for amount, unit in (
                (row.shortfall.eth_missing, "ETH"),
                (row.shortfall.token_missing, row.token),
            )
            if amount > 0
        ]
        notes.append(f"fund {row.shortfall.address} with {' and '.join(missing) or 'nothing'}")
        notes.append(f"then: paychan retry {row.peer_id} (or wait for the timed re-check)")
    if row.closing and row.is_running:
        after = f"; settles after block {row.settle_block}" if row.settle_block else ""
        notes.append(f"closing {row.closing}{after}")
    if row.last_error:
        notes.append(f"last error: {row.last_error}")
    if row.sent_claim_nonce is not None or row.received_claim_nonce is not None:
        notes.append(f"claims: {_claim_note(row)}")
    return notes


def _claim_note(row: ChannelRow) -> str:
    sent = (
        f"sent #{row.sent_claim_nonce} for {format_units(row.sent_claim_amount)} {row.token}"
        + (" (acknowledged)" if row.sent_claim_acknowledged else " (awaiting acknowledgement)")
        if row.sent_claim_nonce is not None
        else "sent none"
    )
    received = (
        f"received #{row.received_claim_nonce} for "
        f"{format_units(row.received_claim_amount)} {row.token}"
        if row.received_claim_nonce is not None
        else "received none"
    )
    return f"{sent}; {received}"


def with_claims(report: ChannelsReport, claims: ClaimIndex) -> ChannelsReport:
    """The report with each row's latest claims on its channel."""
    rows = []
    for row in report.peers:
        summary = claims.summary(row.peer_id, row.channel_id)
        sent, received = summary.sent, summary.received
        rows.append(
            row.model_copy(
                update={
                    "sent_claim_nonce": sent.nonce if sent else None,
                    "sent_claim_amount": sent.transferred_amount if sent else None,
                    "sent_claim_acknowledged": sent.acknowledged if sent else None,
                    "received_claim_nonce": received.nonce if received else None,
                    "received_claim_amount": received.transferred_amount if received else None,
                }
            )
        )
    return report.model_copy(update={"peers": rows})


def render_table(report: ChannelsReport, width: int = 100) -> str:
    """Fixed columns that fit 80 characters for ordinary ids; notes wrap under their row."""
    width = max(width, MIN_WIDTH)
    header = ("PEER", "TOKEN", "STAGE", "CHANNEL", "OURS", "THEIRS", "TARGET")
    cells = [
        (
            _clip(row.peer_id, 16),
            _clip(row.token, 6),
            row.stage if row.is_running or row.execution is None else row.execution,
            short_channel_id(row.channel_id),
            format_units(row.our_deposit),
            format_units(row.their_deposit),
            format_units(row.deposit_target),
        )
        for row in report.peers
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = {4, 5, 6}

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[i]) if i in right else value.ljust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    title = f"node {report.node_id} on Temporal {report.temporal_address} ({report.namespace})"
    lines = [*textwrap.wrap(title, width, subsequent_indent="  "), line(header)]
    for row, values in zip(report.peers, cells, strict=True):
        lines.append(line(values))
        for note in row_notes(row):
            # Wrapped at spaces, so an address or an amount to fund stays whole (at 80
            # columns both fit a line); only a run-on revert text is broken mid-word.
            lines += textwrap.wrap(
                note,
                width,
                initial_indent="    ",
                subsequent_indent="      ",
                break_on_hyphens=False,
                max_lines=NOTE_MAX_LINES,
                placeholder=" ..",
            )
    if not report.peers:
        lines.append("(no peers in the config and no channel workflows for this node)")
    return "\n".join(lines)


# --- Temporal I/O ----------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    """A short cause out of an RPC or connect error (tonic's are long)."""
    text = str(err) or type(err).__name__
    found = re.search(r'message: "([^"]+)"', text)
    return found.group(1) if found else _clip(text.splitlines()[0], 120)


async def connect(config: TemporalConfig) -> Client:
    # Not worker.run.connect_temporal: that module imports web3, which would double the
    # start-up time of a command that never touches the chain.
    try:
        return await asyncio.wait_for(
            Client.connect(
                config.address,
                namespace=config.namespace,
                data_converter=pydantic_data_converter,
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
    except TimeoutError as err:
        raise CommandError(
            f"cannot reach Temporal at {config.address}: no answer within "
            f"{CONNECT_TIMEOUT_SECONDS:.0f}s",
            1,
        ) from err
    except (RuntimeError, RPCError, OSError) as err:
        raise CommandError(f"cannot reach Temporal at {config.address}: {_reason(err)}", 1) from err


async def _with_temporal(config: TemporalConfig, action: Callable[[Client], Awaitable[T]]) -> T:
    client = await connect(config)
    try:
        return await action(client)
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise CommandError(
                f"cannot reach Temporal at {config.address}: {_reason(err)}", 1
            ) from err
        raise CommandError(f"Temporal at {config.address} refused: {_reason(err)}", 1) from err


async def _describe(client: Client, workflow_id: str) -> WorkflowExecution | None:
    try:
        return await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def _query_status(handle: WorkflowHandle, timeout: float) -> ChannelStatus | None:
    try:
        return await asyncio.wait_for(
            handle.query(
                ids.QUERY_STATUS,
                result_type=ChannelStatus,
                rpc_timeout=timedelta(seconds=timeout),
            ),
            timeout + 1,
        )
    except (
        RPCError,
        TimeoutError,
        WorkflowQueryFailedError,
        WorkflowQueryRejectedError,
    ):
        # No worker polls the node's queue (or it did not answer in time): the caller
        # falls back to search attributes.
        return None


async def _snapshot(
    client: Client,
    execution: WorkflowExecution,
    peer_id: str | None,
    token: str | None,
    timeout: float,
) -> WorkflowSnapshot:
    attributes = execution.typed_search_attributes
    if token is None:
        memo = await execution.memo()
        token = str(memo.get("token") or "?")
    status = None
    if execution.status is WorkflowExecutionStatus.RUNNING:
        status = await _query_status(client.get_workflow_handle(execution.id), timeout)
    return WorkflowSnapshot(
        workflow_id=execution.id,
        peer_id=peer_id or attributes.get(ids.PEER_ID) or "?",
        token=token,
        execution=execution.status or WorkflowExecutionStatus.RUNNING,
        stage=attributes.get(ids.STAGE),
        channel_id=attributes.get(ids.CHANNEL_ID),
        status=status,
    )


async def collect_report(
    client: Client, config: NodeConfig, query_timeout: float
) -> ChannelsReport:
    node_id = config.node_id
    expected = {peer_workflow_id(node_id, peer): peer for peer in config.peers}
    described = await asyncio.gather(*(_describe(client, wid) for wid in expected))
    pending = [
        _snapshot(client, execution, expected[wid].id, peer_token(expected[wid]), query_timeout)
        for wid, execution in zip(expected, described, strict=True)
        if execution is not None
    ]
    running = (
        f'WorkflowType = "{ids.CHANNEL_WORKFLOW}" AND NodeId = "{node_id}" '
        'AND ExecutionStatus = "Running"'
    )
    async for execution in client.list_workflows(running, rpc_timeout=RPC_TIMEOUT):
        if execution.id not in expected:
            pending.append(_snapshot(client, execution, None, None, query_timeout))
    snapshots = await asyncio.gather(*pending)
    return ChannelsReport(
        node_id=node_id,
        temporal_address=config.temporal.address,
        namespace=config.temporal.namespace,
        peers=build_rows(node_id, config.peers, {s.workflow_id: s for s in snapshots}),
    )


async def _running_handle(
    client: Client, workflow_id: str, peer_id: str
) -> tuple[WorkflowHandle, WorkflowExecution]:
    execution = await _describe(client, workflow_id)
    if execution is None:
        raise CommandError(
            f"no channel workflow {workflow_id}: it starts when peer {peer_id} first connects",
            1,
        )
    if execution.status is not WorkflowExecutionStatus.RUNNING:
        status = execution.status.name if execution.status else "closed"
        raise CommandError(
            f"channel workflow {workflow_id} is not running ({status}); a new run starts "
            f"when peer {peer_id} next connects",
            1,
        )
    return client.get_workflow_handle(workflow_id), execution


async def send_retry(client: Client, workflow_id: str, peer_id: str) -> list[str]:
    handle, execution = await _running_handle(client, workflow_id, peer_id)
    await handle.signal(ids.SIGNAL_RETRY, rpc_timeout=RPC_TIMEOUT)
    stage = execution.typed_search_attributes.get(ids.STAGE) or "unknown"
    return [
        f"sent retry to {workflow_id} (stage {stage})",
        "it acts in AWAITING_FUNDS and FAILED; follow it with: paychan channels",
    ]


# Stages in which `close` acts: READY (and TOPPING_UP) start a close, a closing stage resumes
# sends that stopped after reverting.
CLOSABLE_STAGES = ("READY", "TOPPING_UP", "CLOSING", "SETTLE_WINDOW", "SETTLING")


async def send_close(
    client: Client, workflow_id: str, peer_id: str, cooperative: bool, wait: float
) -> list[str]:
    """Signal `close`; then follow the stage for up to `wait` seconds (until SETTLED)."""
    handle, execution = await _running_handle(client, workflow_id, peer_id)
    stage = execution.typed_search_attributes.get(ids.STAGE) or "unknown"
    if stage not in CLOSABLE_STAGES:
        raise CommandError(
            f"channel workflow {workflow_id} is at stage {stage}: there is no READY channel "
            "to close",
            1,
        )
    how = "cooperative" if cooperative else "unilateral"
    await handle.signal(
        ids.SIGNAL_CLOSE, CloseChannel(cooperative=cooperative), rpc_timeout=RPC_TIMEOUT
    )
    lines = [f"sent close ({how}) to {workflow_id} (stage {stage})"]
    if wait <= 0:
        return [*lines, "follow it with: paychan channels"]
    reached = await _follow_close(client, handle, wait)
    if reached is None:
        return [*lines, f"still closing after {wait:g}s; follow it with: paychan channels"]
    lines.append(f"stage {reached.stage}" + (f": {reached.closing}" if reached.closing else ""))
    if reached.settle_block is not None and reached.stage != "SETTLED":
        lines.append(f"settles after block {reached.settle_block}")
    if reached.payout is not None:
        lines.append(
            f"settled: we got {format_units(int(reached.payout.our_amount))}, the peer got "
            f"{format_units(int(reached.payout.their_amount))}"
        )
    return lines


async def _follow_close(
    client: Client, handle: WorkflowHandle, wait: float
) -> ChannelStatus | None:
    """The final status once the run ends (SETTLED), else the last status seen at `wait`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    last = None
    while loop.time() < deadline:
        execution = await _describe(client, handle.id)
        if execution is not None and execution.status is not WorkflowExecutionStatus.RUNNING:
            finished = client.get_workflow_handle(handle.id, result_type=ChannelStatus)
            return await finished.result(rpc_timeout=RPC_TIMEOUT)
        last = await _query_status(handle, 3.0) or last
        await asyncio.sleep(0.2)
    return last


async def request_cancel(
    client: Client, workflow_id: str, peer_id: str, node_id: str, wait: float
) -> list[str]:
    handle, execution = await _running_handle(client, workflow_id, peer_id)
    attributes = execution.typed_search_attributes
    stage = attributes.get(ids.STAGE) or "unknown"
    channel_id = attributes.get(ids.CHANNEL_ID)
    await handle.cancel(reason=f"paychan cancel {peer_id}", rpc_timeout=RPC_TIMEOUT)
    lines = [f"cancel requested for {workflow_id} at stage {stage}"]
    closed = await _wait_closed(client, workflow_id, wait)
    if closed is None:
        lines.append(
            f"not stopped yet: no worker of node {node_id} took the cancel within {wait:g}s; "
            "it stops when one runs"
        )
    else:
        lines.append(f"workflow {closed.name}")
    if channel_id:
        lines += [
            f"channel {channel_id}",
            "  stays on-chain with its deposits; the next run adopts it",
        ]
    lines.append(f"a new run starts when peer {peer_id} next connects")
    return lines


async def _wait_closed(
    client: Client, workflow_id: str, wait: float
) -> WorkflowExecutionStatus | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        execution = await _describe(client, workflow_id)
        if execution is not None and execution.status is not WorkflowExecutionStatus.RUNNING:
            return execution.status
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.2)


# --- commands --------------------------------------------------------------------------------


def _run(name: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CommandError as err:
        print(f"paychan {name}: {err}", file=sys.stderr)
        return err.exit_code


def _config_peer(config: NodeConfig, peer_id: str) -> PeerConfig:
    try:
        return config.peer(peer_id)
    except KeyError:
        known = ", ".join(peer.id for peer in config.peers) or "none"
        raise CommandError(
            f"unknown peer {peer_id!r} (node {config.node_id} has peers: {known})", 2
        ) from None


def channels_command(args: argparse.Namespace) -> int:
    def body() -> int:
        config = load_config_or_exit(args.config, need_private_key=False)
        report = asyncio.run(
            _with_temporal(
                config.temporal,
                lambda client: collect_report(client, config, args.query_timeout),
            )
        )
        # Claims live in the node's ledger file; shown when this host has it.
        report = with_claims(report, read_claims(config.resolved_ledger_path))
        if args.json:
            print(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2))
        else:
            print(render_table(report, shutil.get_terminal_size((100, 24)).columns))
        return 0

    return _run("channels", body)


def retry_command(args: argparse.Namespace) -> int:
    def body() -> int:
        config = load_config_or_exit(args.config, need_private_key=False)
        peer = _config_peer(config, args.peer)
        workflow_id = peer_workflow_id(config.node_id, peer)
        lines = asyncio.run(
            _with_temporal(config.temporal, lambda client: send_retry(client, workflow_id, peer.id))
        )
        print("\n".join(lines))
        return 0

    return _run("retry", body)


def close_command(args: argparse.Namespace) -> int:
    def body() -> int:
        config = load_config_or_exit(args.config, need_private_key=False)
        peer = _config_peer(config, args.peer)
        workflow_id = peer_workflow_id(config.node_id, peer)
        lines = asyncio.run(
            _with_temporal(
                config.temporal,
                lambda client: send_close(
                    client, workflow_id, peer.id, args.cooperative, args.wait
                ),
            )
        )
        print("\n".join(lines))
        return 0

    return _run("close", body)


def cancel_command(args: argparse.Namespace) -> int:
    def body() -> int:
        config = load_config_or_exit(args.config, need_private_key=False)
        peer = _config_peer(config, args.peer)
        workflow_id = peer_workflow_id(config.node_id, peer)
        lines = asyncio.run(
            _with_temporal(
                config.temporal,
                lambda client: request_cancel(
                    client, workflow_id, peer.id, config.node_id, args.wait
                ),
            )
        )
        print("\n".join(lines))
        return 0

    return _run("cancel", body)
