"""`paychan channels | retry | cancel` on a real Temporal dev server and a real anvil, and the
same retry and cancel sent the way the Temporal web UI sends them (by the `temporal` CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import structlog
from eth_account import Account
from temporalio.client import Client, WorkflowExecutionStatus
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.token_network import Deployment, build_mint, send_and_wait
from connector.channel_commands import (
    NOT_STARTED,
    ChannelRow,
    ChannelsReport,
    ShortfallRow,
    WorkflowSnapshot,
    build_rows,
    format_units,
    render_table,
    short_channel_id,
    with_claims,
)
from connector.channels import ChannelProvisioner
from connector.claim_store import ClaimIndex, StoredClaim
from connector.claims import ClaimDomain, ClaimSigner
from connector.cli import main
from connector.config import PeerConfig
from connector.devstack import free_port, temporal_binary
from tests.integration.provisioning_node import TOKEN, Node
from workflows import ids
from workflows.messages import ChannelParams, ChannelStatus, ShortfallStatus

M2M = 10**18
PAYCHAN = Path(sysconfig.get_path("scripts")) / "paychan"


def write_config(path: Path, node_id: str, peers: dict[str, str | None], address: str) -> Path:
    lines = [
        f"nodeId: {node_id}",
        f"ilpAddress: g.{node_id}",
        "btpServerPort: 0",
        "peers:",
    ]
    for peer_id, evm_address in peers.items():
        lines += [f"  - id: {peer_id}", f"    authToken: token-{peer_id}"]
        if evm_address:
            lines.append(f'    evmAddress: "{evm_address}"')
    lines += ["temporal:", f"  address: {address}", "  namespace: default"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def node_logs_apart() -> Iterator[None]:
    """The in-process node logs through stdlib logging (pytest keeps it), never to stdout as
    unconfigured structlog would, so stdout holds only what the command printed."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    try:
        yield
    finally:
        structlog.configure(**saved)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def run_cli_async(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """In-process, in a thread: the command runs its own event loop (asyncio.run) while the
    test's loop keeps the in-process workers running. Earlier output (the node's own log
    lines) is dropped first."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def run_process(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# --- pure: units, rows, table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("wei", "shown"),
    [
        (10 * M2M, "10.0"),
        (M2M // 2, "0.5"),
        (0, "0.0"),
        (1, "0.000000000000000001"),
        (1_234_567 * M2M + 10**12, "1234567.000001"),
        (None, "-"),
    ],
)
def test_wei_is_shown_in_token_units(wei: int | None, shown: str) -> None:
    assert format_units(wei) == shown


def test_rows_list_config_peers_in_order_then_unknown_workflows() -> None:
    peers = [
        PeerConfig(id="b", auth_token="t"),
        PeerConfig(id="a", auth_token="t", preferred_tokens=["USD", "M2M"]),
    ]
    gone = WorkflowSnapshot(
        workflow_id="channel/n/gone/M2M",
        peer_id="gone",
        token="M2M",
        execution=WorkflowExecutionStatus.RUNNING,
        stage="SKIPPED",
        channel_id=None,
    )
    live = WorkflowSnapshot(
        workflow_id="channel/n/a/USD",
        peer_id="a",
        token="USD",
        execution=WorkflowExecutionStatus.RUNNING,
        stage="OPENING",
        channel_id=None,
        status=ChannelStatus(
            node_id="n",
            peer_id="a",
            token="USD",
            stage="AWAITING_FUNDS",
            our_address="0xours",
            peer_address="0xpeer",
            channel_id=None,
            our_deposit="0",
            their_deposit="0",
            deposit_target=str(10 * M2M),
            last_error=None,
            shortfall=ShortfallStatus("0xours", "0", str(3 * M2M)),
        ),
    )

    rows = build_rows("n", peers, {gone.workflow_id: gone, live.workflow_id: live})

    assert [(r.peer_id, r.workflow_id, r.stage, r.in_config) for r in rows] == [
        ("b", "channel/n/b/M2M", NOT_STARTED, True),
        ("a", "channel/n/a/USD", "AWAITING_FUNDS", True),
        ("gone", "channel/n/gone/M2M", "SKIPPED", False),
    ]
    assert rows[1].live and rows[1].deposit_target == 10 * M2M
    assert rows[1].shortfall == ShortfallRow(address="0xours", eth_missing=0, token_missing=3 * M2M)
    assert not rows[2].live and rows[2].our_deposit is None


def test_table_fits_80_columns_and_says_what_to_do() -> None:
    channel_id = "0x" + "ab" * 32
    report = ChannelsReport(
        node_id="peer2",
        temporal_address="127.0.0.1:7233",
        namespace="default",
        peers=[
            ChannelRow(
                peer_id="peer1",
                token="M2M",
                workflow_id="channel/peer2/peer1/M2M",
                stage="READY",
                execution="RUNNING",
                live=True,
                channel_id=channel_id,
                our_deposit=10 * M2M,
                their_deposit=10 * M2M,
                deposit_target=10 * M2M,
            ),
            ChannelRow(
                peer_id="peer3",
                token="M2M",
                workflow_id="channel/peer2/peer3/M2M",
                stage="AWAITING_FUNDS",
                execution="RUNNING",
                live=True,
                our_deposit=0,
                their_deposit=0,
                deposit_target=10 * M2M,
                shortfall=ShortfallRow(
                    address="0x" + "12" * 20, eth_missing=M2M // 100, token_missing=5 * M2M
                ),
                last_error="TokenNetwork reverted: " + "x" * 200,
            ),
            ChannelRow(
                peer_id="peer4",
                token="M2M",
                workflow_id="channel/peer2/peer4/M2M",
                stage="DEPOSITING",
                execution="RUNNING",
            ),
        ],
    )

    table = render_table(report, 80)
    lines = table.splitlines()

    assert max(len(line) for line in lines) <= 80
    assert lines[1].split() == ["PEER", "TOKEN", "STAGE", "CHANNEL", "OURS", "THEIRS", "TARGET"]
    assert lines[2].split() == [
        "peer1",
        "M2M",
        "READY",
        short_channel_id(channel_id),
        "10.0",
        "10.0",
        "10.0",
    ]
    assert lines[4:6] == [
        f"    fund 0x{'12' * 20} with 0.01 ETH and 5.0 M2M",
        "    then: paychan retry peer3 (or wait for the timed re-check)",
    ]
    assert lines[6].startswith("    last error: TokenNetwork reverted: xxx")
    assert lines[8].endswith(" ..")
    assert "(no worker)" in lines[-1]


def test_claims_from_the_ledger_file_show_under_their_row() -> None:
    channel_id = "0x" + "ab" * 32
    ours = Account.from_key("0x" + "11" * 32)
    theirs = Account.from_key("0x" + "22" * 32)
    domain = ClaimDomain(31337, "0x" + "cd" * 20)

    def stored(direction: str, account, nonce: int, amount: int, acked: bool) -> StoredClaim:
        claim = ClaimSigner(account.key, account.address).sign(domain, channel_id, nonce, amount)
        return StoredClaim(direction, "peer1", claim, amount, acked, 1.0)

    claims = ClaimIndex(
        [
            stored("sent", ours, 3, 3 * M2M, True),
            stored("sent", ours, 4, 4 * M2M, False),
            stored("received", theirs, 2, M2M // 2, True),
        ]
    )
    row = ChannelRow(
        peer_id="peer1",
        token="M2M",
        workflow_id="channel/peer2/peer1/M2M",
        stage="READY",
        execution="RUNNING",
        live=True,
        channel_id=channel_id,
    )
    other = row.model_copy(update={"peer_id": "peer3", "workflow_id": "channel/peer2/peer3/M2M"})
    report = with_claims(
        ChannelsReport(
            node_id="peer2", temporal_address="t:1", namespace="default", peers=[row, other]
        ),
        claims,
    )

    lines = render_table(report, 80).splitlines()
    assert lines[3:5] == [
        "    claims: sent #4 for 4.0 M2M (awaiting acknowledgement); received #2 for 0.5",
        "      M2M",
    ]
    assert lines[5].startswith("peer3")  # no claims, no note
    document = report.model_dump(mode="json", by_alias=True)["peers"]
    assert (document[0]["sentClaimNonce"], document[0]["receivedClaimAmount"]) == (
        "4",
        str(M2M // 2),
    )
    assert document[1]["sentClaimNonce"] is None


# --- errors before or without Temporal -------------------------------------------------------


def test_unknown_peer_is_a_usage_error_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens at this address: exit 2 proves the peer was checked first.
    config = write_config(tmp_path / "n.yaml", "n1", {"peer1": None}, f"127.0.0.1:{free_port()}")
    for command in ("retry", "cancel"):
        code, out, err = run_cli(capsys, command, "peer9", "--config", str(config))
        assert code == 2
        assert out == ""
        assert err == f"paychan {command}: unknown peer 'peer9' (node n1 has peers: peer1)\n"


def test_unreachable_temporal_exits_1_with_one_line_naming_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "n.yaml", "n1", {"peer1": None}, address)
    for argv in (["channels"], ["channels", "--json"], ["retry", "peer1"], ["cancel", "peer1"]):
        code, out, err = run_cli(capsys, *argv, "--config", str(config))
        assert code == 1, argv
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"paychan {argv[0]}: cannot reach Temporal at {address}: ")


def test_unreadable_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["channels", "--config", str(tmp_path / "missing.yaml")])
    assert exited.value.code == 2
    assert "cannot read config file" in capsys.readouterr().err


# --- on real Temporal and anvil --------------------------------------------------------------


def params(
    node: Node, deployment: Deployment, peer_id: str, address: str | None, target: int
) -> ChannelParams:
    # A long recheck timer, so only a retry signal can move AWAITING_FUNDS on in this test.
    return ChannelParams(
        node_id=node.node_id,
        peer_id=peer_id,
        token=TOKEN,
        chain_id=deployment.chain_id,
        token_network=deployment.token_network,
        our_address=node.account.address,
        peer_address=address,
        deposit_target=target,
        funds_recheck_seconds=3_600,
    )


async def execution_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(workflow_id).describe()).status


async def wait_closed(client: Client, workflow_id: str, timeout: float = 15.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := await execution_status(client, workflow_id)) is (
        WorkflowExecutionStatus.RUNNING
    ):
        assert loop.time() < deadline, f"{workflow_id} still running"
        await asyncio.sleep(0.1)
    assert status is not None
    return status.name


async def test_operator_commands_and_ui_signals_drive_the_node_s_workflows(
    temporal_client: Client,
    anvil_w3: AsyncWeb3,
    deployment: Deployment,
    new_account,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    node_logs_apart: None,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    address = temporal_client.service_client.config.target_host
    node = Node(f"ops-{uuid.uuid4().hex[:8]}", await new_account(), temporal_client)
    wallet = node.account.address
    addresses = {name: Account.create().address for name in ("ready", "short", "short2", "stuck")}
    # The wallet holds 1,000,000 M2M: "short" and "short2" want 2,000,000 each until minted,
    # "stuck" wants more than will ever be minted.
    targets = {"ready": 10 * M2M, "short": 2_000_000 * M2M, "short2": 2_000_000 * M2M}
    targets["stuck"] = 10**30
    config = write_config(
        tmp_path / "node.yaml",
        node.node_id,
        {**addresses, "skip": None, "idle": "0x" + "11" * 20},
        address,
    )
    cfg = ("--config", str(config))
    ui = (f"--address={address}", "--namespace=default")
    temporal = str(temporal_binary())

    def workflow_id(peer_id: str) -> str:
        return ids.channel_workflow_id(node.node_id, peer_id, TOKEN)

    stack = AsyncExitStack()
    try:
        await node.start_workers(stack, anvil_w3, deployment)
        everyone = {
            **{
                peer: params(node, deployment, peer, addresses[peer], t)
                for peer, t in targets.items()
            },
            "skip": params(node, deployment, "skip", None, 10 * M2M),
            # Connected once, since removed from the config: listed after the configured peers.
            "gone": params(node, deployment, "gone", None, 10 * M2M),
        }
        provisioner = ChannelProvisioner(temporal_client, node.registry, everyone)
        await asyncio.gather(*(provisioner.peer_connected(peer) for peer in everyone))
        ready = await node.wait_for_stage("ready", "READY")
        for peer in ("short", "short2", "stuck"):
            await node.wait_for_stage(peer, "AWAITING_FUNDS")
        await node.wait_for_stage("skip", "SKIPPED")
        await node.wait_for_stage("gone", "SKIPPED")
        onchain = await tn.get_channel_id(anvil_w3, deployment, wallet, addresses["ready"])
        assert ready.channel_id == onchain

        # The table: live from the status query, in token units, within 80 columns.
        # "gone" reaches the list through visibility, which may lag a moment.
        for _ in range(50):
            code, table, _ = await run_cli_async(capsys, "channels", *cfg)
            assert code == 0
            if "gone" in table:
                break
            await asyncio.sleep(0.1)
        lines = table.splitlines()
        assert max(map(len, lines)) <= 80, table
        start = next(i for i, line in enumerate(lines) if line.startswith("PEER ")) + 1
        rows = {line.split()[0]: line.split() for line in lines[start:] if line[0] != " "}
        assert list(rows) == ["ready", "short", "short2", "stuck", "skip", "idle", "gone"]
        assert rows["ready"] == [
            "ready",
            "M2M",
            "READY",
            short_channel_id(onchain),
            "10.0",
            "0.0",
            "10.0",
        ]
        assert rows["short"][2] == "AWAITING_FUNDS" and rows["short"][-1] == "2000000.0"
        assert rows["skip"][2] == "SKIPPED"
        assert rows["idle"][2] == NOT_STARTED
        assert f"    fund {wallet} with " in table
        assert "    then: paychan retry short2 (or wait for the timed re-check)" in table
        assert "    peer not in this config" in table

        # --json: full channel ids, wei as strings, the same numbers the workflow reports.
        code, out, _ = await run_cli_async(capsys, "channels", "--json", *cfg)
        assert code == 0
        document = json.loads(out)
        by_peer = {row["peerId"]: row for row in document["peers"]}
        assert document["nodeId"] == node.node_id
        assert by_peer["ready"]["channelId"] == onchain
        assert by_peer["ready"]["ourDeposit"] == str(10 * M2M)
        assert by_peer["ready"]["depositTarget"] == str(10 * M2M)
        assert by_peer["ready"]["live"] is True and by_peer["ready"]["execution"] == "RUNNING"
        short = await node.status("short")
        assert short.shortfall is not None
        assert by_peer["short"]["shortfall"] == {
            "address": wallet,
            "ethMissing": "0",
            "tokenMissing": short.shortfall.token_missing,
        }
        assert by_peer["idle"] == {
            **by_peer["idle"],
            "stage": NOT_STARTED,
            "execution": None,
            "workflowId": workflow_id("idle"),
        }

        # The list filter docs/operations.md gives for the UI's search box finds exactly the
        # waiting ones (the UI sends the same query to the same visibility API).
        waiting = f'NodeId = "{node.node_id}" AND Stage = "AWAITING_FUNDS"'
        for _ in range(50):
            code, out, err = await run_process(
                temporal, "workflow", "list", "--query", waiting, "--output", "jsonl", *ui
            )
            assert code == 0, err
            listed = sorted(
                json.loads(line)["execution"]["workflowId"] for line in out.splitlines()
            )
            if len(listed) == 3:
                break
            await asyncio.sleep(0.1)
        assert listed == sorted(workflow_id(peer) for peer in ("short", "short2", "stuck"))

        # Fund the wallet, then retry one peer: only the signal moves it (the timer is 1 h).
        await send_and_wait(
            anvil_w3,
            node.account,
            build_mint(deployment, wallet, 4_000_000 * M2M),
        )
        code, out, _ = await run_cli_async(capsys, "retry", "short", *cfg)
        assert code == 0
        assert out.splitlines()[0] == f"sent retry to {workflow_id('short')} (stage AWAITING_FUNDS)"
        await node.wait_for_stage("short", "READY")
        # Nothing but the signal moved it: its neighbour, just as funded, still waits.
        assert (await node.status("short2")).stage == "AWAITING_FUNDS"

        # The Temporal UI's "Send a Signal" button: SignalWorkflowExecution, name retry.
        code, out, err = await run_process(
            temporal, "workflow", "signal", "--workflow-id", workflow_id("short2"),
            "--name", ids.SIGNAL_RETRY, *ui,
        )  # fmt: skip
        assert code == 0, err
        short2 = await node.wait_for_stage("short2", "READY")
        assert short2.our_deposit == str(2_000_000 * M2M)

        # paychan cancel on a READY workflow: it stops; the channel stays for the next run.
        code, out, _ = await run_cli_async(capsys, "cancel", "ready", *cfg)
        assert code == 0
        assert out.splitlines() == [
            f"cancel requested for {workflow_id('ready')} at stage READY",
            "workflow CANCELED",
            f"channel {onchain}",
            "  stays on-chain with its deposits; the next run adopts it",
            "a new run starts when peer ready next connects",
        ]
        # The Temporal UI's "Request Cancellation": RequestCancelWorkflowExecution.
        code, out, err = await run_process(
            temporal, "workflow", "cancel", "--workflow-id", workflow_id("stuck"), *ui
        )
        assert code == 0, err
        assert await wait_closed(temporal_client, workflow_id("stuck")) == "CANCELED"

        # Levers on workflows that are not running, or not there, fail clearly.
        code, _, err = await run_cli_async(capsys, "retry", "ready", *cfg)
        assert code == 1
        assert f"channel workflow {workflow_id('ready')} is not running (CANCELED)" in err
        code, _, err = await run_cli_async(capsys, "cancel", "idle", *cfg)
        assert code == 1
        assert f"no channel workflow {workflow_id('idle')}: it starts when peer idle" in err

        # An operator's own process: `paychan channels --json`.
        command = [str(PAYCHAN)] if PAYCHAN.exists() else [sys.executable, "-m", "connector.cli"]
        code, out, err = await run_process(*command, "channels", "--json", *cfg)
        assert code == 0, err
        by_peer = {row["peerId"]: row for row in json.loads(out)["peers"]}
        assert by_peer["ready"]["execution"] == "CANCELED"
        assert by_peer["ready"]["channelId"] == onchain
        assert by_peer["stuck"]["execution"] == "CANCELED"
        assert by_peer["short2"]["stage"] == "READY"
        assert by_peer["short2"]["ourDeposit"] == str(2_000_000 * M2M)
    finally:
        await stack.aclose()

    # No worker left for this node: stage and channel come from the search attributes.
    code, table, _ = await run_cli_async(capsys, "channels", "--query-timeout", "0.5", *cfg)
    assert code == 0
    assert "(no worker)" in table
    short_row = next(line.split() for line in table.splitlines() if line.startswith("short "))
    assert short_row[2] == "READY" and short_row[4:] == ["-", "-", "-"]
    for peer in ("short", "short2", "skip", "gone"):
        await temporal_client.get_workflow_handle(workflow_id(peer)).terminate("test over")
