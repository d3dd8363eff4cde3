"""The atheris soak (`bench/fuzz.py`) cut down to 20,000 inputs per target: every target
finishes its runs with no crash and no hang. The million-input figures are in BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz import TARGET_NAMES

ROOT = Path(__file__).resolve().parents[2]
RUNS = 20_000

pytestmark = pytest.mark.timeout(240)


def test_every_decoder_survives_20000_coverage_guided_inputs(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fuzz",
            "--runs",
            str(RUNS),
            "--json",
            "--artifacts",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    reports = json.loads(result.stdout)
    assert [r["target"] for r in reports] == list(TARGET_NAMES)
    for report in reports:
        found = list(tmp_path.glob(f"{report['target']}.*.jsonl"))
        details = "\n".join(path.read_text()[:2000] for path in found)
        assert report["crashes"] == 0 and report["hangs"] == 0, details
        assert report["finished"] and report["inputs"] == RUNS, report
        # Coverage guidance worked: libFuzzer kept inputs beyond the seeds.
        assert report["corpus"] > 0, report
    assert result.returncode == 0, result.stderr
