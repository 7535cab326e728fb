"""``agentmesh runtime`` as a real process: it stops cleanly on SIGINT and SIGTERM, and one
process owns a data dir at a time.

A member (a real libp2p host with a key admitted by ``agentmesh devices add``) holds
a sync stream open and a stranger sits in the middle of a handshake when the
signal comes: the runtime closes both, exits 0 within a few seconds and releases
the data dir, whose store then opens cleanly and passes SQLite's integrity check.
Waits are on events (process exit, stream end, output lines) under trio timeouts.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.identity import Identity
from mesh.transport.libp2p import SYNC_PROTOCOL, build_host
from nodes.datadir import DataDir
from nodes.setup import open_node
from tests.nodes.processes import CLI, free_port

#: A stopped runtime must be gone within this time (py-libp2p's close alone took 0.2 s
#: per connection, one after another, before connections were closed concurrently).
STOP_WITHIN_S = 5.0
#: Upper bound for a runtime to start on a loaded 2-core machine.
START_WITHIN_S = 60.0


class Runtime:
    """One ``agentmesh runtime`` subprocess and its output."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.command = [
            *CLI,
            "runtime",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"/ip4/127.0.0.1/tcp/{port}",
        ]
        self.proc: trio.Process | None = None
        self._buffer = b""

    async def start(self) -> None:
        self.proc = await trio.lowlevel.open_process(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    async def line_starting(self, prefix: str) -> str:
        """The rest of the first stdout line that starts with ``prefix``."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode()
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()
            chunk = await self.proc.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"runtime exited before printing {prefix!r}")
            self._buffer += chunk

    async def stop(self, sig: int) -> tuple[int, str, float]:
        """Send ``sig``; return the exit code, stderr and how long it took to exit."""
        assert self.proc is not None and self.proc.stderr is not None
        started = trio.current_time()
        self.proc.send_signal(sig)
        with trio.fail_after(STOP_WITHIN_S):
            code = await self.proc.wait()
        took = trio.current_time() - started
        err = b""
        while chunk := await self.proc.stderr.receive_some():
            err += chunk
        await self.proc.stderr.aclose()
        if self.proc.stdout is not None:
            await self.proc.stdout.aclose()
        return code, err.decode(), took


async def agentmesh(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(
        [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def until_closed(read: Callable[[], Awaitable[bytes]], gone: trio.Event) -> None:
    """Read until the other side is gone (end of stream, reset or broken connection)."""
    try:
        while await read():
            pass
    except Exception:  # py-libp2p raises many kinds for a reset or broken connection
        pass
    gone.set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_runtime_stops_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    rt_dir, dev_dir = tmp_path / "runtime", tmp_path / "device"
    port = free_port()
    runtime = Runtime(rt_dir, port)
    with trio.fail_after(START_WITHIN_S):
        await runtime.start()
        address = await runtime.line_starting("listening")
        device_id = (await agentmesh("device", "init", "--data-dir", str(dev_dir))).stdout
        added = await agentmesh(
            "devices", "add", device_id.decode().strip(), "--data-dir", str(rt_dir)
        )
        assert added.returncode == 0, added.stderr

    member = build_host(Identity.load(dev_dir / "identity.key"))
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    async with member.run(listen_addrs=[]), trio.open_nursery() as nursery:
        with trio.fail_after(START_WITHIN_S):
            await member.connect(info)
            stream = await member.new_stream(info.peer_id, [SYNC_PROTOCOL])
        stranger = await trio.open_tcp_stream("127.0.0.1", port)
        await stranger.send_all(b"\x13/multistream/1.0.0\n")  # ... and no more

        member_gone, stranger_gone = trio.Event(), trio.Event()
        nursery.start_soon(until_closed, stream.read, member_gone)
        nursery.start_soon(until_closed, stranger.receive_some, stranger_gone)

        code, err, took = await runtime.stop(sig)
        assert code == 0, err
        assert took < STOP_WITHIN_S
        print(f"\nruntime stopped on {signal.Signals(sig).name} in {took:.2f} s")
        assert "runtime stopped" in err
        assert "Traceback" not in err
        with trio.fail_after(STOP_WITHIN_S):
            await member_gone.wait()
            await stranger_gone.wait()
        await stranger.aclose()
        with trio.CancelScope(shield=True):
            await member.close()

    # The lock is released: a second runtime starts on the same dir (and port) ...
    again = Runtime(rt_dir, port)
    with trio.fail_after(START_WITHIN_S):
        await again.start()
        assert await again.line_starting("listening") == address
    code, err, _ = await again.stop(signal.SIGTERM)
    assert code == 0, err

    # ... and the store opens cleanly, read-write, under the lock.
    datadir = DataDir(rt_dir)
    with datadir.locked():
        node = open_node(datadir)
        try:
            device_key = Identity.load(dev_dir / "identity.key").public_key
            assert node.replica.membership.is_member(device_key)
        finally:
            node.close()
    with sqlite3.connect(datadir.store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_second_runtime_on_a_dir_in_use_fails_clearly(tmp_path: Path) -> None:
    rt_dir = tmp_path / "runtime"
    first = Runtime(rt_dir, free_port())
    with trio.fail_after(START_WITHIN_S):
        await first.start()
        await first.line_starting("listening")
        second = await agentmesh(
            "runtime", "--data-dir", str(rt_dir), "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}"
        )
    assert second.returncode != 0
    err = second.stderr.decode()
    assert str(rt_dir) in err
    assert "in use" in err
    assert "Traceback" not in err
    assert second.stdout == b""  # it never started listening

    # The first runtime was not disturbed (its control socket still answers).
    with trio.fail_after(START_WITHIN_S):
        status = await agentmesh("status", "--json", "--data-dir", str(rt_dir))
    assert status.returncode == 0, status.stderr
    assert b'"running": true' in status.stdout
    code, err, _ = await first.stop(signal.SIGTERM)
    assert code == 0, err
