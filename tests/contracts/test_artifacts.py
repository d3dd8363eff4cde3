"""The committed artifacts are what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import json
from pathlib import Path

from contracts import ARTIFACTS_DIR, CONTRACTS, load_artifact
from contracts.build import PROJECT_ROOT, SOLC_VERSION, build


def test_rebuilt_artifacts_match_committed(tmp_path: Path) -> None:
    written = build(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{name}.json" for name in CONTRACTS)
    for path in written:
        committed = ARTIFACTS_DIR / path.name
        assert committed.exists(), f"{committed} is not committed: run `make contracts`"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed.name} is stale: run `python -m contracts.build` and commit the result"
        )


def test_compiler_pin_matches_package_json() -> None:
    package = json.loads((PROJECT_ROOT / "package.json").read_text())
    assert package["dependencies"]["solc"] == SOLC_VERSION


def test_load_artifact_gives_abi_and_bytecode() -> None:
    artifact = load_artifact("TokenNetwork")
    names = {entry.get("name") for entry in artifact.abi}
    assert {"openChannel", "setTotalDeposit", "closeChannel", "settleChannel"} <= names
    assert {"ChannelAlreadyOpen", "DepositNotIncreasing", "InvalidSignature"} <= names
    # CBOR metadata tail: "solc" followed by the version bytes 0.8.37 (0x00 0x08 0x25).
    assert artifact.bytecode.startswith("0x")
    assert artifact.bytecode.endswith("64736f6c63430008250033")
