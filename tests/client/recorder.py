"""What the application received from a HeraldClient, in the form of tests/cluster/checker.py.

`Recorder.watch(sub)` consumes a Subscription the way an application would and files every event
into a checker `ChannelLog`: the first `subscribed` reply is the baseline, each Message goes
through `ChannelLog.on_message` (which catches a duplicate or an out-of-order offset), each Resync
becomes a checker `Reset` (what it excuses). `check_no_loss`, `caught_up` and `wait_delivered` of
the checker then judge the client SDK from the outside."""

from __future__ import annotations

import asyncio

from herald.client import HeraldClient, Message, Resync, Subscription
from tests.cluster.checker import ChannelLog, Reset, offset_key


class Recorder:
    def __init__(self, client: HeraldClient, name: str) -> None:
        self.client = client
        self.name = name
        self.logs: dict[str, ChannelLog] = {}
        self.failure: str | None = None
        self.resyncs: list[Resync] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def reconnects(self) -> int:
        return max(0, self.client.stats.connections - 1)

    def summary(self) -> str:
        return f"{self.name}: node {self.client.node}, stats {self.client.stats}"

    async def subscribe(self, channel: str) -> Subscription:
        sub = await self.client.subscribe(channel)
        assert sub.subscribed is not None
        log = self.logs[channel] = ChannelLog(channel)
        log.baseline = log.position = (sub.subscribed.offset, sub.subscribed.epoch)
        log.live = True
        self._tasks.append(asyncio.create_task(self._watch(sub, log)))
        return sub

    async def _watch(self, sub: Subscription, log: ChannelLog) -> None:
        try:
            async for event in sub:
                session = self.client.stats.connections - 1
                if isinstance(event, Message):
                    log.on_message(
                        {"offset": event.offset, "epoch": event.epoch, "data": event.data, "event": event.event},
                        session,
                    )
                else:
                    self.resyncs.append(event)
                    assert log.position is not None and event.offset is not None and event.epoch is not None, event
                    log.resets.append(Reset(offset_key(log.position[0]), event.epoch, event.offset, session))
                    log.position = (event.offset, event.epoch)
        except Exception as exc:
            self.failure = f"{sub.channel}: iteration failed: {exc!r}"

    async def stop(self) -> None:
        await self.client.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
