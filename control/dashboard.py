"""The ops dashboard as a Herald client: the channel the leader publishes its cluster view to, and
the short-lived tokens control mints so the page can subscribe to that channel (and nothing else)
on a node with client.js.

Control mints only with HS256, where it holds the nodes' secret; with RS256/ES256 it has just the
public key. `herald control` serves no `/ws`, so without `--dashboard-url` there is nowhere to
connect (under `herald dev` the page's own origin is the node). In both cases the token answer
says why, and the page falls back to control's own `/dashboard/events` stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson

from herald.core.config import NodeConfig
from herald.core.protocol.envelope import SYSTEM_PREFIX, ChannelName

__all__ = ["CLUSTER_CHANNEL", "DASHBOARD_USER", "TOKEN_TTL", "DashboardFeed", "dashboard_feed", "bounded_view"]

#: Where the leader publishes each cluster view (namespace `herald`; history per that namespace's
#: options). Clients never publish there, and only a token pattern naming `herald:` lets one subscribe.
CLUSTER_CHANNEL = ChannelName(SYSTEM_PREFIX + "cluster")
#: The `sub` of every dashboard token (its connections count against --max-connections-per-user).
DASHBOARD_USER = "herald-dashboard"
#: Seconds a dashboard token lives; the page renews it through client.js's getToken before then.
TOKEN_TTL = 600


@dataclass(frozen=True, slots=True)
class DashboardFeed:
    """How the dashboard page reaches the cluster channel."""

    url: str | None = None  # the Herald URL the browser connects to; None: the page's own origin
    secret: str | None = field(default=None, repr=False)  # HS256 signing key; None: no tokens
    audience: str | None = None
    issuer: str | None = None
    unavailable: str = "no signing key"  # why there are no tokens (read only without a secret)

    def credentials(self, now: float) -> dict[str, Any]:
        """The body of `GET /dashboard/token`: a token for the cluster channel, or why there is none."""
        body: dict[str, Any] = {"url": self.url, "channel": CLUSTER_CHANNEL}
        if self.secret is None:
            return {**body, "token": None, "reason": self.unavailable}
        claims: dict[str, Any] = {
            "sub": DASHBOARD_USER,
            "iat": int(now),
            "exp": int(now) + TOKEN_TTL,
            "channels": [CLUSTER_CHANNEL],
            "publish": [],
        }
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        return {**body, "token": jwt.encode(claims, self.secret, algorithm="HS256"), "exp": claims["exp"]}

    def connect_src(self) -> str:
        """The CSP `connect-src` sources the page needs: its own origin, and the feed's in http and ws form."""
        if self.secret is None or self.url is None:
            return "'self'"
        url = urlsplit(self.url)
        ws = "wss" if url.scheme == "https" else "ws"
        return f"'self' {url.scheme}://{url.netloc} {ws}://{url.netloc}"


def dashboard_feed(config: NodeConfig) -> DashboardFeed:
    if config.jwt_algorithm != "HS256" or not config.jwt_secret:
        return DashboardFeed(
            unavailable=f"control cannot sign {config.jwt_algorithm} tokens (it holds only the public key)"
        )
    if not (config.dashboard_url or config.dev):
        return DashboardFeed(unavailable="no --dashboard-url: this control serves no /ws")
    return DashboardFeed(config.dashboard_url or None, config.jwt_secret, config.jwt_audience, config.jwt_issuer)


def bounded_view(view: dict[str, Any], limit: int) -> dict[str, Any]:
    """The view as published: whole when its JSON fits in `limit` bytes, else without its members
    (`"trimmed": true`; the page then reads them from /admin/cluster)."""
    if len(orjson.dumps(view)) <= limit:
        return view
    return {**{k: v for k, v in view.items() if k != "members"}, "members": [], "trimmed": True}
