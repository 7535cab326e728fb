"""What every system of the network benchmark shares: workloads, records, latencies, bytes."""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Map, MapEvent

W1_RECORDS = 20_000
W1P_RECORDS = 20_000
W1P_RATE = 1_000
W2_BASE = 1_000
W2_RECORDS = 100_000
W3_READERS = 20
W3_RECORDS = 2_000
#: pycrdt-websocket clients accept messages up to this size (httpx-ws default: 64 KiB).
PYCRDT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
YEAR_MS = 365 * 24 * 3600 * 1000
ROOT = "messages"
TIMEOUT_S = 600.0


def record(i: int) -> dict[str, Any]:
    return {"id": f"r{i}", "kind": "note", "text": "hello world", "done": False, "by": "bench"}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latencies(written: list[float], arrived: list[float]) -> dict[str, float]:
    lat = [a - w for w, a in zip(written, arrived, strict=True)]
    cuts = statistics.quantiles(lat, n=100)
    return {"p50_ms": ms(cuts[49]), "p99_ms": ms(cuts[98])}


def prefix_len(size: int) -> int:
    n = 1
    while size > 0x7F:
        size >>= 7
        n += 1
    return n


class Arrivals:
    """When each record reached a reader's map (records arrive in write order).

    ``notify`` is called once the map holds ``target`` entries.
    """

    def __init__(self, ymap: Map[Any], target: int, notify: Callable[[], None]) -> None:
        self.map = ymap
        self.count = len(ymap)
        self.times: list[float] = []
        self.target = target
        self.notify = notify
        self.subscription = ymap.observe(self._on_event)
        if self.count >= target:
            notify()

    def _on_event(self, event: MapEvent) -> None:
        now = time.monotonic()
        added = len(event.keys)  # type: ignore[attr-defined]
        self.times.extend([now] * added)
        self.count += added
        if self.count >= self.target:
            self.notify()

    def stop(self) -> None:
        self.map.unobserve(self.subscription)


# --- TCP bytes from the kernel ----------------------------------------------------------


def tcp_client_bytes(server_port: int) -> dict[int, tuple[int, int]]:
    """Client-side TCP connections to ``server_port``: local port -> (received, sent)."""
    if shutil.which("ss") is None:
        return {}
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", "dport", "=", f":{server_port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    result: dict[int, tuple[int, int]] = {}
    local_port: int | None = None
    for line in out.splitlines():
        if not line[:1].isspace():  # "Recv-Q Send-Q local:port peer:port"
            parts = line.split()
            local_port = int(parts[-2].rsplit(":", 1)[1]) if len(parts) >= 4 else None
            continue
        if local_port is None:
            continue
        stats = dict(item.split(":", 1) for item in line.split() if item.startswith("bytes_"))
        received = int(stats.get("bytes_received", 0))
        sent = int(stats.get("bytes_sent", stats.get("bytes_acked", 0)))
        result[local_port] = (received, sent)
        local_port = None
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def figures(
    w1: dict[str, Any], w1p: dict[str, Any], w2: dict[str, Any], w3: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "w1_records_per_s": w1["records_per_s"],
        "w1_latency_p50_ms": w1["p50_ms"],
        "w1_latency_p99_ms": w1["p99_ms"],
        "w1p_latency_p50_ms": w1p["p50_ms"],
        "w1p_latency_p99_ms": w1p["p99_ms"],
        "w3_seconds": w3["seconds"],
    }
    out.update({f"w2_{key}": value for key, value in w2.items()})
    return out
