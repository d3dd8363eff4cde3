"""The generated config reference: every field of every section, and the README's copy of it
is exactly what `paychan config-reference` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from connector.cli import main
from connector.config import NodeConfig, PeerConfig, SettlementConfig
from connector.config_reference import (
    END_MARKER,
    SECTIONS,
    START_MARKER,
    extract_block,
    render_reference,
    replace_block,
    type_name,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_the_generated_one() -> None:
    assert extract_block(README.read_text(encoding="utf-8")) == render_reference(), (
        "README.md's config reference is stale: run "
        "`.venv/bin/paychan config-reference --write README.md`"
    )


def test_every_yaml_key_has_a_row_with_a_description() -> None:
    reference = render_reference()
    for _, model in SECTIONS:
        for name, field in model.model_fields.items():
            if field.exclude:
                assert f"`{field.alias or name}`" not in reference
                continue
            assert field.description, f"{model.__name__}.{name} has no docstring"
            assert f"| `{field.alias or name}` |" in reference


def test_rows_carry_alias_type_limits_and_default() -> None:
    reference = render_reference()
    assert "| `settlementThreshold` | int (> 0) | `1000000` (1e6) |" in reference
    assert '| `ledgerSync` | "normal" or "full" | `normal` |' in reference
    assert "| `authToken` | secret string | **required** |" in reference
    assert "| `btpServerPort` | int (≥ 0, ≤ 65535) | **required** |" in reference
    # The treasury key is read from the environment, never a YAML key.
    assert "privateKey`" not in reference and "`privateKeyEnv`" in reference


def test_type_names() -> None:
    assert type_name(int | None) == "int or none"
    assert type_name(Literal["a", "b"]) == '"a" or "b"'
    assert type_name(list[PeerConfig]) == "list of section `peers[]`"
    assert type_name(SettlementConfig | None) == "section `settlement` or none"
    assert type_name(SecretStr) == "secret string"
    assert type_name(NodeConfig) == "section `(top level)`"


def test_write_replaces_only_the_marked_block(tmp_path: Path, capsys) -> None:
    target = tmp_path / "doc.md"
    target.write_text(f"# before\n{START_MARKER}\nold\n{END_MARKER}\nafter\n", encoding="utf-8")
    assert main(["config-reference", "--write", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert text.startswith(f"# before\n{START_MARKER}\n\n#### `(top level)`")
    assert text.endswith(f"{END_MARKER}\nafter\n")
    assert extract_block(text) == render_reference()
    assert replace_block(text, render_reference()) == text
    capsys.readouterr()


def test_write_without_markers_is_a_usage_error(tmp_path: Path, capsys) -> None:
    target = tmp_path / "doc.md"
    target.write_text("no markers here\n", encoding="utf-8")
    assert main(["config-reference", "--write", str(target)]) == 2
    assert target.read_text(encoding="utf-8") == "no markers here\n"
    assert "markers not found" in capsys.readouterr().err


def test_prints_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == render_reference()
