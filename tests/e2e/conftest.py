from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import HeraldProcess, start_herald


@pytest.fixture(scope="module")
def herald() -> Iterator[HeraldProcess]:
    """One `herald dev` subprocess shared by a test module."""
    server = start_herald()
    yield server
    server.stop()


@pytest.fixture
def fresh_herald() -> Iterator[HeraldProcess]:
    """A `herald dev` subprocess of its own, for tests that stop or overload it."""
    server = start_herald()
    yield server
    server.stop()
