"""The per-connection state machine of a WebSocket client, without I/O.

Inputs are method calls — `receive(payload, now)`, `deliver(pub)`, `tick(now)` and the
`complete_*` results of engine calls — and outputs are drained from `frames_to_send()`. The
adapter (node/ws.py) performs engine calls for the commands `receive` returns and writes frames.

Subscribing follows DESIGN invariant 5: `begin_subscribe` registers the subscription in a
*recovering* state that buffers live publications; the adapter reads history; then
`complete_subscribe` sends the missed messages and flushes the buffer, delivering only offsets
greater than the last one delivered. Each (connection, channel) thus gets every offset once, in order.

Over 400 lines on purpose: one state machine whose transitions share its state; what is not the
state machine lives beside it (`subscription.py`: one channel's buffer and positions; `codec.py`,
`envelope.py`, `closecodes.py`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .closecodes import CloseCode
from .codec import Codec
from .envelope import (
    Auth,
    ChannelName,
    Chat,
    Command,
    History,
    Ping,
    Presence,
    Publication,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
    Who,
    namespace_of,
    parse_command,
    personal_channel,
)
from .errors import Forbidden, HeraldError, PayloadTooBig, ProtocolError, RateLimited, Unauthorized
from .ratelimit import TokenBucket
from .subscription import Subscription

__all__ = ["State", "SessionLimits", "Session", "Tick", "VerifyFn"]

#: Verifies a token at a time; raises Unauthorized. Returns a principal (see core.auth.Principal).
VerifyFn = Callable[[str, float], Any]


class State(enum.IntEnum):
    AUTHENTICATING = 0  # opened without credentials; waiting for {"type":"auth"}
    OPEN = 1
    CLOSED = 2


class Tick(enum.IntEnum):
    NOTHING = 0
    PING = 1
    CLOSE = 2  # see Session.close_code


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_subscriptions: int = 256
    client_rate: float = 50.0
    client_burst: int = 100
    ping_interval: float = 25.0
    idle_timeout: float = 3600.0  # 0 = never
    auth_timeout: float = 5.0
    max_reply_size: int = 1_048_576
    max_pending: int = 10_000  # live messages buffered per channel while its history is read
    allow_publish: Callable[[str], bool] = lambda ns: True


#: Seconds the personal channel's live messages wait for the client's first command (see _open).
HOLD_PERSONAL = 1.0


class Session:
    """State of one WebSocket connection: who it is, what it is subscribed to, what to send."""

    __slots__ = (
        "client_id",
        "node_id",
        "codec",
        "limits",
        "_verify",
        "principal",
        "state",
        "subs",
        "status",
        "close_code",
        "close_reason",
        "opened_at",
        "msgs_in",
        "msgs_out",
        "_bucket",
        "_frames",
        "_last_activity",
        "_seen_out",
        "_next_ping",
        "_last_pong",
        "_on_error",
        "_held",
        "_personal",
    )

    def __init__(
        self,
        client_id: str,
        node_id: str,
        codec: Codec,
        limits: SessionLimits,
        verify: VerifyFn,
        now: float,
        principal: Any | None = None,
        on_error: Callable[[int], None] | None = None,
    ) -> None:
        self.client_id = client_id
        self._on_error = on_error
        self.node_id = node_id
        self.codec = codec
        self.limits = limits
        self._verify = verify
        self.principal = principal
        self.state = State.OPEN if principal is not None else State.AUTHENTICATING
        self.subs: dict[str, Subscription] = {}
        self.status = "online"
        self.close_code: int | None = None
        self.close_reason = ""
        self.opened_at = now
        self.msgs_in = 0
        self.msgs_out = 0
        self._bucket = TokenBucket(limits.client_rate, limits.client_burst, now)
        self._frames: list[bytes] | None = None  # created when there is something to send (idle: nothing)
        self._last_activity = now
        self._seen_out = 0
        self._next_ping = now + limits.ping_interval
        self._last_pong = now
        self._held = False  # the personal channel holds live messages until the client speaks
        self._personal: ChannelName | None = None  # formatted once, when the session opens
        if principal is not None:
            self._open()

    # --- outputs ----------------------------------------------------------------------------
    def frames_to_send(self) -> list[bytes]:
        frames, self._frames = self._frames, None
        return frames if frames is not None else []

    def _push(self, frame: bytes) -> None:
        if self._frames is None:
            self._frames = [frame]
        else:
            self._frames.append(frame)

    def send(self, obj: dict[str, Any]) -> None:
        self._push(self.codec.encode(obj))

    @property
    def user(self) -> str:
        return self.principal.user if self.principal is not None else ""

    @property
    def personal(self) -> ChannelName:
        if self._personal is not None:
            return self._personal
        return personal_channel(self.user)

    def _open(self) -> None:
        """Subscribe the personal channel. Its live messages are held (not lost) until the client's
        first command, or HOLD_PERSONAL seconds: a resuming client's first command is
        `subscribe {channel: user:<id>, since}`, and the missed messages must go out before
        anything newer (each offset once, in order)."""
        self.state = State.OPEN
        channel = self._personal = personal_channel(self.user)
        sub = self.subs[channel] = Subscription(channel)
        sub.pending = []
        self._held = True
        self.send(
            {
                "type": "connected",
                "client": self.client_id,
                "user": self.user,
                "node": self.node_id,
                "ping_interval": int(self.limits.ping_interval),
                "channels": [channel],
            }
        )

    def close(self, code: int, reason: str = "") -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_code = code
            self.close_reason = reason

    # --- inputs -----------------------------------------------------------------------------
    def receive(self, payload: bytes | str, now: float) -> Command | None:
        """Handle one client frame. Returns a command the adapter must run against the engine
        (Subscribe, Unsubscribe, Publish, Chat, Presence, Who, History, Auth), or None when the
        session handled it itself (errors, ping, refresh)."""
        if self.state is State.CLOSED:
            return None
        self.msgs_in += 1
        self._last_activity = now
        cmd_id: int | None = None
        try:
            obj = self.codec.decode(payload)
            if isinstance(obj, dict) and type(obj.get("id")) is int:
                cmd_id = obj["id"]
            cmd = parse_command(obj)
            if self.state is State.AUTHENTICATING:
                return self._authenticate(cmd, now)
            if self._held and not (isinstance(cmd, Subscribe) and cmd.channel == self.personal):
                self._release_personal()
            if not self._bucket.take(now):
                raise RateLimited("rate limit exceeded: slow down")
            return self._handle(cmd, now)
        except HeraldError as exc:
            if self.state is State.AUTHENTICATING:
                self.close(CloseCode.UNAUTHORIZED, "authentication failed")
            else:
                self.send_error(cmd_id, exc)
            return None

    def _authenticate(self, cmd: Command, now: float) -> Command | None:
        if not isinstance(cmd, Auth):
            raise Unauthorized('the first message must be {"type":"auth"}')
        self.principal = self._verify(cmd.token, now)
        return cmd  # the adapter checks limits, then calls `authenticated()`

    def authenticated(self) -> None:
        """The adapter accepted the principal found by an Auth command (limits passed)."""
        self._open()

    def _handle(self, cmd: Command, now: float) -> Command | None:
        principal = self.principal
        assert principal is not None  # commands other than auth arrive only in State.OPEN
        if isinstance(cmd, Ping):
            self._reply(cmd.id, {"type": "pong"})
            return None
        if isinstance(cmd, Refresh):
            try:
                fresh = self._verify(cmd.token, now)
            except Unauthorized as exc:  # the current token stays valid until it expires
                raise Forbidden(f"refresh rejected: {exc}") from exc
            if fresh.user != principal.user:
                raise Forbidden("a refreshed token must be for the same user")
            self.principal = fresh
            self._reply(cmd.id, {"type": "refreshed", "exp": int(fresh.exp)})
            return None
        if isinstance(cmd, Auth):
            raise ProtocolError("already authenticated")
        if isinstance(cmd, Subscribe):
            if not principal.may_subscribe(cmd.channel):
                raise Forbidden(f"not permitted to subscribe to {cmd.channel}")
            if cmd.channel not in self.subs and len(self.subs) >= self.limits.max_subscriptions:
                raise Forbidden(f"subscription limit ({self.limits.max_subscriptions}) reached")
        elif isinstance(cmd, Unsubscribe):
            if cmd.channel == self.personal:
                raise Forbidden("the personal channel cannot be unsubscribed")
        elif isinstance(cmd, Publish):
            if not principal.may_publish(cmd.channel) or not self.limits.allow_publish(namespace_of(cmd.channel)):
                raise Forbidden(f"not permitted to publish to {cmd.channel}")
        elif isinstance(cmd, (Who, History)):
            if cmd.channel not in self.subs and not principal.may_subscribe(cmd.channel):
                raise Forbidden(f"not permitted to read {cmd.channel}")
        elif isinstance(cmd, Presence):
            self.status = cmd.status
        elif isinstance(cmd, Chat) and len(cmd.text) > self.limits.max_reply_size:
            raise PayloadTooBig("chat text too long")
        return cmd

    # --- subscriptions ----------------------------------------------------------------------
    def begin_subscribe(self, cmd: Subscribe) -> bool:
        """Start recovering `cmd.channel`; True when it is new for this connection (register it)."""
        sub = self.subs.get(cmd.channel)
        is_new = sub is None
        if sub is None:
            sub = self.subs[cmd.channel] = Subscription(cmd.channel)
        if cmd.since is not None:
            sub.before = (sub.last, sub.epoch)
            sub.last, sub.epoch = cmd.since.key, cmd.since.epoch
        if sub.pending is None:
            sub.pending = []
        return is_new

    def complete_subscribe(self, cmd: Subscribe, result: Any) -> None:
        """Send `subscribed`, the missed messages, then what arrived meanwhile (HistoryResult)."""
        sub = self.subs.get(cmd.channel)
        if sub is None or sub.pending is None:
            return  # unsubscribed while history was read
        if cmd.channel == self.personal:
            self._held = False
        sub.before = None
        send, missed, recovered = sub.finish_recovery(result, cmd.since)
        self._reply(
            cmd.id,
            {
                "type": "subscribed",
                "channel": cmd.channel,
                "epoch": result.epoch,
                "offset": result.offset,
                "recovered": recovered,
                "missed": missed,
            },
        )
        for pub in send:
            self._push(self.codec.encode(pub.envelope()))
        self.msgs_out += len(send)

    def cancel_subscribe(self, cmd: Subscribe, exc: HeraldError, was_new: bool) -> None:
        """History could not be read: a new subscription is dropped; an existing one goes back to
        the position it had (the client may retry the resume) and sends what arrived meanwhile."""
        sub = self.subs.get(cmd.channel)
        if was_new:
            self.subs.pop(cmd.channel, None)
        elif sub is not None:
            if sub.before is not None:
                (sub.last, sub.epoch), sub.before = sub.before, None
            if cmd.channel == self.personal and self._held:
                self._release_personal()
            else:
                self._flush_pending(sub)
        self.send_error(cmd.id, exc)

    def _release_personal(self) -> None:
        """Stop holding the personal channel: send what arrived meanwhile, in order."""
        self._held = False
        sub = self.subs.get(self.personal)
        if sub is not None:
            self._flush_pending(sub)

    def _flush_pending(self, sub: Subscription) -> None:
        """Leave the recovering state: send the buffered live messages newer than the position."""
        if sub.pending is None:
            return
        pending, sub.pending = sub.pending, None
        for pub in pending:
            if sub.accept(pub):
                self._push(self.codec.encode(pub.envelope()))
                self.msgs_out += 1

    def unsubscribe(self, cmd: Unsubscribe) -> bool:
        """Drop the subscription; True when it existed (unregister it)."""
        existed = self.subs.pop(cmd.channel, None) is not None
        self._reply(cmd.id, {"type": "unsubscribed", "channel": cmd.channel})
        return existed

    def deliver(self, pub: Publication) -> bool:
        """Hot path: True when the shared pre-encoded frame of `pub` must be written now."""
        sub = self.subs.get(pub.channel)
        if sub is None or not sub.accept(pub):
            if sub is not None and sub.pending is not None and len(sub.pending) > self.limits.max_pending:
                self.close(CloseCode.SLOW_CONSUMER, "too many messages while recovering")
            return False
        self.msgs_out += 1
        return True

    # --- replies ----------------------------------------------------------------------------
    def _reply(self, cmd_id: int | None, obj: dict[str, Any]) -> None:
        if cmd_id is not None:
            obj["id"] = cmd_id
        self.send(obj)

    def reply(self, cmd: Command, obj: dict[str, Any]) -> None:
        """Send `obj` as the reply to `cmd`, or 413 if it is over the reply size limit."""
        if cmd.id is not None:
            obj["id"] = cmd.id
        frame = self.codec.encode(obj)
        if len(frame) > self.limits.max_reply_size:
            self.send_error(cmd.id, PayloadTooBig("reply too large: narrow the request"))
        else:
            self._push(frame)

    def send_error(self, cmd_id: int | None, exc: HeraldError) -> None:
        if self._on_error is not None:
            self._on_error(exc.code)
        err: dict[str, Any] = {"type": "error", "code": exc.code, "message": str(exc) or exc.slug}
        if cmd_id is not None:
            err["id"] = cmd_id
        self.send(err)

    # --- time -------------------------------------------------------------------------------
    def allow_ping(self, now: float) -> bool:
        """Whether a client's WebSocket ping gets a pong: pings spend the same token bucket as
        messages (the protocol's own `ping` message included), so a ping flood costs no more
        than the message rate allows. Pings over it are dropped, not answered."""
        return self.state is not State.CLOSED and self._bucket.take(now)

    def pong(self, now: float) -> None:
        self._last_pong = now

    def tick(self, now: float) -> Tick:
        """Periodic checks (about once a second): auth timeout, token expiry, liveness, idleness."""
        if self.state is State.CLOSED:
            return Tick.CLOSE
        if self.state is State.AUTHENTICATING:
            if now - self.opened_at >= self.limits.auth_timeout:
                self.close(CloseCode.UNAUTHORIZED, "no auth message in time")
                return Tick.CLOSE
            return Tick.NOTHING
        assert self.principal is not None  # past AUTHENTICATING
        if self.principal.exp <= now:
            self.close(CloseCode.UNAUTHORIZED, "token expired")
            return Tick.CLOSE
        if self._held and now - self.opened_at >= HOLD_PERSONAL:
            self._release_personal()  # the adapter flushes after every tick
        interval = self.limits.ping_interval
        if now - self._last_pong > 2 * interval + 1:
            self.close(CloseCode.GOING_AWAY, "no pong")
            return Tick.CLOSE
        if self.msgs_out != self._seen_out:
            self._seen_out = self.msgs_out
            self._last_activity = now
        idle = self.limits.idle_timeout
        if idle and now - self._last_activity >= idle:
            self.close(CloseCode.IDLE_TIMEOUT, "idle")
            return Tick.CLOSE
        if now >= self._next_ping:
            self._next_ping = now + interval
            return Tick.PING
        return Tick.NOTHING
