"""``agentmesh task list|show``, ``agentmesh messages``, ``agentmesh notifications [dismiss]``.

Imported only when one of them runs. Like ``agentmesh approvals``: ask the node
running in the data dir over its control socket; with none running, read the
store read-only (lists) or open it under the data dir's lock (a dismissal,
which syncs when the node next runs). See docs/CLI.md and docs/AGENT.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nodes.cli import _datadir, _Group, _help_width, ask_node, data_dir_option, offline_node
from nodes.errors import NotFound

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


class UnknownTask(NotFound):
    """No task with that id in this replica."""


def _ask(data_dir: Path | None, request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``key`` of the running node's answer to ``request``, else the same from the store."""
    from nodes import control, notifications
    from nodes.agent import views
    from nodes.setup import open_readonly

    datadir = _datadir(data_dir)
    datadir.require()
    reply = control.request(datadir.control_socket, request)
    if reply is not None:
        rows: list[dict[str, Any]] = reply[key]
        return rows
    replica = open_readonly(datadir)
    try:
        if key == "tasks":
            return views.tasks(replica)
        if key == "conversation":
            from nodes.agent import chat

            return chat.view(replica)
        return notifications.view(replica, include_dismissed=request.get("all") is True)
    finally:
        replica.store.close()


def _task_text(row: dict[str, Any], *, full: bool) -> str:
    from nodes.inspection import iso

    lines = [f"{row['id']}  {row['state']}  {row['text'].splitlines()[0][:60]}"]
    if full:
        lines.append(f"    requested {iso(row['requested_ts'])} by {row['author']}")
        if row["progress"]:
            lines.append(f"    progress: {row['progress']}")
        for number, step in enumerate(row["steps"], 1):
            approval = f" (approval {step['approval']})" if step["approval"] else ""
            lines.append(f"    step {number}: {step['tool']} {step['state']}{approval}")
            if step["result"]:
                lines.append(f"        {step['result']}")
    if row["reply"]:
        lines.extend(f"    > {line}" for line in row["reply"].splitlines())
    if row["error"]:
        lines.append(f"    error: {row['error']}")
    return "\n".join(lines)


@click.command("list")
@data_dir_option
@json_option
def task_list(data_dir: Path | None, as_json: bool) -> None:
    """List tasks: state, and the agent's reply once it has one."""
    rows = _ask(data_dir, {"op": "tasks"}, "tasks")
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
    elif not rows:
        click.echo("no tasks")
    else:
        for row in rows:
            click.echo(_task_text(row, full=False))


@click.command("show")
@data_dir_option
@json_option
@click.argument("task_id", metavar="ID")
def task_show(data_dir: Path | None, as_json: bool, task_id: str) -> None:
    """Show task ID: its request, progress, every tool call, and the reply."""
    rows = [row for row in _ask(data_dir, {"op": "tasks"}, "tasks") if row["id"] == task_id]
    if not rows:
        raise UnknownTask(f"no task {task_id!r} (not requested, or not synced yet)")
    if as_json:
        click.echo(json.dumps(rows[0], sort_keys=True))
    else:
        click.echo(_task_text(rows[0], full=True))


@click.command("messages")
@data_dir_option
@json_option
def messages(data_dir: Path | None, as_json: bool) -> None:
    """The conversation: messages sent to the agent, each followed by its replies."""
    from nodes.inspection import iso

    rows = _ask(data_dir, {"op": "conversation"}, "conversation")
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    if not rows:
        click.echo("no messages")
    for row in rows:
        who = "agent" if row["role"] == "assistant" else str(row.get("author") or "?")[:16]
        click.echo(f"{iso(int(row['ts']))}  {who}: {row['text']}")


@click.group(
    "notifications",
    cls=_Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": _help_width()},
    epilog="Exit codes: 0 ok; 1 error; 2 usage; 3 unknown notification. See docs/CLI.md.",
)
@data_dir_option
@json_option
@click.option("--all", "show_all", is_flag=True, help="Include dismissed notifications.")
@click.pass_context
def notifications_group(
    ctx: click.Context, data_dir: Path | None, as_json: bool, show_all: bool
) -> None:
    """List the agent's notifications (dismissed on one device: dismissed on all)."""
    from nodes.inspection import iso

    ctx.obj = data_dir
    if ctx.invoked_subcommand is not None:
        return
    rows = _ask(data_dir, {"op": "notifications", "all": show_all}, "notifications")
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
    elif not rows:
        click.echo("no notifications")
    for row in rows if not as_json else ():
        mark = " (dismissed)" if row["dismissed"] else ""
        click.echo(f"{row['id']}  {iso(row['ts'])}  {row['text']}{mark}")


@notifications_group.command("dismiss")
@data_dir_option
@click.argument("notification_id", metavar="ID")
@click.pass_context
def dismiss(ctx: click.Context, data_dir: Path | None, notification_id: str) -> None:
    """Dismiss notification ID on every device (works offline)."""
    from nodes import notifications

    datadir = _datadir(data_dir or ctx.obj)
    datadir.require()
    payload = {"op": "dismiss", "id": notification_id}
    if ask_node(datadir, payload) is not None:
        click.echo(f"dismissed {notification_id}")
        return
    with offline_node(datadir) as (node, transact, now):
        key = node.identity.public_key
        notifications.dismiss(transact, node.replica, key, notification_id, now)
    click.echo(f"dismissed {notification_id} (syncs when the node runs)")
