"""A fault-injecting TCP proxy on 127.0.0.1 for partition tests between real nodes.

Modes: ``pass`` forwards; ``delay`` forwards after ``delay_s``; ``drop`` discards
each chunk with probability ``drop_rate`` (on an encrypted stream this breaks
the connection, as loss beyond TCP's repair would); ``cut`` closes every
connection and refuses new ones; ``blackhole`` accepts and keeps connections
but forwards nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import trio

CHUNK = 64 * 1024


@dataclass
class FaultProxy:
    target_port: int
    mode: str = "pass"
    delay_s: float = 0.0
    drop_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    port: int = 0
    connections: int = 0
    _scopes: set[trio.CancelScope] = field(default_factory=set)
    _changed: trio.Event = field(default_factory=trio.Event)

    def set_mode(self, mode: str, **knobs: float) -> None:
        """Switch mode; ``cut`` also closes every open connection."""
        self.mode = mode
        for name, value in knobs.items():
            setattr(self, name, value)
        if mode == "cut":
            for scope in list(self._scopes):
                scope.cancel()
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.mode == "cut":
            await client.aclose()
            return
        self.connections += 1
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, client, server, nursery.cancel_scope)
                    nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
            finally:
                self._scopes.discard(scope)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                data = await source.receive_some(CHUNK)
                if not data:
                    break
                while self.mode == "blackhole":
                    await self._changed.wait()
                if self.mode == "drop" and self.rng.random() < self.drop_rate:
                    continue
                if self.mode == "delay" and self.delay_s:
                    await trio.sleep(self.delay_s)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
