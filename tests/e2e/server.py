"""Run `herald dev` / `herald node` as a real subprocess on an ephemeral port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import seconds

API_KEY = "dev-key"


@dataclass
class HeraldProcess:
    proc: subprocess.Popen[str]
    port: int
    log_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """A blocking HTTP call (for setup code); returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.http + path, data=data, method=method)
        if key is not None:
            req.add_header("Authorization", f"apikey {key}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=seconds(10)) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            payload, status = err.read(), err.code
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def output(self) -> str:
        return "".join(self.log_lines)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + seconds(timeout)
        while text not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in the server output")
            time.sleep(0.01)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=seconds(timeout))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=seconds(10))
        if self.reader is not None:
            self.reader.join(timeout=seconds(5))
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _drain_output(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def start_herald(
    *args: str, command: str = "dev", env: dict[str, str] | None = None, timeout: float = 15.0
) -> HeraldProcess:
    """Start herald on port 0, learn the port from its `node.started` log line, wait for /readyz."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    full_env.update({"PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    argv = [
        sys.executable,
        "-m",
        "herald",
        command,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-format",
        "json",
        *args,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    deadline = time.monotonic() + seconds(timeout)
    lines: list[str] = []
    port = None
    assert proc.stdout is not None
    while port is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("herald did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))
        line = proc.stdout.readline()
        lines.append(line)
        m = re.search(
            r'"event":"(?:node|router|control)\.started".*?"port":(\d+)|"port":(\d+).*?"event":"(?:node|router|control)\.started"',
            line,
        )
        if m:
            port = int(m.group(1) or m.group(2))
    server = HeraldProcess(proc, port, lines)
    # Keep reading the output so a chatty server never blocks on a full pipe.
    server.reader = threading.Thread(target=_drain_output, args=(proc, lines), daemon=True)
    server.reader.start()
    while True:
        try:
            with urllib.request.urlopen(server.http + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("herald never became ready")
        time.sleep(0.02)
    return server
