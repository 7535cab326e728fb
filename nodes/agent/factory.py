"""Which agent a runtime runs: ``builtin`` (default), ``llm``, or ``none``."""

from __future__ import annotations

from nodes.agent.base import Agent
from nodes.agent.errors import AgentError

AGENT_KINDS = ("builtin", "llm", "none")


def make_agent(
    kind: str, *, llm_url: str | None, llm_model: str | None, api_key: str | None
) -> Agent | None:
    """The agent of ``kind`` (None for ``none``); ``AgentError`` when misconfigured."""
    if kind == "none":
        return None
    if kind == "builtin":
        from nodes.agent.builtin import BuiltinAgent

        return BuiltinAgent()
    if kind == "llm":
        if not llm_url or not llm_model:
            raise AgentError("--agent llm needs --llm-url and --llm-model")
        if not llm_url.startswith(("http://", "https://")):
            raise AgentError(f"--llm-url {llm_url!r} is not an http(s) URL")
        from nodes.agent.llm import ChatCompletionsAgent

        return ChatCompletionsAgent(llm_url, llm_model, api_key)
    raise AgentError(f"unknown agent {kind!r}; one of {', '.join(AGENT_KINDS)}")
