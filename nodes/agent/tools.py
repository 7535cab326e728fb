"""The tools a runtime offers its agent.

Built in: ``remember`` / ``recall`` (``shared/memory``, replicated to every
device), and ``write_file``, which writes a file into the runtime's workspace
(``<data dir>/workspace``) and is **sensitive**: it runs only once a device
holding ``approve`` approved that exact call. Non-sensitive tools may run again
after a crash (they are idempotent); a sensitive one never runs twice.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycrdt import Map

from crdt_state.schema import SHARED
from mesh.limits import MAX_AGENT_TEXT_BYTES, MAX_WORKSPACE_FILE_BYTES
from nodes.agent.base import ToolSpec
from nodes.agent.errors import ToolError
from nodes.app import Transact

if TYPE_CHECKING:
    from crdt_state.replica import Replica

MEMORY_ROOT = "memory"
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Tool:
    """A tool: what the agent sees, and what runs."""

    spec: ToolSpec
    run: Callable[[Mapping[str, Any]], Awaitable[str]]


def text_arg(args: Mapping[str, Any], name: str, *, limit: int = MAX_AGENT_TEXT_BYTES) -> str:
    """A required string argument, checked; ``ToolError`` otherwise."""
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f"argument {name!r} must be a string")
    if len(value.encode()) > limit:
        raise ToolError(f"argument {name!r} is longer than {limit} bytes")
    return value


def _string_params(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
        "additionalProperties": False,
    }


def builtin_tools(
    replica: Replica, transact: Transact, workspace: Path, clock: Callable[[], int]
) -> dict[str, Tool]:
    """The built-in tools of a runtime, keyed by name."""

    async def remember(args: Mapping[str, Any]) -> str:
        key, value = text_arg(args, "key", limit=256), text_arg(args, "value")
        if not key.strip():
            raise ToolError("argument 'key' is empty")
        with transact(SHARED) as ydoc:
            ydoc.get(MEMORY_ROOT, type=Map)[key] = {"value": value, "by": "agent", "ts": clock()}
        return f"remembered {key}"

    async def recall(args: Mapping[str, Any]) -> str:
        key = text_arg(args, "key", limit=256)
        entry = replica.doc(SHARED).get(MEMORY_ROOT, type=Map).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("value"), str):
            return str(entry["value"])
        return f"nothing is remembered as {key}"

    async def write_file(args: Mapping[str, Any]) -> str:
        name = text_arg(args, "name", limit=64)
        content = text_arg(args, "content", limit=MAX_WORKSPACE_FILE_BYTES)
        if not _FILE_NAME.fullmatch(name):
            raise ToolError(f"{name!r} is not a plain file name (letters, digits, . _ -)")
        path = workspace / name
        temporary = path.with_name(f".{name}.tmp")
        try:
            workspace.mkdir(mode=0o700, exist_ok=True)
            temporary.write_text(content, encoding="utf-8")
            temporary.replace(path)
        except OSError as exc:
            raise ToolError(f"cannot write {name}: {exc.strerror or exc}") from exc
        return f"wrote {len(content.encode())} bytes to {name}"

    tools = [
        Tool(
            ToolSpec(
                "remember",
                "Remember a value under a key in the shared memory every device sees.",
                _string_params("key", "value"),
            ),
            remember,
        ),
        Tool(
            ToolSpec("recall", "Read the value remembered under a key.", _string_params("key")),
            recall,
        ),
        Tool(
            ToolSpec(
                "write_file",
                "Write a text file into the runtime's workspace (needs a device's approval).",
                _string_params("name", "content"),
                sensitive=True,
            ),
            write_file,
        ),
    ]
    return {tool.spec.name: tool for tool in tools}
