"""Run a control-plane replica until SIGTERM/SIGINT; stopping gives up the leader lease at once."""

from __future__ import annotations

from herald.core.config import NodeConfig
from herald.core.engine.base import Engine
from herald.core.web.heads import HttpLimits
from herald.core.web.serve import serve_until_signal

from .app import CONTROL, build_control_app

__all__ = ["serve_control"]


async def serve_control(config: NodeConfig, engine: Engine) -> None:
    app = build_control_app(config, engine)
    await serve_until_signal(
        app, config.host, config.port, component="control", ident=app[CONTROL].id, limits=HttpLimits.from_config(config)
    )
