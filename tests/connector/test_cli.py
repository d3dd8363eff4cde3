"""`paychan --help` and each command's `--help`: complete (a description with its exit codes,
help on every argument) and within an 80-column terminal."""

from __future__ import annotations

import argparse

import pytest

from connector.cli import build_parser, main

COMMANDS = sorted(
    name
    for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    if isinstance(action, argparse._SubParsersAction)
    for name in action.choices
)


def subparser(name: str) -> argparse.ArgumentParser:
    for action in build_parser()._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_operator_command_is_there() -> None:
    expected = {"demo", "connector", "worker", "deploy", "fund", "channels", "retry", "cancel"}
    assert expected | {"send", "config-reference"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_complete_and_fits_80_columns(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = subparser(command)
    assert parser.description, f"{command}: no description"
    assert "Exit" in parser.description or "exit" in parser.description, (
        f"{command}: the description does not give its exit codes"
    )
    for action in parser._actions:
        assert action.help, f"{command}: {action.dest} has no help"
    text = help_text(capsys, command)
    assert text.startswith(f"usage: paychan {command}")
    assert max(len(line) for line in text.splitlines()) <= 80


def test_top_level_help_lists_commands_and_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(capsys)
    assert "Exit codes: 0 ok, 2 usage or config error, 1 runtime failure." in " ".join(text.split())
    for command in COMMANDS:
        assert command in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["nonsense"], ["send", "g.x", "1"], ["retry", "--config"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
    capsys.readouterr()
