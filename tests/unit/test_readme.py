"""README.md stays true: every option is documented, and the documented commands exist."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from herald.cli import _parser
from herald.core.config import NodeConfig

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_option_is_in_the_readme_configuration_table() -> None:
    for f in dataclasses.fields(NodeConfig):
        if f.metadata.get("cli", True) and f.name != "namespaces":
            assert f"`--{f.name.replace('_', '-')}`" in README, f"--{f.name} is missing from README.md"


def test_readme_commands_are_real_subcommands() -> None:
    subcommands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for command in ("dev", "node", "router", "control", "loadtest"):
        assert f"herald {command}" in README and command in subcommands
    assert "python -m pytest" in README and "python3 -m pytest" in (Path(__file__).parents[2] / ".ci/run").read_text()


def test_every_command_has_working_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`herald <command> --help` prints its options (argparse formats help texts: a stray % breaks it)."""
    for command in ("dev", "node", "router", "control", "drain"):
        with pytest.raises(SystemExit) as exit_:
            _parser().parse_args([command, "--help"])
        assert exit_.value.code == 0
        assert "--" in capsys.readouterr().out
