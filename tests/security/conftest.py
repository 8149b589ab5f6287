"""Hostile clients against real `herald` processes (issue 16). Each server here gets short
deadlines on its command line, so that the tests that wait for one stay short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import HeraldProcess, start_herald

SECRET = "dev-secret"
API_KEY = "dev-key"
#: The deadlines of the `node` fixture (seconds).
HEAD_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 30.0


def node_args(*extra: str) -> tuple[str, ...]:
    return ("--jwt-secret", SECRET, "--api-key", API_KEY, *extra)


@pytest.fixture(scope="module")
def node() -> Iterator[HeraldProcess]:
    """`herald node` (memory engine) with a 1 s head deadline and a long keep-alive, so that a
    later request's head deadline can be told apart from the keep-alive timeout."""
    server = start_herald(
        *node_args("--head-timeout", str(HEAD_TIMEOUT), "--keepalive-timeout", str(KEEPALIVE_TIMEOUT)), command="node"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def default_node() -> Iterator[HeraldProcess]:
    """`herald node` with default limits."""
    server = start_herald(*node_args(), command="node")
    yield server
    server.stop()
