"""A local stand-in for an OpenAI-compatible endpoint: real HTTP/1.1 (h11) on 127.0.0.1.

It answers ``POST /v1/chat/completions`` with the next scripted assistant
message, wrapped as the API wraps it, and records every request body. Other
paths get 404; a script can also answer with an HTTP error status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

#: A step of the script: the request body -> (status, assistant message or error body).
Step = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def says(text: str) -> Step:
    return lambda request: (200, {"role": "assistant", "content": text})


def calls(tool: str, /, **args: Any) -> Step:
    def step(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        number = len(request["messages"])
        call = {
            "id": f"call_{number}",
            "type": "function",
            "function": {"name": tool, "arguments": json.dumps(args)},
        }
        return 200, {"role": "assistant", "content": None, "tool_calls": [call]}

    return step


def fails(status: int) -> Step:
    return lambda request: (status, {"error": {"message": "stub failure", "type": "server"}})


@dataclass
class StubModel:
    script: list[Step]
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    #: Wait this long (trio time) before answering: a slow endpoint.
    delay_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    target, body = event.target, bytearray()
                    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Data):
                            body += event.data
                    status, payload = self._answer(target, bytes(body))
                    if self.delay_s:
                        await trio.sleep(self.delay_s)
                    out = json.dumps(payload).encode()
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(out))),
                    ]
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=headers))
                    )
                    await stream.send_all(conn.send(h11.Data(data=out)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return

    def _answer(self, target: bytes, body: bytes) -> tuple[int, dict[str, Any]]:
        if target != b"/v1/chat/completions":
            return 404, {"error": {"message": "not found"}}
        request = json.loads(body)
        self.requests.append(request)
        if not self.script:
            return 500, {"error": {"message": "the script has ended"}}
        status, message = self.script.pop(0)(request)
        if status != 200:
            return status, message
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
