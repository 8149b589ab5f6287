"""The JavaScript/TypeScript client (clients/js, package `herald-client`) under the README's one
test command: its Node tests (`node --test`) against real `herald dev` processes and a real
cluster, its type tests, and the check that node/static/client.js is exactly its build.

The Node tests start and restart `herald dev` themselves (test/helpers.mjs, with this
interpreter); the cluster is started here (tests/cluster/conftest.py) and handed over in
HERALD_CLUSTER. Without `node` on PATH the module is skipped (CI installs it); the package's dev
dependencies are installed from its lockfile (`npm ci`) on first use.
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
    _dev_dependencies()
    full = {**os.environ, "HERALD_PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        [NODE, *args], cwd=PACKAGE, env=full, capture_output=True, text=True, timeout=seconds(timeout)
    )


def _dev_dependencies() -> None:
    """The package's dev dependencies (esbuild, typescript, ws, eventsource) from its lockfile, installed
    on first use so that the README's one test command works on a fresh clone."""
    if (PACKAGE / "node_modules" / "typescript").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"the JS client's dev dependencies are missing and npm is not installed: run `npm ci` in {PACKAGE}",
            pytrace=False,
        )
    out = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=seconds(300),
    )
    assert out.returncode == 0, f"npm ci in {PACKAGE} failed:\n{out.stderr[-4000:]}"


def _check(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout[-12000:] + "\n" + out.stderr[-4000:]


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


def test_node_client_in_a_cluster_survives_kill_9_and_drain(
    built: None, cluster_factory: Callable[..., Cluster]
) -> None:
    cluster = cluster_factory(shards=1, routers=1, nodes=3)
    spec = {
        "api": cluster.routers[0].http,
        "nodes": [{"id": n.id, "http": n.http, "pid": n.proc.proc.pid} for n in cluster.nodes],
    }
    _check(
        _node(
            "--test",
            "--test-reporter=tap",
            "test/cluster.test.mjs",
            env={"HERALD_CLUSTER": json.dumps(spec)},
            timeout=240,
        )
    )


_SMOKE = """
import { HeraldClient } from "herald-client";
import WebSocket from "%(ws)s";
const [url, token] = process.argv.slice(2);
const client = new HeraldClient({ url, token, websocket: WebSocket });
const sub = client.subscribe("room:packed");
client.connect();
await sub;
const got = new Promise((resolve) => sub.on("message", resolve));
await fetch(url + "/api/publish", { method: "POST", headers: { Authorization: "apikey dev-key" },
                                   body: JSON.stringify({ channel: "room:packed", data: { ok: 1 } }) });
console.log(JSON.stringify((await got).data));
client.close();
"""

_APP_TS = """
import { HeraldClient, type Message } from "herald-client";
const client = new HeraldClient({ url: "http://localhost:8000", token: "t" });
const sub = client.subscribe<{ ok: number }>("room:packed");
sub.on("message", (m: Message<{ ok: number }>) => console.log(m.data.ok + 1));
client.connect();
"""


def test_npm_pack_installs_into_an_empty_project_and_works_there(built: None, tmp_path: Path) -> None:
    """The tarball `npm pack` makes installs (offline: no dependencies) into an empty project,
    whose TypeScript type-checks against the shipped .d.ts and whose Node script talks to herald."""
    from tests.conftest import make_token
    from tests.e2e.server import start_herald

    npm = shutil.which("npm")
    assert npm is not None, "npm is missing next to node"
    out = subprocess.run(
        [npm, "pack", "--pack-destination", str(tmp_path), "--loglevel=error"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=seconds(120),
    )
    assert out.returncode == 0, out.stderr
    (tarball,) = tmp_path.glob("herald-client-*.tgz")
    project = tmp_path / "app"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "type": "module"}))
    out = subprocess.run(
        [npm, "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", str(tarball)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=seconds(120),
    )
    assert out.returncode == 0, out.stderr
    installed = json.loads((project / "node_modules" / "herald-client" / "package.json").read_text())
    assert not installed.get("dependencies"), "the package has no runtime dependencies"

    (project / "app.ts").write_text(_APP_TS)
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    _check(
        _node(
            str(tsc),
            "--strict",
            "--noEmit",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "--lib",
            "es2022,dom",
            str(project / "app.ts"),
        )
    )

    ws = (PACKAGE / "node_modules" / "ws" / "wrapper.mjs").as_uri()
    (project / "smoke.mjs").write_text(_SMOKE % {"ws": ws})
    server = start_herald()
    try:
        assert NODE is not None
        out = subprocess.run(
            [NODE, "smoke.mjs", server.http, make_token("packed")],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=seconds(60),
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == '{"ok":1}'
