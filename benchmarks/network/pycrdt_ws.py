"""The baseline: pycrdt-websocket under Hypercorn, with ``pycrdt.Provider`` clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map

from benchmarks.network.common import (
    PYCRDT_MAX_MESSAGE_BYTES,
    ROOT,
    TIMEOUT_S,
    W1_RECORDS,
    W1P_RATE,
    W1P_RECORDS,
    W2_BASE,
    W2_RECORDS,
    W3_READERS,
    W3_RECORDS,
    Arrivals,
    figures,
    free_port,
    latencies,
    record,
    tcp_client_bytes,
)


def pycrdt_websocket_server(port: int) -> None:
    """Run pycrdt-websocket's server, as documented, until killed (subprocess entry)."""
    from hypercorn import Config
    from hypercorn.asyncio import serve
    from pycrdt.websocket import ASGIServer, WebsocketServer

    async def main() -> None:
        websocket_server = WebsocketServer()
        app = ASGIServer(websocket_server)
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.loglevel = "WARNING"
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with websocket_server:
            await serve(app, config, mode="asgi", shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    with contextlib.suppress(asyncio.CancelledError):  # its rooms are cancelled on SIGTERM
        asyncio.run(main())


@dataclass
class _PyClient:
    doc: Doc[Any]
    stack: AsyncExitStack
    channel: Any = None

    @property
    def messages(self) -> Map[Any]:
        ymap: Map[Any] = self.doc.get(ROOT, type=Map)
        return ymap


class _CountingChannel:
    """pycrdt-websocket's HttpxWebsocket, counting message payload bytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0
        self.received = 0

    @property
    def path(self) -> str:
        return str(self.inner.path)

    def __aiter__(self) -> _CountingChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except Exception:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        self.sent += len(message)
        await self.inner.send(message)

    async def recv(self) -> bytes:
        message: bytes = await self.inner.recv()
        self.received += len(message)
        return message


async def _py_connect(port: int, room: str, doc: Doc[Any] | None = None) -> _PyClient:
    from httpx_ws import aconnect_ws
    from pycrdt import Provider
    from pycrdt.websocket.websocket import HttpxWebsocket

    doc = doc if doc is not None else Doc()
    doc.get(ROOT, type=Map)
    stack = AsyncExitStack()
    websocket: Any = await stack.enter_async_context(
        aconnect_ws(
            f"http://127.0.0.1:{port}/{room}", max_message_size_bytes=PYCRDT_MAX_MESSAGE_BYTES
        )
    )
    client = _PyClient(doc, stack, _CountingChannel(HttpxWebsocket(websocket, room)))
    provider = Provider(doc, client.channel)
    await stack.enter_async_context(provider)
    await asyncio.wait_for(provider.synced.wait(), TIMEOUT_S)
    return client


async def _py_write(
    doc: Doc[Any], start: int, n: int, written: list[float], rate: float | None = None
) -> None:
    ymap = doc.get(ROOT, type=Map)
    begin = time.monotonic()
    for i in range(start, start + n):
        if rate is not None:
            delay = begin + (i - start) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        with doc.transaction():
            ymap[f"r{i}"] = record(i)
        written.append(time.monotonic())
        await asyncio.sleep(0)


async def _py_wait(clients: list[_PyClient], count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while any(len(c.messages) < count for c in clients):
        if time.monotonic() > deadline:
            raise TimeoutError("pycrdt-websocket clients did not converge")
        await asyncio.sleep(0.005)


async def _py_stream(port: int, room: str, n: int, rate: float | None) -> dict[str, Any]:
    writer = await _py_connect(port, room)
    reader = await _py_connect(port, room)
    await asyncio.sleep(0.2)
    done = asyncio.Event()
    arrivals = Arrivals(reader.messages, n, done.set)
    written: list[float] = []
    start = time.monotonic()
    await _py_write(writer.doc, 0, n, written, rate)
    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    arrivals.stop()
    await reader.stack.aclose()
    await writer.stack.aclose()
    elapsed = arrivals.times[-1] - start
    return {"records_per_s": round(n / elapsed), **latencies(written, arrivals.times[:n])}


async def _py_w2(port: int, room: str, base: int, n: int) -> dict[str, Any]:
    writer = await _py_connect(port, room)
    reader = await _py_connect(port, room)
    written: list[float] = []
    await _py_write(writer.doc, 0, base, written)
    await _py_wait([reader], base)
    await asyncio.sleep(0.2)
    await reader.stack.aclose()
    await _py_write(writer.doc, base, n, written)
    # The server holds everything once a fresh client receives it all (not timed).
    probe = await _py_connect(port, room)
    await _py_wait([probe], base + n)
    await probe.stack.aclose()
    await asyncio.sleep(0.2)
    done = asyncio.Event()
    arrivals = Arrivals(reader.messages, base + n, done.set)
    before = set(tcp_client_bytes(port))
    start = time.monotonic()
    again = await _py_connect(port, room, reader.doc)
    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    elapsed = time.monotonic() - start
    arrivals.stop()
    tcp_now = tcp_client_bytes(port)
    new = set(tcp_now) - before
    channel = again.channel
    result: dict[str, Any] = {
        "seconds": round(elapsed, 3),
        "framed_bytes_to_reader": channel.received,
        "framed_bytes_from_reader": channel.sent,
    }
    if len(new) == 1:
        result["tcp_bytes_to_reader"], result["tcp_bytes_from_reader"] = tcp_now[new.pop()]
    await again.stack.aclose()
    await writer.stack.aclose()
    return result


async def _py_w3(port: int, room: str, readers: int, n: int) -> dict[str, Any]:
    writer = await _py_connect(port, room)
    rest = [await _py_connect(port, room) for _ in range(readers)]
    await asyncio.sleep(0.5)
    remaining = [len(rest)]
    done = asyncio.Event()

    def one_done() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set()

    watchers = [Arrivals(c.messages, n, one_done) for c in rest]
    written: list[float] = []
    start = time.monotonic()
    await _py_write(writer.doc, 0, n, written)
    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    elapsed = max(w.times[n - 1] for w in watchers) - start
    for w in watchers:
        w.stop()
    for client in reversed([writer, *rest]):  # anyio scopes close in reverse order
        await client.stack.aclose()
    return {"seconds": round(elapsed, 3)}


def run_pycrdt_websocket() -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from benchmarks.network.pycrdt_ws import pycrdt_websocket_server as s;"
            " s(int(sys.argv[1]))",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("pycrdt-websocket server did not start") from None
                time.sleep(0.05)

        async def all_workloads() -> dict[str, Any]:
            w1 = await _py_stream(port, "w1", W1_RECORDS, None)
            w1p = await _py_stream(port, "w1p", W1P_RECORDS, W1P_RATE)
            w2 = await _py_w2(port, "w2", W2_BASE, W2_RECORDS)
            w3 = await _py_w3(port, "w3", W3_READERS, W3_RECORDS)
            return figures(w1, w1p, w2, w3)

        return asyncio.run(all_workloads())
    finally:
        server.terminate()
        server.wait(timeout=10)
