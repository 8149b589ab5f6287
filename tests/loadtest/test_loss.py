"""The tool must see real loss: a server keeping one message of history per channel cannot fill
the gap of a client that was away while many messages went out, so the resume answers
`recovered:false` (WS) / `event: recovery` (SSE) and the messages in between never arrive."""

from __future__ import annotations

import pytest

from herald.loadtest.report import EXIT_LOSS
from tests.e2e.server import HeraldProcess
from tests.loadtest.conftest import run_loadtest

N = 6


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_storm_against_a_one_message_history_reports_loss_and_fails(
    forgetful_herald: HeraldProcess, capsys: pytest.CaptureFixture[str], transport: str
) -> None:
    # 100 msg/s and 300 ms away: about 30 messages missed per client, only 1 kept by the server
    code, report = run_loadtest(
        capsys,
        "reconnect-storm",
        "--transport",
        transport,
        "--url",
        forgetful_herald.http,
        "--connections",
        str(N),
        "--rate",
        "100",
        "--duration",
        "1.5",
        "--storm-downtime",
        "0.3",
        "--settle",
        "0.5",
    )
    assert code == EXIT_LOSS
    assert report["exit_code"] == EXIT_LOSS and report["ok"] is False
    d, c = report["delivered"], report["connections"]
    assert c["resumed"] == N and c["unrecovered"] == N  # the server said it could not fill the gap
    assert d["lost"] >= N * 10, d
    assert d["lost"] == d["expected"] - d["received"]
    assert d["received"] == d["total"] and d["duplicated"] == 0 and d["out_of_order"] == 0


def test_server_disconnects_with_4008_while_publishing_fast_lose_messages(
    forgetful_herald: HeraldProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """POST /api/disconnect code 4008: the clients reconnect at once (contract) and resume, but
    at 400 msg/s more than one message goes out while they are away."""
    code, report = run_loadtest(
        capsys,
        "reconnect-storm",
        "--storm-via",
        "api",
        "--url",
        forgetful_herald.http,
        "--connections",
        str(N),
        "--rate",
        "400",
        "--duration",
        "1.5",
        "--settle",
        "0.5",
    )
    assert report["connections"]["close_codes"] == {"4008": N}
    assert report["connections"]["unrecovered"] >= 1
    assert report["delivered"]["lost"] > 0
    assert code == EXIT_LOSS
