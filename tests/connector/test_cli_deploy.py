"""`paychan deploy` / `paychan fund` as an operator runs them: a subprocess, real anvil."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import sysconfig
from pathlib import Path

from eth_account import Account
from web3 import AsyncWeb3

from activities.token_network import Deployment, eth_balance, token_balance
from connector.devstack import ANVIL_KEYS, Anvil, free_port

PAYCHAN = Path(sysconfig.get_path("scripts")) / "paychan"


def _paychan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(PAYCHAN)] if PAYCHAN.exists() else [sys.executable, "-m", "connector.cli"]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deploy_to_an_unreachable_rpc_exits_1_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    key = ANVIL_KEYS[0]
    result = _paychan(
        "deploy",
        "--rpc-url",
        url,
        "--out",
        str(tmp_path / "d.json"),
        env={"PAYCHAN_DEPLOYER_KEY": key},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"paychan deploy: cannot reach RPC at {url}: ")
    assert key.removeprefix("0x") not in result.stderr + result.stdout
    assert not (tmp_path / "d.json").exists()


def test_deploy_with_an_unfunded_key_exits_1_naming_the_address(
    anvil: Anvil, tmp_path: Path
) -> None:
    key = "0x" + secrets.token_hex(32)
    address = Account.from_key(key).address
    result = _paychan(
        "deploy",
        "--rpc-url",
        anvil.url,
        "--key-env",
        "BROKE_KEY",
        "--out",
        str(tmp_path / "d.json"),
        env={"BROKE_KEY": key},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"paychan deploy: deployer key {address} has 0 wei on chain 31337")
    assert key.removeprefix("0x") not in result.stderr + result.stdout


def test_deploy_without_or_with_a_bad_key_is_a_usage_error(anvil: Anvil) -> None:
    result = _paychan("deploy", "--rpc-url", anvil.url, "--key-env", "PAYCHAN_UNSET_KEY_VAR")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "paychan deploy: environment variable PAYCHAN_UNSET_KEY_VAR (the private key) is not set"
    )
    result = _paychan(
        "deploy", "--rpc-url", anvil.url, env={"PAYCHAN_DEPLOYER_KEY": "0xnot-a-key-123"}
    )
    assert result.returncode == 2
    assert "does not hold a valid private key" in result.stderr
    assert "not-a-key-123" not in result.stderr


async def test_deploy_then_fund_writes_usable_deployment_json(
    anvil: Anvil, anvil_w3: AsyncWeb3, tmp_path: Path
) -> None:
    out = tmp_path / "deployment.json"
    env = {"PAYCHAN_DEPLOYER_KEY": ANVIL_KEYS[0]}
    result = _paychan("deploy", "--rpc-url", anvil.url, "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    deployment = json.loads(out.read_text())
    assert deployment["chain_id"] == 31337
    assert set(deployment) == {"chain_id", "registry", "token", "token_network", "deployed_block"}
    assert deployment["token_network"] in result.stdout
    assert ANVIL_KEYS[0].removeprefix("0x") not in result.stdout + result.stderr

    target = Account.create().address
    result = _paychan(
        "fund",
        target,
        "--rpc-url",
        anvil.url,
        "--deployment",
        str(out),
        "--eth",
        "0.25",
        "--m2m",
        "12.5",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert f"funded {target}" in result.stdout
    written = Deployment.model_validate(deployment)
    assert await eth_balance(anvil_w3, target) == 25 * 10**16
    assert await token_balance(anvil_w3, written, target) == 125 * 10**17

    result = _paychan("fund", "0x1234", "--rpc-url", anvil.url, "--deployment", str(out), env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "paychan fund: not an address: 0x1234"
