"""README.md stays true to the code: every `paychan` command in its table, the screenshot it
shows exists, and the benchmark figures it quotes are BENCHMARKS.md's own lines. (The config
reference block has its own test: tests/connector/test_config_reference.py.)"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from connector.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else len(README)]


def test_every_command_has_a_row() -> None:
    table = section("Commands")
    for action in build_parser()._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                assert f"| `paychan {name}" in table, (
                    f"README.md: add `paychan {name}` to the Commands table"
                )


def test_images_exist() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert "docs/temporal-ui.png" in images
    for image in images:
        assert (ROOT / image).is_file(), image


def test_benchmark_figures_are_quoted_from_benchmarks_md() -> None:
    benchmarks = set((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8").splitlines())
    rows = [line for line in section("Benchmarks").splitlines() if line.startswith("|")]
    assert len(rows) >= 10
    for row in rows:
        assert row in benchmarks, f"README.md quotes a figure BENCHMARKS.md does not have: {row}"


def test_relative_links_resolve() -> None:
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists(), target
