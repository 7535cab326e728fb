"""Yamux window credit over real libp2p hosts: granted in half-window steps, never stalled."""

from __future__ import annotations

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from tests.mesh.transport.test_acceptance import libp2p_pair

FRAMES = 2_000
FRAME_BYTES = 400


def _frame(i: int) -> bytes:
    return i.to_bytes(4, "big") * (FRAME_BYTES // 4)


async def test_small_frames_do_not_cost_a_window_update_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    increments: list[int] = []
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        increments.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    async with libp2p_pair() as (left, right, _, _):
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def send_all() -> None:
                    for i in range(FRAMES):
                        await left.send(_frame(i))

                nursery.start_soon(send_all)
                for i in range(FRAMES):
                    assert await right.receive() == _frame(i)
    total = FRAMES * FRAME_BYTES
    # ~800 KB through a 256 KiB window: credit had to be granted, or the sender would
    # have stalled; in half-window steps that is a handful of updates, not one per read.
    assert total > DEFAULT_WINDOW_SIZE
    assert 0 < len(increments) <= total // (DEFAULT_WINDOW_SIZE // 2) + 1
    assert sum(increments) >= total - DEFAULT_WINDOW_SIZE
