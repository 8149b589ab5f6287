"""Fixtures for `herald loadtest` tests: real `herald dev` subprocesses, and the CLI run in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from herald.loadtest.cli import main
from tests.e2e.server import HeraldProcess, start_herald


@pytest.fixture(scope="module")
def herald() -> Iterator[HeraldProcess]:
    """One `herald dev` shared by a test module (every run uses its own channel and users)."""
    server = start_herald()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def forgetful_herald() -> Iterator[HeraldProcess]:
    """`herald dev` keeping one message of history per channel: a resume after a longer gap
    cannot be filled, so the messages in between are really lost."""
    server = start_herald("--history-size", "1")
    yield server
    server.stop()


def run_loadtest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """`herald loadtest ARGV --json` in this process: (exit code, the parsed report)."""
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)
