"""Errors of the agent layer; a task that raises one ends ``failed`` with its message."""

from __future__ import annotations

from nodes.errors import NodeError


class AgentError(NodeError):
    """Base of agent errors: the task fails, the runtime keeps running."""


class ToolError(AgentError):
    """A tool call failed (bad arguments, no such tool, its action failed)."""


class ApprovalRefused(ToolError):
    """A sensitive tool call was denied, or its approval expired (fail closed)."""


class TooManySteps(AgentError):
    """The task made more than MAX_AGENT_STEPS tool calls or LLM rounds."""


class LLMError(AgentError):
    """The LLM endpoint failed, timed out, or answered something unreadable."""
