"""The `herald` process itself: startup messages, refusal without keys, secrets kept out of logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import websockets

from tests.conftest import make_token, seconds
from tests.e2e.clients import WsClient
from tests.e2e.server import start_herald


def run_herald(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(
        [sys.executable, "-m", "herald", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=seconds(20),
    )


def test_node_refuses_to_start_without_jwt_key_or_api_key() -> None:
    """Outside `herald dev`, a node with no JWT secret/key or no API key exits with a clear message."""
    no_jwt = run_herald("node", "--port", "0", "--api-key", "k")
    assert no_jwt.returncode == 2 and "no JWT key configured" in no_jwt.stderr
    no_key = run_herald("node", "--port", "0", env={"HERALD_JWT_SECRET": "s" * 32})
    assert no_key.returncode == 2 and "no API key configured" in no_key.stderr


def test_invalid_option_values_are_refused_with_the_option_name() -> None:
    result = run_herald("dev", "--port", "0", "--max-connections", "many")
    assert result.returncode == 2 and "--max-connections" in result.stderr


async def test_node_with_environment_configuration_serves_clients() -> None:
    """`herald node` configured only through HERALD_* variables accepts tokens signed with its secret."""
    secret = "n" * 40
    server = start_herald(command="node", env={"HERALD_JWT_SECRET": secret, "HERALD_API_KEY": "prod-key"})
    try:
        client = await WsClient.open(server.ws, "prod-user", secret=secret)
        assert client.connected["user"] == "prod-user"
        status, _ = server.api("POST", "/api/publish", {"channel": "news:p", "data": 1}, key="prod-key")
        assert status == 200
        status, _ = server.api("POST", "/api/publish", {"channel": "news:p", "data": 1}, key="dev-key")
        assert status == 401
        await client.close()
    finally:
        server.stop()


async def test_tokens_and_api_keys_never_appear_in_logs() -> None:
    """Connect with a token in the query string, fail auth, call the API: the log holds no secret."""
    server = start_herald("--log-level", "debug")
    token = make_token("secretive")
    try:
        client = await WsClient.open(server.ws, "secretive")
        await client.close()
        try:
            await websockets.connect(f"{server.ws}?token={token[:-4]}AAAA")
        except websockets.InvalidStatus:
            pass
        server.api("GET", "/api/info", key="wrong-key-123")
        server.api("GET", "/api/info")
    finally:
        server.terminate()
        server.wait()
        server.stop()
        output = server.output()
    log_lines = [line for line in output.splitlines() if line.startswith("{")]  # the dev banner is not a log
    events = [json.loads(line)["event"] for line in log_lines]
    assert "ws.connected" in events and "ws.closed" in events
    log_text = "\n".join(log_lines)
    for secret in (token, token.split(".")[2], "dev-key", "wrong-key-123", "dev-secret"):
        assert secret not in log_text


def test_dev_prints_urls_and_a_working_demo_token() -> None:
    """`herald dev` prints the demo page URL, the publish command and a demo token."""
    server = start_herald(env={})
    try:
        server.wait_for_output("demo token")
        banner = server.output()
        assert f"http://127.0.0.1:{server.port}/" in banner and "demo token" in banner
        token = banner.split("demo token")[1].split()[0]
        status, _ = server.api("GET", f"/events?token={token}&channel=bad%20name", key=None)
        assert status == 400  # the token was accepted; the channel name was not
    finally:
        server.stop()
