"""The JavaScript/TypeScript client (clients/js, package `herald-client`) under the README's one
test command: its Node tests (`node --test`) against real `herald dev` processes and a real
cluster, its type tests, and the check that node/static/client.js is exactly its build.

The Node tests start and restart `herald dev` themselves (test/helpers.mjs, with this
interpreter); the cluster is started here (tests/cluster/conftest.py) and handed over in
HERALD_CLUSTER. Without `node` on PATH the module is skipped (CI has it); with node but without
the package's dev dependencies it fails, saying to run `npm ci` in clients/js.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import seconds

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the JS client tests need Node >= 20")


def _node(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    if not (PACKAGE / "node_modules" / "typescript").is_dir():
        pytest.fail(f"the JS client's dev dependencies are missing: run `npm ci` in {PACKAGE}", pytrace=False)
    full = {**os.environ, "HERALD_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([NODE, *args], cwd=PACKAGE, env=full, capture_output=True, text=True,
                          timeout=seconds(timeout))


def _check(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, (out.stdout[-12000:] + "\n" + out.stderr[-4000:])


@pytest.fixture(scope="module")
def built() -> None:
    """dist/: the package's ES module and its .d.ts files (what `npm pack` ships)."""
    _check(_node("build.mjs"))


def test_node_static_client_js_is_the_build_of_the_package() -> None:
    _check(_node("build.mjs", "--check"))


def test_the_public_types_accept_the_examples_and_refuse_the_wrong_uses(built: None) -> None:
    _check(_node("types-test/run.mjs"))


def test_node_client_against_herald_dev(built: None) -> None:
    _check(_node("--test", "--test-reporter=tap", "test/dev.test.mjs", timeout=240))


def test_node_client_in_a_cluster_survives_kill_9_and_drain(built: None,
                                                            cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(shards=1, routers=1, nodes=3)
    spec = {
        "api": cluster.routers[0].http,
        "nodes": [{"id": n.id, "http": n.http, "pid": n.proc.proc.pid} for n in cluster.nodes],
    }
    _check(_node("--test", "--test-reporter=tap", "test/cluster.test.mjs",
                 env={"HERALD_CLUSTER": json.dumps(spec)}, timeout=240))
