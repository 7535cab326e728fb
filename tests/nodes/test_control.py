"""The control socket: one request, one reply; a handler's failure is a reply, not a dead node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from nodes import control
from nodes.errors import ControlError, NodeError


def handler(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "refuse":
        raise NodeError("refused, clearly")
    if op == "bug":
        raise OverflowError("cannot convert float infinity to integer")
    return {"ok": True, "echo": op}


async def test_errors_become_replies_and_the_socket_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve_control, path, handler)
        assert path.stat().st_mode & 0o777 == 0o600

        def ask(op: str) -> dict[str, Any] | None:
            return control.request(path, {"op": op})

        with pytest.raises(ControlError, match="refused, clearly"):
            await trio.to_thread.run_sync(ask, "refuse")
        with pytest.raises(ControlError, match="internal error: OverflowError"):
            await trio.to_thread.run_sync(ask, "bug")
        assert await trio.to_thread.run_sync(ask, "status") == {"ok": True, "echo": "status"}
        nursery.cancel_scope.cancel()
    assert control.request(path, {"op": "status"}) is None  # gone with the node
