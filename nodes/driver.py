"""Drive the sans-IO engine with trio: sessions over FrameStreams, group commit, timers.

One flusher task owns every call to ``Engine.flush`` (which commits, then
releases outputs). Readers feed frames into the engine and wake the flusher;
frames that arrive while it works are committed together (group commit). Local
transactions are batched adaptively: with nothing in flight the flusher seals
and sends at once; while a batch awaits its acknowledgement, transactions pile
up in the open batch (bounded by MAX_BATCH_DELAY_MS and the size limits). Each
session has one writer task draining its outbox, so a slow peer delays only
itself. Reads never stop while a session lives (yamux resets stalled streams);
backpressure is the protocol's window, not unread bytes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import trio
from pycrdt import Doc

from mesh.engine import Close, Engine, Output, Send
from mesh.errors import ProtocolError
from mesh.transport.base import FrameStream, StreamClosed, StreamReset, TransportError

log = logging.getLogger("agentmesh.driver")


def wall_ms() -> int:
    """Milliseconds since the epoch (the driver's clock; the engine never reads one)."""
    return time.time_ns() // 1_000_000


@dataclass
class _Live:
    stream: FrameStream
    outbox: deque[bytes] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    closing: bool = False
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: trio.Event = field(default_factory=trio.Event)


class _Transaction:
    """``EngineDriver.transact``'s context manager: wakes the flusher when needed."""

    __slots__ = ("_driver", "_inner", "_opens")

    def __init__(
        self, driver: EngineDriver, inner: AbstractContextManager[Doc[Any]], opens: bool
    ) -> None:
        self._driver = driver
        self._inner = inner
        self._opens = opens

    def __enter__(self) -> Doc[Any]:
        return self._inner.__enter__()

    def __exit__(self, *exc_info: Any) -> bool | None:
        try:
            return self._inner.__exit__(*exc_info)
        finally:
            if self._opens or self._driver.engine.replica.next_seal_ms() is None:
                self._driver.kick()


class EngineDriver:
    """Runs one engine: call ``run`` in a nursery, then ``run_session`` per stream."""

    def __init__(self, engine: Engine, clock: Callable[[], int] = wall_ms) -> None:
        self.engine = engine
        self.clock = clock
        self.live: dict[bytes, _Live] = {}
        self.listeners: list[Callable[[Output], None]] = []
        self._wake = trio.Event()
        self._flushed = trio.Event()
        self.flushes = 0

    # --- local writes ---------------------------------------------------------------

    def transact(self, doc: str) -> AbstractContextManager[Doc[Any]]:
        """A local transaction; the flusher seals and sends it in time.

        The flusher is woken only when the transaction opens a batch (so it learns
        the batch's deadline, or seals it at once when nothing is in flight) or
        when the transaction sealed its batch (size limits): a transaction that
        joins an open batch costs no wake-up.
        """
        opens = self.engine.replica.next_seal_ms() is None
        return _Transaction(self, self.engine.transact(doc, self.clock()), opens)

    def kick(self) -> None:
        """Ask the flusher to run soon."""
        self._wake.set()

    async def committed(self) -> None:
        """Until every local write made so far is sealed and committed (needs ``run``)."""
        self.kick()
        while True:
            flushed = self._flushed
            await flushed.wait()
            if self.engine.replica.next_seal_ms() is None:
                return

    # --- the flusher ----------------------------------------------------------------

    async def run(self) -> None:
        """Flush whenever woken or a deadline passes. Runs until cancelled."""
        try:
            while True:
                deadline = self.engine.next_deadline()
                if deadline is None:
                    await self._wake.wait()
                else:
                    with trio.move_on_after(max(0.0, (deadline - self.clock()) / 1000)):
                        await self._wake.wait()
                self._wake = trio.Event()
                self.flush()
                await trio.sleep(0)  # let readers queue more work before the next commit
        finally:
            with trio.CancelScope(shield=True):
                self.engine.replica.seal_all(self.clock())
                self.flush()

    def idle(self) -> bool:
        """Whether a session is ready and no session waits for an acknowledgement."""
        sessions = [s for s in self.engine.sessions.values() if s.ready]
        return bool(sessions) and not any(s.unacked for s in sessions)

    def flush(self) -> None:
        now = self.clock()
        if self.engine.replica.next_seal_ms() is not None and self.idle():
            # Adaptive batching: with nothing in flight, seal and send now (latency);
            # otherwise transactions pile up in the open batch until the acknowledgement
            # comes back or MAX_BATCH_DELAY_MS passes (throughput).
            self.engine.replica.seal_all(now)
        self.engine.tick(now)
        outputs = self.engine.flush(now)
        self.flushes += 1
        for output in outputs:
            if isinstance(output, Send):
                live = self.live.get(output.peer)
                if live is not None and not live.closing:
                    live.outbox.append(output.data)
                    live.wake.set()
            elif isinstance(output, Close):
                live = self.live.get(output.peer)
                if live is not None:
                    log.info("closing session with %s: %s", output.peer.hex()[:16], output.message)
                    live.closing = True
                    live.wake.set()
            for listener in self.listeners:
                listener(output)
        self._flushed.set()
        self._flushed = trio.Event()

    # --- sessions ------------------------------------------------------------------------

    async def run_session(self, stream: FrameStream, initial: Sequence[bytes] = ()) -> None:
        """Run the sync protocol over ``stream`` until either side ends it.

        ``initial``: frames already read from the stream (a device's bootstrap).
        """
        peer = stream.peer
        if peer in self.live:
            old = self.live.pop(peer)
            old.cancel.cancel()
            self.engine.disconnect(peer)
        live = _Live(stream)
        self.live[peer] = live
        try:
            if not self.engine.connect(peer, self.clock()):
                self.flush()
                await stream.reset()
                return
            for frame in initial:
                self.engine.receive(peer, frame, self.clock())
            self.kick()
            with live.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, live, nursery.cancel_scope)
                    await self._reader(live)
                    nursery.cancel_scope.cancel()
        finally:
            if self.live.get(peer) is live:
                del self.live[peer]
                self.engine.disconnect(peer)
            with trio.CancelScope(shield=True):
                # Close, not reset, even when we end it: the peer must still read the
                # frames queued before the close (e.g. the entry that revokes it).
                await stream.close()
            live.ended.set()

    async def session_ended(self, peer: bytes) -> None:
        """Wait until the session with ``peer`` (if any) has sent its last frame and ended."""
        live = self.live.get(peer)
        if live is not None:
            await live.ended.wait()

    async def _reader(self, live: _Live) -> None:
        peer = live.stream.peer
        while not live.closing:
            try:
                frame = await live.stream.receive()
            except (StreamClosed, StreamReset, TransportError) as exc:
                log.debug("session with %s ended: %s", peer.hex()[:16], exc)
                return
            except ProtocolError as exc:
                log.warning("peer %s broke framing: %s", peer.hex()[:16], exc)
                return
            self.engine.receive(peer, frame, self.clock())
            self.kick()

    async def _writer(self, live: _Live, scope: trio.CancelScope) -> None:
        while True:
            while live.outbox:
                try:
                    await live.stream.send(live.outbox.popleft())
                except TransportError:
                    scope.cancel()
                    return
            if live.closing:
                scope.cancel()
                return
            await live.wake.wait()
            live.wake = trio.Event()

    def sessions(self) -> Iterator[bytes]:
        return iter(list(self.live))
