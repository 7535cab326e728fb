"""The chat-completions agent against a local stub endpoint speaking the real HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from mesh.limits import MAX_AGENT_STEPS
from nodes.agent.base import Job, ToolSpec, Turn
from nodes.agent.errors import ApprovalRefused, LLMError, TooManySteps
from nodes.agent.llm import ChatCompletionsAgent
from tests.nodes.agent.llm_stub import StubModel, calls, fails, says

JOB = Job("t1", "remember that the sky is blue", "device")


class FakeContext:
    """Stands in for the runtime's journaled context: records calls, refuses some."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.progress_notes: list[str] = []
        self.refuse = refuse

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        params = {"type": "object", "properties": {"key": {"type": "string"}}}
        return (
            ToolSpec("remember", "Remember a value.", params),
            ToolSpec("write_file", "w", sensitive=True),
        )

    async def call_tool(self, name: str, args: Mapping[str, Any]) -> str:
        self.calls.append((name, dict(args)))
        if name in self.refuse:
            raise ApprovalRefused(f"{name} was denied by phone")
        return f"{name} ok"

    async def progress(self, text: str) -> None:
        self.progress_notes.append(text)

    async def notify(self, text: str) -> None:
        pass


async def run_agent(model: StubModel, context: FakeContext) -> str:
    """The agent's answer, or its exception (outside the stub server's nursery)."""
    outcome: str | Exception = ""
    async with trio.open_nursery() as nursery:
        await nursery.start(model.serve)
        agent = ChatCompletionsAgent(model.base_url, "stub-1", "sk-test")
        try:
            outcome = await agent.run(JOB, context)
        except Exception as exc:
            outcome = exc
        nursery.cancel_scope.cancel()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def test_tool_calls_then_an_answer() -> None:
    model = StubModel([calls("remember", key="sky", value="blue"), says("Noted: the sky is blue.")])
    context = FakeContext()
    assert await run_agent(model, context) == "Noted: the sky is blue."
    assert context.calls == [("remember", {"key": "sky", "value": "blue"})]
    first, second = model.requests
    assert first["model"] == "stub-1"
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == JOB.text
    assert {t["function"]["name"] for t in first["tools"]} == {"remember", "write_file"}
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert second["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_2",
        "content": "remember ok",
    }


async def test_a_refused_call_goes_back_to_the_model() -> None:
    model = StubModel([calls("write_file", name="a", content="b"), says("I was not allowed.")])
    context = FakeContext(refuse=frozenset({"write_file"}))
    assert await run_agent(model, context) == "I was not allowed."
    assert model.requests[1]["messages"][-1]["content"] == "error: write_file was denied by phone"


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_an_http_error_fails_the_task_clearly(status: int) -> None:
    with pytest.raises(LLMError, match=f"HTTP {status}"):
        await run_agent(StubModel([fails(status)]), FakeContext())


async def test_an_unreachable_endpoint_fails_the_task_clearly() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = ChatCompletionsAgent(f"http://127.0.0.1:{port}/v1", "m")
    with pytest.raises(LLMError, match="ConnectError"):
        await agent.run(JOB, FakeContext())


async def test_a_model_that_never_answers_is_stopped() -> None:
    script = [calls("remember", key=f"k{i}", value="v") for i in range(MAX_AGENT_STEPS + 5)]
    with pytest.raises(TooManySteps):
        await run_agent(StubModel(script), FakeContext())


async def test_a_malformed_tool_call_is_an_llm_error() -> None:
    def bad(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = {"id": "c", "type": "function", "function": {"name": "remember", "arguments": "{"}}
        return 200, {"role": "assistant", "tool_calls": [call]}

    with pytest.raises(LLMError, match="malformed tool call"):
        await run_agent(StubModel([bad]), FakeContext())


async def test_an_empty_answer_is_an_llm_error() -> None:
    with pytest.raises(LLMError, match="neither text nor tool calls"):
        await run_agent(StubModel([says("")]), FakeContext())


async def test_a_chat_reply_gets_the_conversation_and_no_tools() -> None:
    model = StubModel([says("Fine, thanks.")])
    conversation = [Turn("user", "hello"), Turn("assistant", "hi"), Turn("user", "how are you?")]
    async with trio.open_nursery() as nursery:
        await nursery.start(model.serve)
        agent = ChatCompletionsAgent(model.base_url, "stub-1")
        assert await agent.reply(conversation) == "Fine, thanks."
        nursery.cancel_scope.cancel()
    [request] = model.requests
    assert "tools" not in request
    assert [(m["role"], m["content"]) for m in request["messages"][1:]] == [
        ("user", "hello"),
        ("assistant", "hi"),
        ("user", "how are you?"),
    ]


async def test_an_endpoint_that_never_finishes_answering_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def slow(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"role": "assistant", "content": "late"}

    model = StubModel([slow], delay_s=3600.0)  # MockClock: no real waiting
    outcome: Exception | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(model.serve)
        agent = ChatCompletionsAgent(model.base_url, "stub-1", timeout_s=5.0)
        try:
            await agent.run(JOB, FakeContext())
        except LLMError as exc:
            outcome = exc
        nursery.cancel_scope.cancel()
    assert outcome is not None and "no response within 5 s" in str(outcome)
