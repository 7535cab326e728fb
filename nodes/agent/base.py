"""What an agent plugin implements, and what it may ask of the runtime while it works."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Job:
    """One task request from ``shared/tasks``."""

    task_id: str
    text: str
    #: PeerId of the device that asked (as it wrote it; informational).
    author: str


@dataclass(frozen=True)
class ToolSpec:
    """A tool as an agent sees it; ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: A sensitive call runs only after a device holding ``approve`` approved it.
    sensitive: bool = False


class Context(Protocol):
    """What the runtime offers an agent working on one job."""

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """The tools this agent may call."""
        ...

    async def call_tool(self, name: str, args: Mapping[str, Any]) -> str:
        """Run a tool (asking for approval first if it is sensitive); its result text.

        Raises ``ToolError`` (``ApprovalRefused`` when denied or expired). A call
        already made before a restart returns its recorded result instead of
        running again.
        """
        ...

    async def progress(self, text: str) -> None:
        """Show how the task is going (``agent/tasks/<id>/progress``)."""
        ...

    async def notify(self, text: str) -> None:
        """Raise a notification on every device (``agent/notifications``)."""
        ...


class Agent(Protocol):
    """An agent plugin. ``run`` returns the reply; raising ``AgentError`` fails the task."""

    name: str

    async def run(self, job: Job, context: Context) -> str: ...


@dataclass(frozen=True)
class Turn:
    """One turn of the conversation: ``user`` (a device's message) or ``assistant``."""

    role: str
    text: str


@runtime_checkable
class ChatAgent(Protocol):
    """An agent that also answers messages (``shared/messages``), one at a time, in order.

    ``conversation`` ends with the message to answer. No tools: a chat turn has no
    journal, so after a restart an unanswered message is simply answered again.
    """

    name: str

    async def reply(self, conversation: Sequence[Turn]) -> str: ...
