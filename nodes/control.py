"""The local control socket of a running node: one JSON request line, one JSON reply line.

The socket lives in the data dir with mode 0600, so only the node's user can
talk to it. Requests: ``{"op": "send", "text": ...}``, ``{"op": "task-add", ...}``,
``{"op": "task-cancel", "id": ...}``, ``{"op": "status"}``, and more (nodes/service.py).
A handler answers at once, or returns an awaitable when it must wait for the network
(an admin device forwarding a request to the runtime).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from mesh.limits import DIAL_TIMEOUT_MS

if TYPE_CHECKING:  # trio-typing (a libp2p dependency) ships older stubs for trio
    from trio_typing import TaskStatus
else:
    from trio import TaskStatus
from nodes.errors import ControlError, NodeError

log = logging.getLogger("agentmesh.control")
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Longer than a dial (an admin device's node forwards requests to the runtime).
REQUEST_TIMEOUT_S = DIAL_TIMEOUT_MS / 1000 + 5.0

Handler = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


async def serve_control(
    path: Path, handle: Handler, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve requests on a Unix socket at ``path`` (mode 0600) until cancelled.

    With ``nursery.start``, returns once the socket accepts connections.
    """
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()

    async def serve_one(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                data = b""
                while not data.endswith(b"\n") and len(data) <= MAX_REQUEST_BYTES:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
                try:
                    request = json.loads(data)
                    if not isinstance(request, dict):
                        raise ValueError("request must be an object")
                    answer = handle(request)
                    reply = await answer if inspect.isawaitable(answer) else answer
                except NodeError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except ValueError as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except Exception as exc:  # a bug or bad replicated data: one failed request
                    log.exception("control request %r failed", request.get("op"))
                    reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
                await stream.send_all(json.dumps(reply).encode() + b"\n")

    try:
        await trio.serve_listeners(serve_one, [listener])
    finally:
        path.unlink(missing_ok=True)


def request(path: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Send one request to a running node; None when no node is listening."""
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"bad reply from the running node: {exc}") from exc
    if not isinstance(reply, dict):
        raise ControlError("bad reply from the running node")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "request failed")))
    return reply
