"""`herald dev | node | router | control | loadtest | drain` — the command line.

`herald dev` runs everything in one process on the in-memory engine with development defaults
(secret `dev-secret`, API key `dev-key`, console logs) and prints its URLs and a demo token.
`herald node` runs an edge node and `herald router` a router, with production defaults: they refuse
to start without a JWT key and an API key. With `--redis URL` (repeated per shard) nodes use the
RedisEngine; `herald dev --redis URL` runs a node, a router and the control plane in one process.
`herald control` runs the control plane (admin API, dashboard). `herald loadtest` drives load at
nodes. `herald drain` asks the node on this host to drain and waits for it (a Kubernetes preStop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jwt

from herald import __version__
from herald.core.config import DEV_API_KEY, DEV_SECRET, NodeConfig, add_node_options, load_node_config
from herald.core.engine.base import Engine
from herald.core.engine.memory import MemoryEngine
from herald.core.logging import configure_logging
from herald.core.protocol.errors import ConfigError

__all__ = ["main"]

DEV_DEFAULTS = {
    "host": "127.0.0.1",
    "jwt_secret": DEV_SECRET,
    "api_key": DEV_API_KEY,
    "log_format": "console",
    "drain_window": 2.0,
    "namespaces": {"room": {"join_leave": True}},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description="Herald realtime push broker")
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="everything in one process, in-memory engine, demo page")
    add_node_options(dev)
    node = sub.add_parser("node", help="an edge node (WebSocket, SSE, server API)")
    add_node_options(node)
    router = sub.add_parser("router", help="a router: partition logs to node inboxes, server API (needs --redis)")
    add_node_options(router)
    control = sub.add_parser(
        "control", help="the control plane: membership, drain, rebalancing, admin API, dashboard (needs --redis)"
    )
    add_node_options(control)
    loadtest = sub.add_parser("loadtest", help="drive load at Herald nodes and report loss and latency", add_help=False)
    loadtest.add_argument("args", nargs=argparse.REMAINDER)
    drain = sub.add_parser("drain", help="drain the node at --url and wait until it is empty (preStop hook)")
    drain.add_argument("--url", default="http://127.0.0.1:8000", help="the node's base URL")
    drain.add_argument("--api-key", default=None, help="API key (default: $HERALD_API_KEY)")
    drain.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    return parser


def _engine(config: NodeConfig) -> Engine:
    options = config.namespace_resolver()
    if not config.redis:
        return MemoryEngine(options)
    from herald.core.engine.redis import RedisEngine

    return RedisEngine(config.redis, partitions=config.partitions, options=options)


def _print_banner(config: NodeConfig, port: int) -> None:
    from herald.node.app import demo_token

    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    base = f"http://{host}:{port}"
    token = demo_token(config, "demo") if config.jwt_algorithm == "HS256" and config.jwt_secret else None
    store = "Redis: " + ", ".join(config.redis) if config.redis else "in-memory engine"
    lines = [
        f"Herald {__version__} (dev, {store}) is up",
        f"  demo page   {base}/",
        f"  WebSocket   ws://{host}:{port}/ws",
        f"  SSE         {base}/events?channel=news:updates&token=<token>",
        f"  publish     curl -X POST {base}/api/publish -H 'Authorization: apikey {config.api_key}' "
        '-d \'{"channel":"news:updates","data":{"text":"hello"}}\'',
        f"  metrics     {base}/metrics",
        f"  dashboard   {base}/dashboard (API key {config.api_key})",
    ]
    if token:
        lines.append(f"  demo token  {token}")
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:  # its own parser: options may come before the scenario
        try:
            from herald.loadtest.cli import main as loadtest_main
        except ImportError as exc:
            print(
                f"herald loadtest needs its extras ({exc.name} is missing): pip install 'herald[loadtest]'",
                file=sys.stderr,
            )
            return 2
        return loadtest_main(argv[1:])
    args = _parser().parse_args(argv)
    command = args.command
    del args.command
    if command == "drain":
        from herald.node.drain import drain_command

        return drain_command(args.url, args.api_key, args.timeout)
    try:
        if command == "dev":
            config = load_node_config(args, defaults={**DEV_DEFAULTS, "dev": True})
        elif command in ("router", "control"):
            config = load_node_config(args, defaults={"port": 8001 if command == "router" else 8002})
            if not config.redis:
                raise ConfigError(f"{command}: at least one --redis URL is required")
        else:
            config = load_node_config(args)
        engine = _engine(config)
    except ConfigError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    configure_logging(json=config.log_format == "json", level=config.log_level)
    # A broker keeps many long-lived objects (connections, sessions); the default GC thresholds make
    # the collector walk them all very often. Collect young objects less often, and freeze what
    # exists at startup out of the collector's way.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    # PyJWT warns on every call with a short HMAC key; Authenticator logs it once instead.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

    if command == "router":
        from herald.router.server import serve_router

        main_coro = serve_router(config, engine)  # type: ignore[arg-type]
    elif command == "control":
        from herald.control.server import serve_control

        main_coro = serve_control(config, engine)
    else:
        from herald.node.server import serve_node

        services: list[Any] = []
        control = None
        if command == "dev":
            from herald.control.app import control_settings
            from herald.control.service import Control

            if config.redis:
                from herald.core.engine.redis import RedisEngine
                from herald.router.service import Router

                assert isinstance(engine, RedisEngine)
                services.append(Router(engine.log, engine, lease_seconds=config.lease_seconds))
            control = Control(engine, control_settings(config))
            services.append(control)
        on_ready = (lambda port: _print_banner(config, port)) if command == "dev" else None
        main_coro = serve_node(config, engine, on_ready, services, control)
    runner: Any
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is not available on Windows
        runner = asyncio.run
    try:
        runner(main_coro)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"herald: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
