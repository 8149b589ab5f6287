"""The Redis boundary: only the shard transport holds a Redis client.

Everything above core/engine/redis/ speaks the engine's roles (core/engine/base.py); inside it,
the role modules hand commands to the transport (shards.py, with its connection class) and never
import redis themselves — so a Redis Cluster or Sentinel transport replaces one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "node", "router", "control", "herald", "loadtest")
TRANSPORT = {"core/engine/redis/shards.py", "core/engine/redis/connection.py"}
# The bench reads INFO commandstats of the servers it measures; it is not part of Herald.
MEASUREMENT = {"loadtest/bench/redis_commands.py"}


def _imports_redis(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "redis" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "redis":
            return True
    return False


def test_only_the_shard_transport_imports_redis() -> None:
    sources = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    assert len(sources) > 50  # the walk found the project
    importing = {p.relative_to(ROOT).as_posix() for p in sources if _imports_redis(p)}
    assert importing - MEASUREMENT == TRANSPORT


def test_the_role_modules_exist_and_stay_off_redis() -> None:
    roles = ["broker", "presence", "coordination", "inbox", "partitions", "engine", "scripts", "keys", "codec"]
    for name in roles:
        path = ROOT / "core" / "engine" / "redis" / f"{name}.py"
        assert path.is_file(), path
        assert not _imports_redis(path), f"{name}.py must reach Redis through shards.py"
