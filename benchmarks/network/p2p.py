"""Ours over libp2p: ``agentmesh runtime`` and one device-worker process per device."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from pycrdt import Doc

from benchmarks.network.common import (
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
    tcp_client_bytes,
)
from benchmarks.network.ours import (
    Counting,
    messages,
    open_device,
    prepare_runtime,
    wait_runtime_holds,
    write,
)
from crdt_state.schema import SHARED
from mesh.identity import Identity
from nodes.heap import freeze_startup_heap


def device_worker() -> None:
    """A device node in its own process, driven by JSON lines on stdin (subprocess entry).

    The first line configures it; each later line is a command answered by one line.
    """
    from mesh.transport.libp2p import quiet_libp2p_logging

    quiet_libp2p_logging()
    config = json.loads(sys.stdin.readline())
    trio.run(_device_worker, config)


async def _device_worker(config: dict[str, Any]) -> None:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from mesh.transport.libp2p import SYNC_PROTOCOL, Libp2pFrameStream, build_host

    identity = Identity.from_seed(bytes.fromhex(config["seed"]))
    runtime_key = bytes.fromhex(config["runtime_key"])
    entries = [bytes.fromhex(e) for e in config["entries"]]
    driver = open_device(
        identity, runtime_key, bytes.fromhex(config["mesh_id"]), entries, Path(config["store"])
    )
    info = info_from_p2p_addr(multiaddr.Multiaddr(config["runtime_addr"]))
    port = int(config["runtime_addr"].split("/tcp/")[1].split("/")[0])
    host = build_host(identity)
    freeze_startup_heap()  # as `agentmesh device run` does
    stream: Counting | None = None
    local_port: int | None = None
    scope: trio.CancelScope | None = None
    watch: Arrivals | None = None
    reached = trio.Event()

    def reply(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    async with host.run(listen_addrs=[]), trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        reply({"ready": True})
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            op = command["op"]
            if op == "connect":
                started = time.monotonic()
                before = set(tcp_client_bytes(port))
                with trio.fail_after(30):
                    await host.connect(info)
                    raw = await host.new_stream(info.peer_id, [SYNC_PROTOCOL])
                new = set(tcp_client_bytes(port)) - before
                local_port = new.pop() if len(new) == 1 else None
                counting = stream = Counting(Libp2pFrameStream(raw))
                session_scope = scope = trio.CancelScope()

                async def session(
                    s: Counting = counting, c: trio.CancelScope = session_scope
                ) -> None:
                    with c:
                        await driver.run_session(s)

                nursery.start_soon(session)
                reply({"started": started})
            elif op == "disconnect":
                if scope is not None:
                    scope.cancel()
                await host.disconnect(info.peer_id)
                await trio.sleep(0.05)
                reply({})
            elif op == "watch":
                reached = trio.Event()
                watch = Arrivals(messages(driver), command["target"], reached.set)
                reply({})
            elif op == "wait":
                with trio.fail_after(TIMEOUT_S):
                    await reached.wait()
                assert watch is not None and stream is not None
                tcp = tcp_client_bytes(port).get(local_port or -1)
                watch.stop()
                reply(
                    {
                        "times": watch.times,
                        "framed_received": stream.received,
                        "framed_sent": stream.sent,
                        "tcp": tcp,
                    }
                )
            elif op == "write":
                written: list[float] = []
                started = time.monotonic()
                await write(driver, command["start"], command["n"], written, command["rate"])
                reply({"started": started, "written": written})
            elif op == "runtime_holds":
                await wait_runtime_holds(driver, runtime_key)
                reply({})
            elif op == "yjs_bytes":
                update = driver.engine.replica.doc(SHARED).get_update(Doc().get_state())
                reply({"bytes": len(update)})
            elif op == "quit":
                break
        nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        await host.close()
    driver.engine.replica.store.commit()
    driver.engine.replica.store.close()


class _Worker:
    """A ``device_worker`` subprocess."""

    def __init__(self, config: dict[str, Any], log: Path) -> None:
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from benchmarks.network.p2p import device_worker; device_worker()",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.log = log
        self.send(config)

    def send(self, value: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(value) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"device worker exited; see {self.log}")
        value: dict[str, Any] = json.loads(line)
        return value

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.send({"op": op, **args})
        return self.answer()

    def stop(self) -> None:
        try:
            self.send({"op": "quit"})
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class _P2PMesh:
    """``agentmesh runtime`` and one device worker per device, all on 127.0.0.1."""

    def __init__(self, folder: Path, n_devices: int) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.runtime = prepare_runtime(folder, n_devices)
        port = free_port()
        self.runtime_port = port
        with (folder / "runtime.log").open("w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nodes",
                    "runtime",
                    "--listen",
                    f"/ip4/127.0.0.1/tcp/{port}",
                    "--data-dir",
                    str(self.runtime.datadir.path),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.workers: list[_Worker] = []
        try:
            self.address = self._runtime_address()
            for i, identity in enumerate(self.runtime.devices):
                config = {
                    "seed": identity.seed.hex(),
                    "runtime_key": self.runtime.key.hex(),
                    "runtime_addr": self.address,
                    "mesh_id": self.runtime.mesh_id.hex(),
                    "entries": [e.hex() for e in self.runtime.entries],
                    "store": str(folder / f"device{i}.sqlite"),
                }
                self.workers.append(_Worker(config, folder / f"device{i}.log"))
            for worker in self.workers:
                worker.answer()  # ready
        except BaseException:
            self.close()
            raise

    def _runtime_address(self) -> str:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"agentmesh runtime exited; see {self.folder}/runtime.log")
            if line.startswith("listening "):
                return line.split()[1]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _p2p_stream(folder: Path, n: int, rate: float | None) -> dict[str, Any]:
    mesh = _P2PMesh(folder, 2)
    try:
        writer, reader = mesh.workers
        writer.call("connect")
        reader.call("connect")
        time.sleep(0.3)
        reader.call("watch", target=n)
        wrote = writer.call("write", start=0, n=n, rate=rate)
        times = reader.call("wait")["times"]
    finally:
        mesh.close()
    elapsed = times[-1] - wrote["started"]
    return {"records_per_s": round(n / elapsed), **latencies(wrote["written"], times[:n])}


def _p2p_w2(folder: Path, base: int, n: int) -> dict[str, Any]:
    mesh = _P2PMesh(folder, 2)
    try:
        writer, reader = mesh.workers
        writer.call("connect")
        reader.call("connect")
        reader.call("watch", target=base)
        writer.call("write", start=0, n=base, rate=None)
        reader.call("wait")
        time.sleep(0.2)  # let the last acknowledgements land
        reader.call("disconnect")
        writer.call("write", start=base, n=n, rate=None)
        writer.call("runtime_holds")
        time.sleep(0.2)
        reader.call("watch", target=base + n)
        started = reader.call("connect")["started"]
        done = reader.call("wait")
        yjs = writer.call("yjs_bytes")["bytes"]
    finally:
        mesh.close()
    result: dict[str, Any] = {
        "seconds": round(done["times"][-1] - started, 3),
        "framed_bytes_to_reader": done["framed_received"],
        "framed_bytes_from_reader": done["framed_sent"],
    }
    if done["tcp"] is not None:
        result["tcp_bytes_to_reader"], result["tcp_bytes_from_reader"] = done["tcp"]
    result["yjs_full_update_bytes"] = yjs
    return result


def _p2p_w3(folder: Path, readers: int, n: int) -> dict[str, Any]:
    mesh = _P2PMesh(folder, readers + 1)
    try:
        writer, *rest = mesh.workers
        for worker in mesh.workers:
            worker.call("connect")
        time.sleep(0.5)
        for worker in rest:
            worker.call("watch", target=n)
        wrote = writer.call("write", start=0, n=n, rate=None)
        last = max(worker.call("wait")["times"][n - 1] for worker in rest)
    finally:
        mesh.close()
    return {"seconds": round(last - wrote["started"], 3)}


def run_p2p(folder: Path) -> dict[str, Any]:
    w1 = _p2p_stream(folder / "w1", W1_RECORDS, None)
    w1p = _p2p_stream(folder / "w1p", W1P_RECORDS, W1P_RATE)
    w2 = _p2p_w2(folder / "w2", W2_BASE, W2_RECORDS)
    w3 = _p2p_w3(folder / "w3", W3_READERS, W3_RECORDS)
    return figures(w1, w1p, w2, w3)
