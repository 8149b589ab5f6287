"""The Lua scripts of lua/*.lua, loaded once with importlib.resources and registered per client."""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["SCRIPT_NAMES", "load_sources", "Scripts"]

SCRIPT_NAMES = (
    "publish_append",
    "history_read",
    "subscription_set",
    "presence_add",
    "presence_get",
    "user_acquire",
    "user_disconnect",
    "lease_renew",
    "lease_release",
)


def load_sources() -> dict[str, str]:
    base = resources.files("herald.core.engine.redis") / "lua"
    return {name: (base / f"{name}.lua").read_text() for name in SCRIPT_NAMES}


class Scripts:
    """One registered script object per name for one Redis client (EVALSHA with EVAL fallback)."""

    def __init__(self, client: Any, sources: dict[str, str]) -> None:
        for name, source in sources.items():
            setattr(self, name, client.register_script(source))

    publish_append: Any
    history_read: Any
    subscription_set: Any
    presence_add: Any
    presence_get: Any
    user_acquire: Any
    user_disconnect: Any
    lease_renew: Any
    lease_release: Any
