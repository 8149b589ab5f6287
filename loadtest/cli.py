"""`herald loadtest SCENARIO [options]`: drive load at Herald nodes and report loss and latency."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console

from herald.core.config import DEV_API_KEY, DEV_SECRET

from .config import SCENARIOS, ConfigError, LoadConfig
from .report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, build_report, render_text
from .runner import RunError, run_load

__all__ = ["main", "build_parser"]

_EPILOG = """\
scenarios:
  fanout           one channel, every client subscribed; --rate publications/s through the server API
  direct           each publication goes to one user's personal channel user:<id> (round robin),
                   via POST /api/publish or (--direct-via notify) POST /notify
  chat             client i sends to client i+1 over its own WebSocket (`chat`); SSE clients cannot
                   send, so their messages go through the server API as event `chat`
  reconnect-storm  fanout (or direct: --storm-traffic), and --storms times the first --storm-size
                   clients drop at once and resume (WS: subscribe with since; SSE: Last-Event-ID)
  drain            fanout over several --url nodes while they are drained one after the other
                   (POST <url>/admin/drain, or SIGTERM to --drain-pid); clients move and resume
                   (the nodes must share their history: one Redis-backed cluster)

Each message's data carries its publisher, a sequence number and the send time, so receivers
measure end-to-end latency and count lost, duplicated and out-of-order messages per channel.
Publishing starts once every client is subscribed; a client that does not get everything
published after that (and confirmed by the server) counts the rest as lost.

exit status:
  0 no loss, no duplicates, in order   1 messages lost   2 bad usage
  3 duplicates or out-of-order only    4 nothing measured (no client, no publication, worker failed)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herald loadtest",
        description="Drive load at Herald nodes and report "
        "delivery rate, end-to-end latency, and lost / duplicated / out-of-order messages.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=SCENARIOS, help="what to simulate (see below)")
    p.add_argument("--transport", choices=("ws", "sse"), default="ws", help="client transport (default ws)")
    p.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help="a target node (repeatable; clients are spread over them). Default http://127.0.0.1:8000",
    )
    p.add_argument("--api-url", default="", help="where to publish (server API); default the first --url")
    p.add_argument(
        "--api-key",
        default=os.environ.get("HERALD_API_KEY", DEV_API_KEY),
        help="server API key (default $HERALD_API_KEY or dev-key)",
    )
    p.add_argument(
        "--jwt-secret",
        default=os.environ.get("HERALD_JWT_SECRET", DEV_SECRET),
        help="HS256 secret to mint client tokens (default $HERALD_JWT_SECRET or dev-secret)",
    )
    g = p.add_argument_group("load")
    g.add_argument("--connections", type=int, default=100, help="simulated clients (default 100)")
    g.add_argument("--rate", type=float, default=10.0, help="messages published per second, in all (default 10)")
    g.add_argument("--duration", type=float, default=10.0, help="seconds of publishing (default 10)")
    g.add_argument("--payload-size", type=int, default=100, help="bytes of message data, about (default 100)")
    g.add_argument("--ramp-up", type=float, default=0.0, help="seconds to spread the connects over (default 0)")
    g.add_argument("--workers", type=int, default=1, help="processes sharing clients and publishing (default 1)")
    g.add_argument("--codec", choices=("json", "msgpack"), default="json", help="WebSocket subprotocol herald.<codec>")
    g.add_argument("--channel", default="", help="the fan-out channel (default loadtest:<run-id>)")
    g.add_argument(
        "--direct-via",
        choices=("publish", "notify"),
        default="publish",
        help="direct: POST /api/publish to user:<id>, or POST /notify",
    )
    g.add_argument(
        "--batch", type=int, default=1, help="publications per request; >1 uses POST /api/publish/batch (default 1)"
    )
    g.add_argument("--publish-concurrency", type=int, default=32, help="publish requests in flight per worker")
    g.add_argument("--connect-concurrency", type=int, default=64, help="connects in flight per worker")
    g.add_argument("--connect-timeout", type=float, default=10.0, help="seconds per connection attempt")
    g.add_argument("--max-reconnects", type=int, default=50, help="reconnect attempts per client over the run")
    g.add_argument("--seed", type=int, default=1, help="seed of the clients' jitter")
    g.add_argument("--run-id", default=None, help="names users lt<run-id>-<i> (default random)")
    s = p.add_argument_group("reconnect-storm and drain")
    s.add_argument("--storms", type=int, default=1, help="storms, evenly spaced over --duration (default 1)")
    s.add_argument("--storm-size", type=int, default=0, help="clients dropped per storm (default all)")
    s.add_argument("--storm-downtime", type=float, default=0.0, help="seconds dropped clients stay away")
    s.add_argument(
        "--storm-via",
        choices=("client", "api"),
        default="client",
        help="client: cut the sockets; api: POST /api/disconnect with code 4008",
    )
    s.add_argument(
        "--storm-traffic",
        choices=("fanout", "direct"),
        default="fanout",
        help="reconnect-storm: publish to the fan-out channel, or to personal channels as direct does",
    )
    s.add_argument(
        "--drain-pid",
        type=int,
        action="append",
        dest="drain_pids",
        default=[],
        metavar="PID",
        help="drain: SIGTERM this PID instead of POST /admin/drain (repeatable, in --url order)",
    )
    s.add_argument(
        "--drain-count",
        type=int,
        default=0,
        help="drain: how many targets to drain, in --url order (default all but the last)",
    )
    e = p.add_argument_group("end of run")
    e.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="after publishing, stop waiting once nothing arrived for this long (default 2)",
    )
    e.add_argument(
        "--grace",
        type=float,
        default=15.0,
        help="after publishing, wait at most this long for missing messages (default 15)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as JSON (no live progress)")
    o.add_argument("--plot", metavar="FILE.png", help="plot latency and throughput over time (needs matplotlib)")
    o.add_argument(
        "--metrics-url",
        action="append",
        dest="metrics_urls",
        default=[],
        metavar="URL",
        help="Prometheus endpoint to snapshot (repeatable; default each target's /metrics)",
    )
    o.add_argument("--no-progress", action="store_true", help="no live progress even on a terminal")
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    kw: dict[str, Any] = {
        "scenario": args.scenario,
        "transport": args.transport,
        "targets": tuple(args.urls or ("http://127.0.0.1:8000",)),
        "api_url": args.api_url,
        "api_key": args.api_key,
        "jwt_secret": args.jwt_secret,
        "connections": args.connections,
        "rate": args.rate,
        "duration": args.duration,
        "payload_size": args.payload_size,
        "ramp_up": args.ramp_up,
        "workers": args.workers,
        "codec": args.codec,
        "channel": args.channel,
        "direct_via": args.direct_via,
        "batch": args.batch,
        "publish_concurrency": args.publish_concurrency,
        "connect_concurrency": args.connect_concurrency,
        "connect_timeout": args.connect_timeout,
        "max_reconnects": args.max_reconnects,
        "seed": args.seed,
        "storms": args.storms,
        "storm_size": args.storm_size,
        "storm_downtime": args.storm_downtime,
        "storm_via": args.storm_via,
        "storm_traffic": args.storm_traffic,
        "drain_pids": tuple(args.drain_pids),
        "drain_count": args.drain_count,
        "settle": args.settle,
        "grace": args.grace,
        "metrics_urls": tuple(args.metrics_urls),
    }
    if args.run_id:
        kw["run_id"] = args.run_id
    return LoadConfig(**kw)


async def _run(cfg: LoadConfig, progress_console: Console | None) -> dict[str, Any]:
    if progress_console is None:
        return build_report(await run_load(cfg))
    from .progress import LiveProgress

    with LiveProgress(cfg, progress_console) as live:
        outcome = await run_load(cfg, live.update)
    return build_report(outcome)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"herald loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    err = Console(stderr=True)
    live = None if args.json or args.no_progress or not err.is_terminal else err
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        pass
    try:
        report = runner(_run(cfg, live))
    except KeyboardInterrupt:
        print("herald loadtest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunError as exc:
        print(f"herald loadtest: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.plot:
        try:
            from .plot import plot_timeline

            plot_timeline(report, args.plot)
        except ImportError:
            print("herald loadtest: --plot needs matplotlib (pip install 'herald[loadtest]')", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    else:
        out = Console()
        render_text(report, out if out.is_terminal else Console(width=120))
    return int(report["exit_code"])
