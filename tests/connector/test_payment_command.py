"""`paychan send`: a test payment through a running node's admin API, against two real nodes;
exit 0 fulfilled, 1 rejected or unreachable, 2 usage and config errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from connector.cli import main
from connector.config import load_config
from connector.devstack import free_port
from connector.http import PaymentResult
from connector.node import ConnectorNode
from connector.payment_command import CommandError, admin_payments_url, describe_result
from tests.connector.test_node import wait_for

pytestmark = pytest.mark.timeout(60)
ADMIN_TOKEN = "admin-token-of-sender-node"


def write_sender(path: Path, b_port: int, admin_port: int, *, admin: bool = True) -> Path:
    lines = [
        "nodeId: sender",
        "ilpAddress: g.sender",
        "btpServerPort: 0",
        f"ledgerPath: {path.parent / 'sender.sqlite3'}",
        "peers:",
        f"  - {{id: far, url: 'ws://127.0.0.1:{b_port}', authToken: sender-far}}",
        "routes:",
        "  - {prefix: g.far, peer: far}",
        "  - {prefix: g.nowhere, peer: far}",
    ]
    if admin:
        lines += ["admin:", f"  port: {admin_port}", f"  token: {ADMIN_TOKEN}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_far(path: Path, port: int) -> Path:
    path.write_text(
        "\n".join(
            [
                "nodeId: far",
                "ilpAddress: g.far",
                f"btpServerPort: {port}",
                f"ledgerPath: {path.parent / 'far.sqlite3'}",
                "peers:",
                "  - {id: sender, authToken: sender-far}",
                "routes:",
                "  - {prefix: g.sender, peer: sender}",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def node_logs_apart() -> Iterator[None]:
    """The in-process nodes log through stdlib logging (pytest keeps it), never to stdout as
    unconfigured structlog would, so stdout holds only what the command printed."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def sender_config(tmp_path: Path, node_logs_apart: None) -> AsyncIterator[Path]:
    """Two running nodes, sender -> far; yields the sender's config file."""
    far_port = free_port()
    config = write_sender(tmp_path / "sender.yaml", far_port, free_port())
    sender = ConnectorNode(load_config(config))
    far = ConnectorNode(load_config(write_far(tmp_path / "far.yaml", far_port)))
    try:
        await far.start()
        await sender.start()
        await wait_for(lambda: sender.is_connected("far"))
        yield config
    finally:
        await sender.stop()
        await far.stop()


async def send(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The command runs its own blocking HTTP call: off the loop the nodes run on.
    code = await asyncio.to_thread(main, ["send", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_fulfilled_payment_exits_0(sender_config: Path, capsys) -> None:
    code, out, err = await send(capsys, "--config", str(sender_config), "g.far", "1000")
    assert (code, err) == (0, "")
    assert out.startswith("fulfilled: 1000 to g.far (fulfillment ")


async def test_json_result_for_scripts(sender_config: Path, capsys) -> None:
    code, out, _ = await send(capsys, "--config", str(sender_config), "--json", "g.far", "5")
    assert code == 0
    document = json.loads(out)
    assert document["fulfilled"] is True and len(document["fulfillment"]) == 64


async def test_rejected_payment_exits_1_with_code_and_trigger(sender_config: Path, capsys) -> None:
    code, out, _ = await send(capsys, "--config", str(sender_config), "g.nowhere.x", "7")
    assert code == 1
    assert out.startswith("rejected: 7 to g.nowhere.x, F02 by g.far")
    code, out, _ = await send(capsys, "--config", str(sender_config), "--json", "g.nowhere", "7")
    assert code == 1
    assert json.loads(out) | {"message": None} == {
        "fulfilled": False,
        "fulfillment": None,
        "code": "F02",
        "message": None,
        "triggeredBy": "g.far",
    }


async def test_usage_and_config_errors_exit_2(tmp_path: Path, capsys) -> None:
    config = write_sender(tmp_path / "s.yaml", free_port(), free_port())
    code, _, err = await send(capsys, "--config", str(config), "not an address", "1")
    assert (code, err.strip()) == (2, "paychan send: not a valid ILP address: 'not an address'")
    code, _, err = await send(capsys, "--config", str(config), "g.far", str(2**64))
    assert code == 2 and "amount must be 0 .. 2^64-1" in err
    bare = write_sender(tmp_path / "bare.yaml", free_port(), free_port(), admin=False)
    code, _, err = await send(capsys, "--config", str(bare), "g.far", "1")
    assert (code, err.strip()) == (
        2,
        "paychan send: node sender has no admin section: no admin API",
    )
    with pytest.raises(SystemExit) as exit_info:
        await send(capsys, "--config", str(config), "g.far", "ten")
    assert exit_info.value.code == 2


async def test_node_not_running_exits_1(tmp_path: Path, capsys) -> None:
    admin_port = free_port()
    config = write_sender(tmp_path / "s.yaml", free_port(), admin_port)
    code, _, err = await send(capsys, "--config", str(config), "g.far", "1")
    assert code == 1
    assert err.startswith(
        f"paychan send: cannot reach the node's admin API at http://127.0.0.1:{admin_port}/"
    )


async def test_a_token_the_node_refuses_is_a_config_error(
    sender_config: Path, tmp_path: Path, capsys
) -> None:
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(sender_config.read_text().replace(ADMIN_TOKEN, "not-the-admin-token-x"))
    code, out, err = await send(capsys, "--config", str(wrong), "g.far", "1")
    assert (code, out) == (2, "")
    assert "refused admin.token" in err and "not-the-admin-token-x" not in err


def test_admin_url_from_config(tmp_path: Path) -> None:
    config = load_config(write_sender(tmp_path / "s.yaml", 1, 9099))
    assert admin_payments_url(config) == "http://127.0.0.1:9099/admin/payments"
    wildcard = config.model_copy(
        update={"admin": config.admin.model_copy(update={"host": "0.0.0.0"})}
    )
    assert admin_payments_url(wildcard) == "http://127.0.0.1:9099/admin/payments"
    any_port = config.model_copy(update={"admin": config.admin.model_copy(update={"port": 0})})
    with pytest.raises(CommandError) as error:
        admin_payments_url(any_port)
    assert error.value.exit_code == 2


def test_describe_result_lines() -> None:
    assert (
        describe_result("g.x", 3, PaymentResult(fulfilled=False, code="T04", message="no"))
        == "rejected: 3 to g.x, T04: no"
    )
    assert (
        describe_result("g.x", 3, PaymentResult(fulfilled=True, fulfillment="ab"))
        == "fulfilled: 3 to g.x (fulfillment ab)"
    )
