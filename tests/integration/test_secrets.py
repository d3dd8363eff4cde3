"""No private key or token leaves the process that holds it: one demo run (`demo_stack`: real
Temporal, anvil, contracts and the five connector processes of examples/), driven to READY and
through payments large enough to settle, then searched for every secret it was given.

Searched: every log line (the per-node logs, temporal.log, anvil.log), /health, /metrics and
the admin API of every node, the output of the CLI commands run with the demo's environment,
and every workflow's history in the demo's Temporal (payloads decoded). Keys are searched as
hex with and without 0x in any case, as raw bytes and as base64; tokens and secrets as text
(any case), bytes and base64.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account
from temporalio.client import Client

from connector.demo import LINKS, NODES, DemoStack, _node_env, demo_stack
from connector.devstack import ANVIL_KEYS, PROJECT_ROOT
from connector.http import HealthReport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Enough for each hop's balance to pass the examples' settlementThreshold (1,000,000).
SETTLING_PAYMENTS = 3
SETTLING_AMOUNT = 600_000


@dataclass(frozen=True)
class Secret:
    name: str
    value: bytes  # raw bytes: a key's 32 bytes, a token's UTF-8

    def needles(self) -> tuple[list[bytes], list[bytes]]:
        """(lower-cased forms, searched in lower-cased text; exact forms, searched as is)."""
        if self.name.endswith("key"):
            lowered = [self.value.hex().encode()]  # covers 0x-prefixed and any case
        else:
            lowered = [self.value.lower()]
        exact = [self.value, base64.b64encode(self.value), base64.urlsafe_b64encode(self.value)]
        return lowered, [needle.rstrip(b"=") for needle in exact]


def known_secrets() -> list[Secret]:
    secrets = [Secret("deployer key", bytes.fromhex(ANVIL_KEYS[0][2:]))]
    for index, node in enumerate(NODES, start=1):
        secrets += [
            Secret(f"{node} treasury key", bytes.fromhex(ANVIL_KEYS[index][2:])),
            Secret(f"{node} admin token", f"dev-admin-token-{node}".encode()),
            Secret(f"{node} receiver secret", f"dev-receiver-secret-{node}".encode()),
        ]
    for left, right in LINKS:
        secrets.append(Secret(f"{left}-{right} BTP token", f"secret-{left}-to-{right}".encode()))
    return secrets


SECRETS = known_secrets()


def leaks(where: str, data: bytes) -> list[str]:
    lowered = data.lower()
    found = []
    for secret in SECRETS:
        lower_needles, exact_needles = secret.needles()
        if any(n in lowered for n in lower_needles) or any(n in data for n in exact_needles):
            found.append(f"{secret.name} in {where}")
    return found


# --- what the run exposes ---------------------------------------------------------------------


async def read_health(stack: DemoStack, session: aiohttp.ClientSession) -> None:
    for node in stack.nodes:
        assert node.process is not None and node.process.poll() is None, f"{node.node_id} exited"
        try:
            async with session.get(node.health_url, timeout=aiohttp.ClientTimeout(2)) as resp:
                stack.health[node.node_id] = HealthReport.model_validate_json(await resp.read())
        except (aiohttp.ClientError, TimeoutError):
            stack.health.pop(node.node_id, None)


def claims_acknowledged(stack: DemoStack) -> bool:
    """Every link's left end sent a claim to its right end, and it was acknowledged."""
    for left, right in LINKS:
        report = stack.health.get(left)
        if report is None or not report.peers[right].sent_claim_acknowledged:
            return False
    return True


async def wait_for(stack: DemoStack, session: aiohttp.ClientSession, done, what: str) -> None:
    deadline = time.monotonic() + 150
    while not done(stack):
        assert time.monotonic() < deadline, f"{what} not reached in time"
        await read_health(stack, session)
        await asyncio.sleep(0.25)


async def pay(session: aiohttp.ClientSession, stack: DemoStack, amount: int) -> bool:
    sender = stack.nodes[0]
    async with session.post(
        sender.admin_url + "/payments",
        json={"destination": "g.peer5", "amount": str(amount)},
        headers={"Authorization": f"Bearer {sender.admin_token}"},
        timeout=aiohttp.ClientTimeout(35),
    ) as resp:
        resp.raise_for_status()
        return (await resp.json())["fulfilled"]


async def http_documents(stack: DemoStack, session: aiohttp.ClientSession) -> dict[str, bytes]:
    documents = {}
    for node in stack.nodes:
        base = node.health_url.removesuffix("/health")
        for path in ("/health", "/health/ready", "/metrics"):
            async with session.get(base + path) as resp:
                documents[f"{node.node_id} {path}"] = await resp.read()
        auth = {"Authorization": f"Bearer {node.admin_token}"}
        for path in ("/peers", "/routes", "/balances"):
            async with session.get(node.admin_url + path, headers=auth) as resp:
                assert resp.status == 200, path
                documents[f"{node.node_id} admin{path}"] = await resp.read()
        # A refused request must not echo the token it was sent, right or wrong.
        wrong = {"Authorization": f"Bearer {node.admin_token}x"}
        async with session.get(node.admin_url + "/peers", headers=wrong) as resp:
            documents[f"{node.node_id} admin refusal"] = await resp.read()
    return documents


def cli_outputs(stack: DemoStack, tmp_path: Path) -> dict[str, bytes]:
    env = {
        **_node_env(
            {
                **os.environ,
                "PAYCHAN_RPC_URL": stack.anvil.url,
                "PAYCHAN_DEPLOYMENT": str(stack.workdir / "deployment.json"),
                "PAYCHAN_DATA_DIR": str(tmp_path / "cli-data"),
                "TEMPORAL_ADDRESS": stack.temporal.target,
            },
            stack.nodes,
        ),
        "PAYCHAN_DEPLOYER_KEY": ANVIL_KEYS[0],
        "PAYCHAN_BAD_KEY": ANVIL_KEYS[0] + "zz",
        "PAYCHAN_LOG_FORMAT": "json",
    }
    fund = [
        "fund",
        Account.from_key(stack.nodes[0].key).address,
        "--rpc-url",
        stack.anvil.url,
        "--eth",
        "0.01",
    ]
    fund += ["--m2m", "0", "--deployment", str(stack.workdir / "deployment.json")]
    config = {node: str(PROJECT_ROOT / "examples" / f"{node}.yaml") for node in NODES}
    # Valid YAML, one invalid field (a port), every secret present: the error must name the
    # field and show none of them.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        Path(config["peer2"]).read_text().replace("${PEER2_HEALTH_PORT:-8082}", "99999")
    )
    commands = {
        "channels --json": ["channels", "--config", config["peer2"], "--json"],
        "channels": ["channels", "--config", config["peer3"]],
        "send --json": ["send", "--config", config["peer1"], "g.peer5", "1000", "--json"],
        "retry": ["retry", "peer3", "--config", config["peer2"]],
        "fund": [*fund, "--key-env", "PAYCHAN_DEPLOYER_KEY"],
        # A key that does not parse: the error must not quote it.
        "fund (invalid key)": [*fund, "--key-env", "PAYCHAN_BAD_KEY"],
        "channels (invalid config)": ["channels", "--config", str(broken), "--json"],
        # The treasury key with two stray characters: refused at config, not quoted.
        "connector (invalid key)": ["connector", "--config", config["peer2"]],
    }
    bad_treasury_key = {"PEER2_TREASURY_EVM_PRIVATE_KEY": ANVIL_KEYS[2] + "zz"}

    def run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "connector.cli", *args],
            env=env | bad_treasury_key if args[0] == "connector" else env,
            cwd=stack.workdir,
            capture_output=True,
            timeout=60,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(commands, pool.map(run, commands.values()), strict=True))
    outputs = {}
    for name, result in results.items():
        outputs[f"paychan {name} (exit {result.returncode})"] = result.stdout + result.stderr
        expected = 2 if "invalid" in name else 0
        assert result.returncode == expected, (name, result.stdout, result.stderr)
    return outputs


def _payload_bytes(document: object) -> Iterator[bytes]:
    """The decoded `data` of every Payload in a history's JSON (base64 in proto JSON)."""
    if isinstance(document, dict):
        data = document.get("data")
        if isinstance(data, str) and "metadata" in document:
            try:
                yield base64.b64decode(data, validate=True)
            except binascii.Error:
                pass
        for value in document.values():
            yield from _payload_bytes(value)
    elif isinstance(document, list):
        for value in document:
            yield from _payload_bytes(value)


async def workflow_histories(stack: DemoStack) -> dict[str, bytes]:
    client = await Client.connect(stack.temporal.target)
    histories = {}
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        text = history.to_json()
        payloads = b"\n".join(_payload_bytes(json.loads(text)))
        histories[f"history of {execution.id} ({execution.run_id})"] = text.encode()
        histories[f"payloads of {execution.id} ({execution.run_id})"] = payloads
    return histories


# --- the test -------------------------------------------------------------------------------


async def test_no_key_or_token_in_logs_http_cli_or_workflow_histories(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    exposed: dict[str, bytes] = {}
    async with (
        demo_stack(workdir, fixed_ports=False) as stack,
        aiohttp.ClientSession() as session,
    ):
        await wait_for(stack, session, DemoStack.all_links_ready, "every link READY")
        paid = [await pay(session, stack, SETTLING_AMOUNT) for _ in range(SETTLING_PAYMENTS)]
        assert all(paid), paid
        # Claims signed with the treasury keys went over every link and were acknowledged.
        await wait_for(stack, session, claims_acknowledged, "a claim acknowledged on every link")
        exposed.update(await http_documents(stack, session))
        exposed.update(await asyncio.to_thread(cli_outputs, stack, tmp_path))
        histories = await workflow_histories(stack)
        assert any(name.startswith("history of channel/") for name in histories), list(histories)
        assert any(name.startswith("history of wallet/") for name in histories), list(histories)
        exposed.update(histories)
    # After the stack stopped, so the logs hold everything down to each process's shutdown.
    logs = sorted((workdir / "logs").glob("*.log"))
    assert {path.stem for path in logs} >= {*NODES, "temporal", "anvil"}
    for path in logs:
        exposed[f"log {path.name}"] = path.read_bytes()
    assert all(exposed[f"log {node}.log"] for node in NODES)

    found = [leak for where, data in exposed.items() for leak in leaks(where, data)]
    assert found == [], "\n".join(found)


def test_the_search_finds_each_form_of_a_secret() -> None:
    key = SECRETS[0]
    hex_key = key.value.hex()
    for form in (
        "0x" + hex_key,
        hex_key.upper(),
        "0X" + hex_key[:10].upper() + hex_key[10:],
        base64.b64encode(key.value).decode(),
    ):
        assert leaks("x", f"prefix {form} suffix".encode()) == ["deployer key in x"], form
    assert leaks("x", b"..." + key.value + b"...") == ["deployer key in x"]
    assert leaks("x", b"token=SECRET-PEER1-TO-PEER2") == ["peer1-peer2 BTP token in x"]
    assert leaks("x", hex_key[:-2].encode()) == []
    assert list(_payload_bytes({"a": [{"metadata": {}, "data": base64.b64encode(b"hi").decode()}]}))
