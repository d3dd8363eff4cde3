"""Coverage-guided fuzzing (atheris / libFuzzer) of the decoders: OER, ILP, BTP, the BTP
session and the settlement claim JSON. The targets and what each checks are in
`tests/fuzz/targets.py`.

    .venv/bin/python -m bench.fuzz [--runs 1000000] [--target NAME ...] [--jobs 1] [--json]

Each target runs in its own child process, since libFuzzer owns the process and exits when
it is done: `-runs=N` inputs, a seed corpus of valid encodings, `-max_len` bytes per input,
and libFuzzer's own `-timeout` as the backstop for an input that never returns (the child
dies; counted as a hang). The child wraps the target: an exception escaping it is a crash,
recorded with its input (hex) and traceback under `--artifacts` and the run goes on, so one
run counts every crash; an input slower than `--hang-ms` is recorded as a hang the same way.
The parent prints one row per target: inputs tried (libFuzzer's `Done N runs`), seconds,
inputs/s, corpus size, slowest input, crashes, hangs. Exit 1 when any target crashed,
hung or did not finish its runs.

Coverage comes from instrumenting `connector.*` and `activities.balance_proof` at import;
pydantic's Rust core and coincurve are not instrumented (their Python callers are).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

TARGET_NAMES = ("oer", "ilp", "btp", "btp_session", "claim")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)

# Tokens that help libFuzzer assemble valid BTP auth frames and claim JSON.
_DICTIONARY = [
    b"auth",
    b"auth_username",
    b"auth_token",
    b"alice",
    b"alice-token",
    b"ilp",
    b"payment-channel-claim",
    b'"chainId"',
    b'"tokenNetwork"',
    b'"channelId"',
    b'"nonce"',
    b'"transferredAmount"',
    b'"lockedAmount"',
    b'"locksRoot"',
    b'"signature"',
    b'"signerAddress"',
    b'"version"',
    b'"blockchain"',
    b'"evm"',
    b'"accepted"',
    b"31337",
    b"0x",
]


@dataclass
class TargetReport:
    target: str
    inputs: int
    seconds: float
    corpus: int
    slowest_ms: float
    crashes: int
    hangs: int
    finished: bool
    artifacts: str

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


# --- child: one target under libFuzzer ------------------------------------------------------


def _child(
    target_name: str,
    runs: int,
    max_len: int,
    timeout: int,
    hang_ms: float,
    artifacts: Path,
    seed: int,
) -> None:
    import atheris

    with atheris.instrument_imports(include=["connector", "activities.balance_proof"]):
        from tests.fuzz import targets

    target = targets.TARGETS[target_name]
    crashes = artifacts / f"{target_name}.crashes.jsonl"
    hangs = artifacts / f"{target_name}.hangs.jsonl"
    slowest = artifacts / f"{target_name}.slowest.json"
    state = {"slowest": 0.0}

    def record(path: Path, data: bytes, detail: str) -> None:
        with path.open("a") as out:
            out.write(json.dumps({"input": data.hex(), "detail": detail}) + "\n")

    def one_input(data: bytes) -> None:
        started = time.perf_counter()
        try:
            target(data)
        except Exception:
            record(crashes, data, traceback.format_exc())
        elapsed = (time.perf_counter() - started) * 1000
        if elapsed > state["slowest"]:
            state["slowest"] = elapsed
            slowest.write_text(json.dumps({"ms": elapsed, "input": data.hex()}))
        if elapsed > hang_ms:
            record(hangs, data, f"{elapsed:.0f} ms")

    corpus = artifacts / f"{target_name}.corpus"
    seeds = artifacts / f"{target_name}.seeds"
    corpus.mkdir(exist_ok=True)
    seeds.mkdir(exist_ok=True)
    for index, value in enumerate(targets.seeds()[target_name]):
        (seeds / f"seed-{index}").write_bytes(value)
    dictionary = artifacts / "tokens.dict"
    dictionary.write_text("".join(f'"{_dict_escape(token)}"\n' for token in _DICTIONARY))
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-max_len={max_len}",
            f"-timeout={timeout}",
            f"-seed={seed}",
            f"-dict={dictionary}",
            f"-artifact_prefix={artifacts}/{target_name}-",
            "-print_final_stats=1",
            str(corpus),
            str(seeds),
        ],
        one_input,
    )
    atheris.Fuzz()


def _dict_escape(token: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)


# --- parent: run every target, read what the children left ----------------------------------


def run_target(name: str, args: argparse.Namespace, artifacts: Path) -> TargetReport:
    started = time.monotonic()
    for suffix in (".crashes.jsonl", ".hangs.jsonl", ".slowest.json"):
        (artifacts / f"{name}{suffix}").unlink(missing_ok=True)
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fuzz",
            "--child",
            name,
            "--runs",
            str(args.runs),
            "--max-len",
            str(args.max_len),
            "--timeout",
            str(args.timeout),
            "--hang-ms",
            str(args.hang_ms),
            "--seed",
            str(args.seed),
            "--artifacts",
            str(artifacts),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    seconds = time.monotonic() - started
    (artifacts / f"{name}.log").write_text(child.stdout + child.stderr)
    done = _DONE.search(child.stderr)
    statuses = _STATUS.findall(child.stderr)
    inputs = int(done.group(1)) if done else int(statuses[-1]) if statuses else 0
    crashes = _lines(artifacts / f"{name}.crashes.jsonl")
    hangs = _lines(artifacts / f"{name}.hangs.jsonl")
    if child.returncode != 0:
        # libFuzzer stopped the child: its -timeout (a hang), a deadly signal or an OOM.
        if "libFuzzer: timeout" in child.stderr:
            hangs += 1
        else:
            crashes += 1
    slowest_file = artifacts / f"{name}.slowest.json"
    slowest = json.loads(slowest_file.read_text())["ms"] if slowest_file.exists() else 0.0
    corpus_dir = artifacts / f"{name}.corpus"
    corpus = len(list(corpus_dir.iterdir())) if corpus_dir.exists() else 0
    return TargetReport(
        target=name,
        inputs=inputs,
        seconds=round(seconds, 1),
        corpus=corpus,
        slowest_ms=round(slowest, 1),
        crashes=crashes,
        hangs=hangs,
        finished=done is not None and child.returncode == 0,
        artifacts=str(artifacts),
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def table(reports: list[TargetReport]) -> str:
    lines = [
        "| target | inputs tried | seconds | inputs/s | corpus | slowest input ms "
        "| crashes | hangs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(
            f"| {r.target} | {r.inputs:,} | {r.seconds:,.0f} | {r.per_second:,.0f} | "
            f"{r.corpus:,} | {r.slowest_ms:,.1f} | {r.crashes} | {r.hangs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument(
        "--target", action="append", choices=TARGET_NAMES, help="repeatable; default all"
    )
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--max-len", type=int, default=4096, help="bytes per input")
    parser.add_argument("--timeout", type=int, default=10, help="libFuzzer per-input seconds")
    parser.add_argument("--hang-ms", type=float, default=1000.0, help="slower input = a hang")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer -seed")
    parser.add_argument("--artifacts", type=Path, help="crashes, corpus, logs (default: temp)")
    parser.add_argument("--json", action="store_true", help="print JSON reports")
    parser.add_argument("--child", choices=TARGET_NAMES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        artifacts = args.artifacts.resolve()
        _child(
            args.child, args.runs, args.max_len, args.timeout, args.hang_ms, artifacts, args.seed
        )
        return 0  # not reached: libFuzzer exits the process

    names = args.target or list(TARGET_NAMES)
    artifacts = (args.artifacts or Path(tempfile.mkdtemp(prefix="paychan-fuzz-"))).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(lambda name: run_target(name, args, artifacts), names))
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        print(
            f"atheris, {args.runs:,} runs per target, max_len {args.max_len}, "
            f"seed {args.seed}, artifacts {artifacts}"
        )
        print(table(reports))
    failed = any(r.crashes or r.hangs or not r.finished for r in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
