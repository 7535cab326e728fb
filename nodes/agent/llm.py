"""An agent backed by any OpenAI-compatible chat-completions endpoint, with tool calls.

It also answers messages (``ChatAgent``): the recent conversation, no tools.

Each task is one conversation: a system prompt, the task as the user's message,
then rounds of ``POST {base_url}/chat/completions`` (``model``, ``messages``,
``tools``). A reply with ``tool_calls`` runs each call through the context
(approval first for sensitive tools) and sends the results back as ``tool``
messages; a reply without them is the task's answer. A failed or refused call
goes back to the model as ``error: ...``, so it can explain or try something
else. At most ``MAX_AGENT_STEPS`` rounds.

The API key is read from an environment variable named on the command line,
never stored in the data dir.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import trio

from mesh.limits import LLM_REQUEST_TIMEOUT_S, MAX_AGENT_STEPS, MAX_LLM_RESPONSE_BYTES
from nodes.agent.base import Context, Job, ToolSpec, Turn
from nodes.agent.errors import LLMError, ToolError, TooManySteps

SYSTEM_PROMPT = (
    "You are the user's agent, running on their server. Devices send you tasks. "
    "Use the tools when they help; some need the user's approval and may be refused. "
    "Answer with a short plain-text reply."
)


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """A tool as the chat-completions API describes one."""
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": dict(spec.parameters) or {"type": "object", "properties": {}},
        },
    }


class ChatCompletionsAgent:
    """``agentmesh runtime --agent llm --llm-url URL --llm-model MODEL [--llm-key-env VAR]``."""

    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        system_prompt: str = SYSTEM_PROMPT,
        timeout_s: float = LLM_REQUEST_TIMEOUT_S,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s

    async def run(self, job: Job, context: Context) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": job.text},
        ]
        tools = [tool_schema(spec) for spec in context.tools]
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for round_number in range(1, MAX_AGENT_STEPS + 1):
                message = await self._complete(client, messages, tools)
                calls = message.get("tool_calls") or []
                if not calls:
                    content = message.get("content")
                    if not isinstance(content, str) or not content.strip():
                        raise LLMError("the model answered with neither text nor tool calls")
                    return content
                if not isinstance(calls, list):
                    raise LLMError("tool_calls is not a list")
                messages.append(
                    {"role": "assistant", "content": message.get("content"), "tool_calls": calls}
                )
                for call in calls:
                    call_id, name, args = _parse_call(call)
                    try:
                        result = await context.call_tool(name, args)
                    except TooManySteps:
                        raise
                    except ToolError as exc:
                        result = f"error: {exc}"
                    messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
                await context.progress(f"round {round_number}: {len(calls)} tool call(s)")
        raise TooManySteps(f"no answer after {MAX_AGENT_STEPS} rounds")

    async def reply(self, conversation: Sequence[Turn]) -> str:
        """Answer the last message of ``conversation`` (no tools in a chat turn)."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt}]
        messages += [{"role": turn.role, "content": turn.text} for turn in conversation]
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            message = await self._complete(client, messages, [])
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise LLMError("the model answered with no text")
        return content

    async def _complete(
        self, client: httpx.AsyncClient, messages: list[dict[str, Any]], tools: list[Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            body["tools"] = tools
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            # httpx's timeout bounds each read; this bounds the whole response.
            with trio.fail_after(self.timeout_s):
                async with client.stream("POST", self.url, json=body, headers=headers) as response:
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_LLM_RESPONSE_BYTES:
                            raise LLMError(f"response larger than {MAX_LLM_RESPONSE_BYTES} bytes")
                    status = response.status_code
        except (httpx.TimeoutException, trio.TooSlowError) as exc:
            raise LLMError(f"{self.url}: no response within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        text = data.decode("utf-8", "replace")
        if status != 200:
            raise LLMError(f"{self.url}: HTTP {status}: {text[:300]}")
        try:
            reply = json.loads(text)
            message = reply["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.url}: not a chat-completions response ({exc!r})") from exc
        if not isinstance(message, dict):
            raise LLMError(f"{self.url}: choices[0].message is not an object")
        return message


def _parse_call(call: Any) -> tuple[str, str, Mapping[str, Any]]:
    """(id, tool name, arguments) of one ``tool_calls`` entry; ``LLMError`` if malformed."""
    try:
        call_id, function = call["id"], call["function"]
        name, raw = function["name"], function.get("arguments") or "{}"
        args = json.loads(raw) if isinstance(raw, str) else raw
    except (KeyError, TypeError, ValueError) as exc:
        raise LLMError(f"malformed tool call ({exc!r})") from exc
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, dict):
        raise LLMError("malformed tool call (id, name or arguments of the wrong type)")
    return call_id, name, args
