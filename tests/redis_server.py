"""Real Redis servers for tests: the local `redis-server` binary on an ephemeral port (never the
shared default port, never an in-process fake). A testcontainers path for machines with a Docker
engine is not written yet: these machines have none to verify it on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import redis

from tests.conftest import seconds

INSTALL_HINT = "Redis tests need a Redis server binary: apt-get install -y redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes] | None
    dir: str
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + seconds(10)
        while True:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} never answered PING") from None
                time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: the data not persisted is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=seconds(10))

    def restart(self) -> None:
        self.kill()
        self.proc = _spawn(self.port, self.dir, self.args)
        self.wait_ready()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _spawn(port: int, workdir: str, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "no",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_redis(*args: str) -> RedisServer:
    """A fresh redis-server on a free port; extra args e.g. ("--appendonly", "yes")."""
    if shutil.which("redis-server") is None:
        raise RuntimeError(INSTALL_HINT)
    workdir = tempfile.mkdtemp(prefix="herald-redis-")
    port = free_port()
    server = RedisServer(port, _spawn(port, workdir, args), workdir, args)
    server.wait_ready()
    return server
