"""The drain scenario on a real cluster (redis-server, a router, two nodes): one node is drained
while publishing; its clients get the advisory, move to the other node and resume there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.conftest import Cluster
from tests.loadtest.conftest import run_loadtest

N = 8


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(shards=1, routers=1, nodes=2, partitions=8)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _targets(cluster: Cluster) -> list[str]:
    return [arg for node in cluster.nodes for arg in ("--url", node.http)]


def _assert_moved_without_loss(report: dict, closed_as: str) -> None:
    d, c = report["delivered"], report["connections"]
    assert (d["lost"], d["duplicated"], d["out_of_order"]) == (0, 0, 0), report
    assert d["expected"] == d["received"] == report["published"]["confirmed"] * N > 0
    assert c["close_codes"] == {closed_as: N // 2}  # the drained node's half of the clients
    assert c["reconnects"] == c["resumed"] == N // 2 and c["unrecovered"] == 0


def test_drain_through_the_admin_api_moves_clients_without_loss(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_loadtest(
        capsys, "drain", *_targets(cluster), "--connections", str(N), "--rate", "40", "--duration", "3"
    )
    assert code == 0, report
    _assert_moved_without_loss(report, "1012")
    (drain,) = report["drains"]
    assert drain["target"] == cluster.nodes[0].http and drain["via"] == "api" and drain["result"] == "HTTP 202"


def test_drain_by_sigterm_over_sse(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    first = cluster.nodes[0]
    code, report = run_loadtest(
        capsys,
        "drain",
        "--transport",
        "sse",
        *_targets(cluster),
        "--connections",
        str(N),
        "--rate",
        "40",
        "--duration",
        "3",
        "--drain-pid",
        str(first.proc.proc.pid),
    )
    assert code == 0, report
    _assert_moved_without_loss(report, "reconnect")
    assert report["drains"][0]["via"] == "signal" and report["drains"][0]["result"] == "SIGTERM sent"
    assert first.proc.wait(10) == 0  # drained, then exited
