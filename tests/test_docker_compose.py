"""docker-compose.yml is valid for Debian's docker-compose (`config -q`, no Docker engine
needed) and has the production shape, for the compose anvil and for Base Sepolia."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("peer1", "peer2", "peer3", "peer4", "peer5")


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is not installed: `make test` installs it (apt docker-compose)")
    return found


def compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [docker_compose(), "--project-directory", str(ROOT), "-f", "docker-compose.yml"]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run(
        [*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def rendered(env_file: Path | None = None) -> dict:
    done = compose("config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_config_is_valid() -> None:
    done = compose("config", "-q")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_an_invalid_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  peer1:\n    image: paychan\n    depends_on: [nowhere]\n")
    done = subprocess.run(
        [docker_compose(), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "nowhere" in done.stderr


def test_production_shape() -> None:
    services = rendered()["services"]
    assert set(services) == {
        "postgresql",
        "temporal",
        "temporal-ui",
        "temporal-setup",
        "anvil",
        "deployer",
        *PEERS,
        "worker",
    }
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["anvil"]["image"].startswith("ghcr.io/foundry-rs/foundry")
    for name in (*PEERS, "worker"):
        service = services[name]
        assert service["image"] == "paychan:latest"
        # Search attributes are registered and contracts deployed before any connector starts.
        assert service["depends_on"]["temporal-setup"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["depends_on"]["deployer"]["condition"] == "service_completed_successfully"
        assert service["environment"]["PAYCHAN_RPC_URL"] == "http://anvil:8545"
        assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    for peer in PEERS:
        assert services[peer]["command"] == ["connector", "--config", f"examples/{peer}.yaml"]
    # peer3's provisioning runs in the separate worker service.
    assert services["peer3"]["environment"]["PAYCHAN_RUN_WORKER"] == "false"
    assert services["worker"]["command"] == ["worker", "--config", "examples/peer3.yaml"]
    assert services["deployer"]["environment"]["PAYCHAN_FUND_WALLETS"] == "true"


def test_base_sepolia_env_file_points_every_container_at_base_sepolia(tmp_path: Path) -> None:
    # What an operator does: copy the example, fill it in, name the copy in PAYCHAN_ENV_FILE.
    filled = tmp_path / "my-base-sepolia.env"
    lines = []
    for line in (ROOT / "examples" / "base-sepolia.env").read_text().splitlines():
        if line.startswith("PAYCHAN_ENV_FILE="):
            line = f"PAYCHAN_ENV_FILE={filled}"
        elif line.endswith("_EVM_ADDRESS="):
            line += "0x000000000000000000000000000000000000dEaD"
        lines.append(line)
    filled.write_text("\n".join(lines) + "\n")
    services = rendered(filled)["services"]
    for name in (*PEERS, "worker", "deployer"):
        environment = services[name]["environment"]
        assert environment["PAYCHAN_RPC_URL"] == "https://sepolia.base.org", name
        assert environment["PEER2_EVM_ADDRESS"] == "0x000000000000000000000000000000000000dEaD"
        # No dev key leaks in from examples/compose.env.
        assert not environment.get("PEER1_TREASURY_EVM_PRIVATE_KEY")
    assert services["deployer"]["environment"]["PAYCHAN_FUND_WALLETS"] == "false"
