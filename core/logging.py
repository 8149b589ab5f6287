"""structlog setup: orjson JSON lines in production, a console renderer in development.

Event names are stable and dotted (`ws.connected`, `node.drain.started`); variable data goes in keys.
Tokens and API keys are never passed to a logger, and in case one is anyway (a library quoting a
request line in an exception, a header in a traceback) `redact` removes them from every event:
bearer tokens, `apikey` values, `token=` values, cookies, anything shaped like a JWT, and the
values of keys named like credentials.

Standard-library logging (aiohttp, asyncio, redis, warnings) goes through the same processors
(`structlog.stdlib.ProcessorFormatter`), so with `--log-format json` every line on stderr is one
JSON object, whichever library wrote it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from structlog.typing import Processor

__all__ = ["configure_logging", "redact", "scrub", "REDACTED"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

REDACTED = "[redacted]"
#: Credentials in free text. A value ends at whitespace, a quote, a backslash (an escaped CR/LF in
#: a bytes repr) or a separator; over-redacting a log line costs nothing.
_SECRETS = re.compile(
    r"(?i)(bearer\s+)[^\s,;'\"\\]+"
    r"|(apikey\s+)[^\s,;'\"\\]+"
    r"|(token=)[^&\s,;'\"\\]+"
    r"|((?:set-)?cookie:\s*)[^\r\n'\"\\]+"
    r"|(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.?[A-Za-z0-9_-]*"
)
#: Keys whose values are never logged, whatever they hold.
_SECRET_KEYS = frozenset(
    {
        "token",
        "authorization",
        "cookie",
        "api_key",
        "apikey",
        "password",
        "secret",
        "jwt_secret",
        "refresh_token",
        "access_token",
    }
)


def _replace(m: re.Match[str]) -> str:
    prefix = m.group(1) or m.group(2) or m.group(3) or m.group(4)
    return (prefix or "") + REDACTED


def scrub(text: str) -> str:
    """`text` with every credential in it replaced by `[redacted]`."""
    return _SECRETS.sub(_replace, text)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if depth < 3:
        if isinstance(value, dict):
            return {k: REDACTED if str(k).lower() in _SECRET_KEYS else _clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_clean(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return scrub(repr(value))
    return value


def redact(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: no credential leaves in any value of any event (run it after
    `format_exc_info`, so that tracebacks are covered too)."""
    for key, value in event_dict.items():
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            if value:
                event_dict[key] = _SECRETS.sub(_replace, value)
        elif not isinstance(value, (int, float, bool)) and value is not None:
            event_dict[key] = _clean(value)
    return event_dict


def _json_str(obj: Any, **kw: Any) -> str:
    return orjson.dumps(obj, default=repr).decode()


def configure_logging(json: bool = True, level: str = "info", *, cache: bool = True) -> None:
    lvl = _LEVELS.get(level.lower(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # format_exc_info in both modes: a traceback becomes text before `redact` sees the event.
    tail: list[Processor] = [structlog.processors.format_exc_info, redact]
    stdlib_renderer: Processor
    if json:
        processors: list[Processor] = [*shared, *tail, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
        stdlib_renderer = structlog.processors.JSONRenderer(serializer=_json_str)
    else:
        # plain tracebacks: rich's would print local variables, which can hold keys and tokens
        console = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        processors = [*shared, *tail, console]
        factory = structlog.PrintLoggerFactory(sys.stderr)
        stdlib_renderer = console
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    # Everything written through the standard library: the same pipeline, the same stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, stdlib_renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
    logging.captureWarnings(True)
