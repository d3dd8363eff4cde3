"""Compile `contracts/*.sol` with the pinned solcjs and write `contracts/artifacts/<Name>.json`.

Run: `python -m contracts.build [--out DIR]`. Node's `require('solc')` (version pinned in
package.json) compiles a standard-JSON input; OpenZeppelin imports resolve from
`node_modules/`. Source unit names are repository-relative and the JSON is written with sorted
keys, so the artifacts are byte-identical on every machine and can be committed; the
artifact test rebuilds them and compares.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from contracts import ARTIFACTS_DIR, CONTRACTS, SOURCES_DIR

PROJECT_ROOT = SOURCES_DIR.parent
SOLC_VERSION = "0.8.37"
EVM_VERSION = "cancun"  # the newest fork every target chain (anvil, Base) is known to run
OPTIMIZER_RUNS = 10_000  # channels are opened and funded often: favour call gas over size

# Reads the standard-JSON input on stdin, resolves imports from the project and node_modules,
# checks the compiler version, prints the standard-JSON output.
_COMPILE_JS = r"""
const fs = require('fs');
const path = require('path');
const solc = require('solc');
const root = process.argv[1];
const wanted = process.argv[2];
const found = solc.version();
if (!found.startsWith(wanted + '+')) {
  process.stderr.write(`solc ${found} is installed, ${wanted} is pinned: run npm ci\n`);
  process.exit(3);
}
function findImports(unit) {
  const candidates = unit.startsWith('@') ? [path.join(root, 'node_modules', unit)] : [path.join(root, unit)];
  for (const file of candidates) {
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, 'utf8') };
  }
  return { error: `import not found: ${unit}` };
}
const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
"""


class BuildError(RuntimeError):
    """The compiler is missing, pinned to another version, or reported errors."""


def standard_input() -> dict[str, Any]:
    sources = {
        f"contracts/{path.name}": {"content": path.read_text()}
        for path in sorted(SOURCES_DIR.glob("*.sol"))
    }
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {unit: {"*": ["abi", "evm.bytecode.object"]} for unit in sources},
        },
    }


def compile_sources() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise BuildError("node not found on PATH: install node/npm and run `npm ci`")
    result = subprocess.run(
        [node, "-e", _COMPILE_JS, str(PROJECT_ROOT), SOLC_VERSION],
        input=json.dumps(standard_input()),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(result.stderr.strip() or f"node exited with {result.returncode}")
    output = json.loads(result.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    return output


def artifacts(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> artifact dict for the contracts we deploy (not the OpenZeppelin ones)."""
    built: dict[str, dict[str, Any]] = {}
    for unit, contracts in output["contracts"].items():
        for name, data in contracts.items():
            if name not in CONTRACTS:
                continue
            built[name] = {
                "contractName": name,
                "sourceName": unit,
                "compiler": f"solc-js {SOLC_VERSION}",
                "evmVersion": EVM_VERSION,
                "optimizerRuns": OPTIMIZER_RUNS,
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
            }
    missing = set(CONTRACTS) - set(built)
    if missing:
        raise BuildError(f"compiler output lacks {sorted(missing)}")
    return built


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build(out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in sorted(artifacts(compile_sources()).items()):
        path = out_dir / f"{name}.json"
        path.write_text(render(artifact))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=ARTIFACTS_DIR, help="artifact directory")
    args = parser.parse_args(argv)
    try:
        paths = build(args.out)
    except BuildError as exc:
        print(f"contracts.build: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
