"""structlog setup: orjson JSON lines in production, a console renderer in development.

Event names are stable and dotted (`ws.connected`, `node.drain.started`); variable data goes in keys.
Tokens and API keys are never passed to a logger.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(json: bool = True, level: str = "info", *, cache: bool = True) -> None:
    lvl = _LEVELS.get(level.lower(), logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors = [*shared, structlog.processors.format_exc_info,
                      structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        # plain tracebacks: rich's would print local variables, which can hold keys and tokens
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                             exception_formatter=structlog.dev.plain_traceback)]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
