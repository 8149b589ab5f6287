"""Fixtures for the headless-browser tests: Debian chromium driven by the sync Playwright API.

The browser tests never skip: a missing chromium or playwright is a failure that says how to
install it. `herald dev` runs as a real subprocess (tests.e2e.server); its log is drained by a
thread so a chatty server can never block on a full pipe, and is printed when a test fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import seconds
from tests.e2e.server import HeraldProcess, start_herald

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Playwright timeouts are in milliseconds; every wait in these tests is bounded by one of these.
EXPECT_MS = seconds(10) * 1000
ACTION_MS = seconds(10) * 1000


def _require_browser() -> Any:
    """The `playwright.sync_api` module, or a test failure saying what to install."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian chromium (apt-get install -y chromium)",
            pytrace=False,
        )
    try:
        import playwright.sync_api as sync_api
    except ImportError as exc:
        pytest.fail(
            f"the Python playwright package is missing ({exc}): pip install playwright "
            "(the browser itself comes from apt-get install -y chromium; do not run `playwright install`)",
            pytrace=False,
        )
    return sync_api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module (module scope keeps Playwright's own event loop
    from outliving the module into pytest-asyncio tests)."""
    sync_api = _require_browser()
    sync_api.expect.set_options(timeout=EXPECT_MS)
    pw = sync_api.sync_playwright().start()
    try:
        try:
            b = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=seconds(30) * 1000
            )
        except Exception as exc:
            pytest.fail(
                f"could not launch {CHROMIUM}: {exc}\n(apt-get install -y chromium; pip install playwright)",
                pytrace=False,
            )
        yield b
        b.close()
    finally:
        pw.stop()


class PageProblems(list[str]):
    """Uncaught page errors and console errors, collected from every page a test opens."""

    def watch(self, page: Any, name: str) -> Any:
        page.set_default_timeout(ACTION_MS)
        page.on("pageerror", lambda err: self.append(f"{name}: uncaught {err}"))
        page.on("console", lambda msg: self._console(name, msg))
        return page

    def _console(self, name: str, msg: Any) -> None:
        url = (msg.location or {}).get("url", "")
        if msg.type == "error" and not url.endswith("/favicon.ico"):  # the demo has no icon: a harmless 404
            self.append(f"{name}: console: {msg.text} ({url})")


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """`new_page(name)` opens a page in a browser context of its own (separate cookies/storage)."""
    contexts: list[Any] = []
    problems = PageProblems()

    def open_page(name: str = "page") -> Any:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        contexts.append(ctx)
        return problems.watch(ctx.new_page(), name)

    open_page.problems = problems  # type: ignore[attr-defined]
    yield open_page
    for ctx in contexts:
        try:
            ctx.close()
        except Exception:
            pass


class Servers:
    """Starts `herald dev` subprocesses, drains their logs, and stops them all at teardown."""

    def __init__(self) -> None:
        self.started: list[tuple[HeraldProcess, threading.Thread]] = []

    def start(self, *args: str) -> HeraldProcess:
        server = start_herald(*args)
        reader = threading.Thread(target=self._drain, args=(server,), daemon=True, name=f"herald-log-{server.port}")
        reader.start()
        self.started.append((server, reader))
        return server

    @staticmethod
    def _drain(server: HeraldProcess) -> None:
        assert server.proc.stdout is not None
        for line in server.proc.stdout:
            server.log_lines.append(line)

    def stop(self, server: HeraldProcess) -> None:
        """Kill the process (no drain: clients see the connection drop) and reap its log reader."""
        for s, reader in self.started:
            if s is server:
                if s.proc.poll() is None:
                    s.proc.kill()
                s.proc.wait(timeout=seconds(10))
                reader.join(timeout=seconds(10))  # EOF once the process is gone
                s.stop()  # closes stdout
                return
        raise ValueError("not a server of this fixture")

    def restart_on_same_port(self, server: HeraldProcess) -> HeraldProcess:
        """Kill `server` and start a new `herald dev` on its port (a new in-memory engine: new epoch)."""
        port = server.port
        self.stop(server)
        new = self.start("--port", str(port))  # argparse keeps the last --port
        assert new.port == port
        return new

    def logs(self) -> str:
        return "".join(line for s, _ in self.started for line in s.log_lines)

    def stop_all(self) -> None:
        for s, _reader in self.started:
            if s.proc.poll() is None or not (s.proc.stdout is None or s.proc.stdout.closed):
                self.stop(s)


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    srv = Servers()
    yield srv
    srv.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("---- herald logs ----\n" + srv.logs()[-20000:])


@pytest.fixture
def herald(servers: Servers) -> HeraldProcess:
    """A `herald dev` of this test's own (tests here restart or disconnect it)."""
    return servers.start()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
