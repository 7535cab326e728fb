"""A deterministic agent: one command per line of the task, no model behind it.

For demos and tests (the same task always makes the same calls):

* ``remember KEY = VALUE`` -> tool ``remember``;
* ``recall KEY`` -> tool ``recall``;
* ``write NAME: CONTENT`` -> tool ``write_file`` (sensitive: waits for approval);
* ``notify TEXT`` -> a notification on every device;
* ``fail REASON`` -> the task fails with REASON;
* any other line is acknowledged as ``noted: LINE``.

The reply is one line per command. A refused or failed tool call becomes a
line of the reply (``write NAME: refused (...)``), not a failed task.
"""

from __future__ import annotations

from nodes.agent.base import Context, Job
from nodes.agent.errors import AgentError, ToolError


class BuiltinAgent:
    """The deterministic agent (``agentmesh runtime --agent builtin``, the default)."""

    name = "builtin"

    async def run(self, job: Job, context: Context) -> str:
        lines = [line.strip() for line in job.text.splitlines() if line.strip()]
        answers = []
        for number, line in enumerate(lines, 1):
            await context.progress(f"line {number} of {len(lines)}")
            answers.append(await self._line(line, context))
        return "\n".join(answers) if answers else "nothing to do"

    async def _line(self, line: str, context: Context) -> str:
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        try:
            if verb == "remember" and "=" in rest:
                key, _, value = rest.partition("=")
                return await context.call_tool(
                    "remember", {"key": key.strip(), "value": value.strip()}
                )
            if verb == "recall" and rest.strip():
                return await context.call_tool("recall", {"key": rest.strip()})
            if verb == "write" and ":" in rest:
                name, _, content = rest.partition(":")
                return await context.call_tool(
                    "write_file", {"name": name.strip(), "content": content.strip()}
                )
        except ToolError as exc:
            return f"{verb}: refused ({exc})"
        if verb == "notify" and rest.strip():
            await context.notify(rest.strip())
            return f"notified: {rest.strip()}"
        if verb == "fail":
            raise AgentError(rest.strip() or "asked to fail")
        return f"noted: {line}"
