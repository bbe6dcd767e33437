"""The ``h2a`` entry point: every listed command resolves, and help needs no heavy import."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from services.cli import _COMMANDS, main


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_listed_command_resolves_and_has_help(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_commands_without_importing_them() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from services.cli import main; "
        "out = CliRunner().invoke(main, ['--help']).output; "
        "assert all(name in out for name in "
        f"{sorted(_COMMANDS)!r}); "
        "print(sorted(m for m in ('torch', 'kfp', 'ultralytics') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
