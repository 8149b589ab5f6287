"""The command line: help, usage errors, and a run against nothing."""

from __future__ import annotations

import socket

import pytest

from herald.cli import main as herald_main
from herald.loadtest.cli import main
from herald.loadtest.report import EXIT_FAILED, EXIT_USAGE
from tests.loadtest.conftest import run_loadtest


def test_help_lists_scenarios_options_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in (
        "fanout",
        "direct",
        "chat",
        "reconnect-storm",
        "drain",
        "--transport",
        "--url",
        "--api-url",
        "--api-key",
        "--jwt-secret",
        "--connections",
        "--rate",
        "--duration",
        "--payload-size",
        "--ramp-up",
        "--workers",
        "--json",
        "--plot",
        "--metrics-url",
        "exit status",
    ):
        assert word in out, word


def test_herald_cli_hands_its_arguments_to_the_loadtest(capsys: pytest.CaptureFixture[str]) -> None:
    assert herald_main(["loadtest", "fanout", "--help"]) == 0
    assert "usage: herald loadtest" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["nosuchscenario"],
        ["fanout", "--transport", "carrier-pigeon"],
        ["drain", "--url", "http://127.0.0.1:1"],
        ["fanout", "--connections", "0"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == EXIT_USAGE
    assert "herald loadtest" in capsys.readouterr().err


def test_nothing_listening_means_nothing_measured(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report = run_loadtest(
        capsys,
        "fanout",
        "--url",
        f"http://127.0.0.1:{port}",
        "--connections",
        "2",
        "--rate",
        "10",
        "--duration",
        "0.3",
        "--connect-timeout",
        "0.5",
    )
    assert code == EXIT_FAILED
    assert report["connections"]["subscribed_at_start"] == 0
    assert report["connections"]["never_connected"] == 2
    assert report["connections"]["connect_errors"].get("refused", 0) >= 2
    assert report["published"]["confirmed"] == 0
    assert report["server_metrics"][f"http://127.0.0.1:{port}/metrics"]["error"].startswith("unreachable")
