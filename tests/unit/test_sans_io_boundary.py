"""The protocol core is sans-I/O: importing it pulls in no event loop, HTTP server or Redis client."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import importlib, pkgutil, sys
import herald.core.protocol as pkg
names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
for name in names:
    importlib.import_module("herald.core.protocol." + name)
expected = {"envelope", "codec", "session", "sse", "frames", "ratelimit", "closecodes", "errors"}
missing = expected - set(names)
assert not missing, f"modules not found: {missing}"
leaked = sorted(m for m in ("asyncio", "aiohttp", "redis") if m in sys.modules)
print(",".join(leaked))
"""


def test_importing_the_protocol_package_loads_no_asyncio_aiohttp_or_redis() -> None:
    """Every module of herald.core.protocol imports without asyncio, aiohttp or redis in sys.modules."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"I/O libraries imported by core.protocol: {proc.stdout.strip()}"


def test_the_control_planes_view_and_planner_are_pure() -> None:
    """control/view.py and control/rebalance.py decide from data and a clock passed in: importing
    them loads no event loop, HTTP server or Redis client (the service does the I/O)."""
    probe = (
        "import sys, herald.control.view, herald.control.rebalance\n"
        "print(','.join(sorted(m for m in ('asyncio', 'aiohttp', 'redis') if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", (
        f"I/O libraries imported by the control plane's pure modules: {proc.stdout.strip()}"
    )
