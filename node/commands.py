"""What a WebSocket client's commands do: subscribe (register, then read history), publish, chat,
presence, who, history — each against the engine, its reply written through the session.

The connection (node/ws.py) hands each command here, in the order the client sent them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald.core.protocol.envelope import (
    Chat,
    Command,
    History,
    Presence,
    Publish,
    Subscribe,
    Unsubscribe,
    Who,
    personal_channel,
)
from herald.core.protocol.errors import HeraldError, PayloadTooBig

if TYPE_CHECKING:
    from .ws import WsConnection

__all__ = ["run_command"]

_MAX_WHO = 1000
_MAX_HISTORY = 1000


async def run_command(conn: WsConnection, cmd: Command) -> None:
    """Run one of the client's commands against the engine; its reply (or error) goes out now."""
    s, rt = conn.session, conn.rt
    engine = rt.engine
    try:
        if isinstance(cmd, Subscribe):
            await _subscribe(conn, cmd)
        elif isinstance(cmd, Unsubscribe):
            if s.unsubscribe(cmd):
                await rt.hub.remove(cmd.channel, conn)
                await rt.presence_leave(cmd.channel, conn.presence_entry())
        elif isinstance(cmd, Publish):
            res = await engine.publish(cmd.channel, cmd.data, event=cmd.event, sender=s.user)
            rt.metrics.published.labels("client").inc()
            s.reply(cmd, {"type": "published", "channel": cmd.channel, "offset": res.offset})
        elif isinstance(cmd, Chat):
            res = await engine.publish(personal_channel(cmd.recipient), {"text": cmd.text}, event="chat", sender=s.user)
            rt.metrics.published.labels("chat").inc()
            s.reply(cmd, {"type": "sent", "offset": res.offset})
        elif isinstance(cmd, Presence):
            await rt.presence_status(list(s.subs), conn.presence_entry(), s.personal)
            if cmd.id is not None:  # extension: a command with an id gets an answer
                s.reply(cmd, {"type": "presence", "status": s.status})
        elif isinstance(cmd, Who):
            entries = await engine.presence(cmd.channel)
            if len(entries) > _MAX_WHO:
                s.send_error(cmd.id, PayloadTooBig(f"more than {_MAX_WHO} clients: use /api/presence/<channel>/stats"))
            else:
                s.reply(cmd, {"type": "who", "channel": cmd.channel, "clients": [e.to_wire() for e in entries]})
        elif isinstance(cmd, History):
            limit = _MAX_HISTORY if cmd.limit is None else min(cmd.limit, _MAX_HISTORY)
            hist = await engine.history(cmd.channel, since=cmd.since, limit=limit)
            s.reply(
                cmd,
                {
                    "type": "history",
                    "channel": cmd.channel,
                    "epoch": hist.epoch,
                    "offset": hist.offset,
                    "recovered": hist.recovered,
                    "messages": [m.envelope() for m in hist.messages],
                },
            )
    except HeraldError as exc:
        s.send_error(cmd.id, exc)
    conn.flush()


async def _subscribe(conn: WsConnection, cmd: Subscribe) -> None:
    """DESIGN invariant 5: register (the hub subscribes the node), then read history."""
    s, rt = conn.session, conn.rt
    is_new = s.begin_subscribe(cmd)
    try:
        if is_new:
            await rt.hub.add(cmd.channel, conn)
        result = await rt.engine.history(cmd.channel, since=cmd.since)
    except HeraldError as exc:
        if is_new:
            await rt.hub.remove(cmd.channel, conn)
        s.cancel_subscribe(cmd, exc, is_new)
        return
    s.complete_subscribe(cmd, result)
    conn.flush()  # `subscribed` and the missed messages go out before any join frame
    if is_new:
        await rt.presence_join(cmd.channel, conn.presence_entry())
