"""Every command's --help shows all of its text (issue 11 item 11)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from han_ota.cli import _mount, app


def _commands() -> Iterator[tuple[list[str], Any]]:
    _mount()
    root = typer.main.get_command(app)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(root, [])


COMMANDS = list(_commands())


def test_the_tree_is_whole() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"push", "run", "image inspect", "gbcs verify", "radio detect", "emulate znp", "config check", "cbke ca", "cbke issue", "cbke inspect", "cbke derive"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_keeps_every_word(path: list[str], cmd: Any) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "<bool>" not in out  # flags take no value
    assert "╭" not in out  # no rich panels: they swallowed bracketed text
    flat = " ".join(out.split())
    for param in cmd.params:
        text = getattr(param, "help", None)
        if param.name == "help":
            continue
        assert text, f"{' '.join(path)}: {param.name} has no help"
        # Click wraps at spaces and after hyphens; compare with those breaks undone.
        assert " ".join(text.split()).replace("- ", "-") in flat.replace("- ", "-"), f"{' '.join(path)} --{param.name}: help text lost"
