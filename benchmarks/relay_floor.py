"""The transport's own latency floor: frames relayed over two py-libp2p hops, nothing else.

W1p's path is writer -> runtime -> reader over libp2p. This measures that path
with no engine on it: a writer process sends ``FRAME_BYTES`` frames paced at
``RATE`` per second to a relay process, which forwards each one to a reader
process as soon as it has read it. Same hosts as the nodes (``build_host``:
TCP + Noise + yamux, our framing), one process per node, each with its startup
heap frozen as the node commands do. Nothing is signed, checked, stored or
acknowledged. Latency is from the writer's send to the reader's receive
(CLOCK_MONOTONIC, comparable across processes).

``python -m benchmarks relay --json`` runs it alone; ``network`` reports it next
to W1p so that the two are measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

import trio
from libp2p.custom_types import TProtocol

PROTOCOL_IN = TProtocol("/agentmesh-bench/relay-in/1")
PROTOCOL_OUT = TProtocol("/agentmesh-bench/relay-out/1")
FRAMES = 5_000
#: About one W1p envelope batch (one to three records) with its frame header.
FRAME_BYTES = 400
RATE = 1_000
_RELAY_SEED = b"r" * 32
_WRITER_SEED = b"w" * 32
_READER_SEED = b"d" * 32
_TIMEOUT_S = 120.0


def _latencies(sent: list[float], received: list[float]) -> dict[str, float]:
    lat = [r - s for s, r in zip(sent, received, strict=True)]
    cuts = statistics.quantiles(lat, n=100)
    return {
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "max_ms": round(max(lat) * 1000, 3),
    }


async def _relay() -> None:
    import multiaddr
    from libp2p.abc import INetStream

    from mesh.identity import Identity
    from mesh.transport.libp2p import Libp2pFrameStream, build_host, full_addresses

    host = build_host(Identity.from_seed(_RELAY_SEED))
    out: list[Libp2pFrameStream] = []
    reader_here = trio.Event()

    async def on_reader(stream: INetStream) -> None:
        out.append(Libp2pFrameStream(stream))
        reader_here.set()
        await trio.sleep_forever()

    async def on_writer(stream: INetStream) -> None:
        inbound = Libp2pFrameStream(stream)
        await reader_here.wait()
        for _ in range(FRAMES):
            await out[0].send(await inbound.receive())

    host.set_stream_handler(PROTOCOL_OUT, on_reader)
    host.set_stream_handler(PROTOCOL_IN, on_writer)
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(full_addresses(host)[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)  # until told to stop


async def _client(role: str, address: str) -> None:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from mesh.identity import Identity
    from mesh.transport.libp2p import Libp2pFrameStream, build_host

    seed = _WRITER_SEED if role == "writer" else _READER_SEED
    host = build_host(Identity.from_seed(seed))
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    async with host.run(listen_addrs=[]):
        with trio.fail_after(_TIMEOUT_S):
            await host.connect(info)
            protocol = PROTOCOL_IN if role == "writer" else PROTOCOL_OUT
            stream = Libp2pFrameStream(await host.new_stream(info.peer_id, [protocol]))
        print("ready", flush=True)
        times: list[float] = []
        if role == "reader":
            with trio.fail_after(_TIMEOUT_S):
                for _ in range(FRAMES):
                    await stream.receive()
                    times.append(time.monotonic())
        else:
            await trio.to_thread.run_sync(sys.stdin.readline)  # go
            begin = time.monotonic()
            padding = bytes(FRAME_BYTES - 4)
            for i in range(FRAMES):
                delay = begin + i / RATE - time.monotonic()
                if delay > 0:
                    await trio.sleep(delay)
                times.append(time.monotonic())
                await stream.send(i.to_bytes(4, "big") + padding)
        print(json.dumps(times), flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)  # until told to stop


def node_main() -> None:
    """Subprocess entry: ``relay`` or ``writer ADDRESS`` or ``reader ADDRESS``."""
    from mesh.transport.libp2p import quiet_libp2p_logging
    from nodes.heap import freeze_startup_heap

    quiet_libp2p_logging()
    freeze_startup_heap()
    role = sys.argv[1]
    if role == "relay":
        trio.run(_relay)
    else:
        trio.run(_client, role, sys.argv[2])


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.relay_floor import node_main; node_main()", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"relay floor process {proc.args!r} exited")
    return line


def _tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def run() -> dict[str, Any]:
    """Relay ``FRAMES`` paced frames writer -> relay -> reader; latency p50/p99/max."""
    procs: list[subprocess.Popen[str]] = []
    try:
        relay = _spawn("relay")
        procs.append(relay)
        address = _line(relay).strip()
        reader = _spawn("reader", address)
        procs.append(reader)
        _line(reader)
        writer = _spawn("writer", address)
        procs.append(writer)
        _line(writer)
        _tell(writer)
        sent = json.loads(_line(writer))
        received = json.loads(_line(reader))
    finally:
        for proc in procs:
            try:
                _tell(proc)
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
    return {
        "benchmark": "relay",
        "frames": FRAMES,
        "frame_bytes": FRAME_BYTES,
        "rate_per_s": RATE,
        **_latencies(sent, received),
    }
