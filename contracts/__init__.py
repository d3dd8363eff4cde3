"""Solidity sources and their committed build artifacts (ABI + creation bytecode).

`load_artifact(name)` reads `contracts/artifacts/<name>.json`, written by
`python -m contracts.build`; nothing here compiles or touches the network.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

SOURCES_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = SOURCES_DIR / "artifacts"
CONTRACTS: tuple[str, ...] = ("M2MToken", "TokenNetwork", "TokenNetworkRegistry")


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    if name not in CONTRACTS:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}")
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(name=name, abi=tuple(data["abi"]), bytecode=data["bytecode"])
