"""Live progress on a terminal (rich), fed by the runner with the workers' summed counters."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .config import LoadConfig

__all__ = ["LiveProgress"]


class LiveProgress:
    """A one-line status: phase, time, connections, publish and delivery rates, recent p99."""

    def __init__(self, cfg: LoadConfig, console: Console) -> None:
        self.cfg = cfg
        self.live = Live(Text("starting…"), console=console, auto_refresh=False, transient=True)
        self._last: tuple[float, int, int] | None = None  # (when, delivered, published)
        self._rates = (0.0, 0.0)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def update(self, phase: str, elapsed: float | None, totals: dict[str, Any]) -> None:
        c = totals["counts"]
        now = time.monotonic()
        delivered, published = c.get("delivered", 0), c.get("published", 0)
        if self._last is not None and now - self._last[0] >= 0.4:
            dt = now - self._last[0]
            self._rates = ((delivered - self._last[1]) / dt, (published - self._last[2]) / dt)
            self._last = (now, delivered, published)
        elif self._last is None:
            self._last = (now, delivered, published)
        clock = f"{elapsed:5.1f}/{self.cfg.duration:g}s" if elapsed is not None and elapsed >= 0 else "  —  "
        p99 = totals.get("recent_p99_us")
        text = Text.assemble(
            (f"{self.cfg.scenario}/{self.cfg.transport} ", "bold"),
            (f"{phase:<10} ", "cyan"),
            clock,
            f"  online {c.get('online', 0)}/{self.cfg.connections}",
            f"  published {published} ({self._rates[1]:.0f}/s)",
            f"  delivered {delivered} ({self._rates[0]:.0f}/s)",
            f"  p99 {p99 / 1000:.1f} ms" if p99 is not None else "  p99 —",
            f"  reconnects {c['reconnects']}" if c.get("reconnects") else "",
            (f"  dup {c['duplicated']}", "yellow") if c.get("duplicated") else "",
            (f"  errors {totals.get('errors', 0)}", "red") if totals.get("errors") else "",
        )
        self.live.update(text, refresh=True)
