"""``agentmesh approvals ...``: list approvals, request one (runtime), approve or deny.

Imported only when ``agentmesh approvals`` runs (``nodes.cli`` hands it the
arguments). Every command asks the node running in the data dir over its control
socket; when none runs, it opens the store itself under the data dir's lock (a
write: the decision or request syncs when the node next runs) or read-only (the
list). See docs/CLI.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from nodes.cli import _datadir, _Group, _help_width, ask_node, data_dir_option, offline_node
from nodes.errors import NodeError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@contextmanager
def _offline_node(datadir: Any) -> Iterator[tuple[Any, Any, int]]:
    """``offline_node``; on the runtime, pending approvals are resolved before it closes,
    as a running one would."""
    from nodes import approvals
    from nodes.setup import RUNTIME_ROLE

    with offline_node(datadir) as (node, transact, now):
        yield node, transact, now
        if node.role == RUNTIME_ROLE.decode():
            approvals.resolve(node.replica, transact, now)


def _rows(data_dir: Path | None) -> list[dict[str, Any]]:
    """The approvals as the running node holds them, else as its store does (read-only)."""
    from nodes import approvals, control
    from nodes.setup import open_readonly

    datadir = _datadir(data_dir)
    datadir.require()
    reply = control.request(datadir.control_socket, {"op": "approvals"})
    if reply is not None:
        rows: list[dict[str, Any]] = reply["approvals"]
        return rows
    replica = open_readonly(datadir)
    try:
        return approvals.view(replica)
    finally:
        replica.store.close()


def _text(row: dict[str, Any]) -> str:
    from nodes.inspection import iso

    votes = {"approve": 0, "deny": 0}
    for decision in row["decisions"]:
        votes[decision["decision"]] += 1
    lines = [
        f"{row['id']}  {row['state']}  {row['action']}  "
        f"(approve {votes['approve']}, deny {votes['deny']}, ignored {row['ignored']})"
    ]
    if row["details"]:
        lines.append(f"    details: {row['details']}")
    lines.append(f"    requested {iso(row['ts'])}")
    if row.get("decided_by"):
        lines.append(f"    {row['state']} by {row['decided_by']} at {iso(row['decided_ts'])}")
    for decision in row["decisions"]:
        lines.append(f"    {decision['decision']}: {decision['device']} ({iso(decision['ts'])})")
    return "\n".join(lines)


@click.group(
    "approvals",
    cls=_Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": _help_width()},
    epilog="Exit codes: 0 ok; 1 error or refused; 2 usage; 3 unknown approval. See docs/CLI.md.",
)
@data_dir_option
@json_option
@click.pass_context
def approvals(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """List approvals: each with its state and the decisions that count.

    A decision counts only when its device holds the approve capability; others
    are shown as ignored. Subcommands request (runtime), approve and deny.
    """
    ctx.obj = data_dir
    if ctx.invoked_subcommand is not None:
        return
    rows = _rows(data_dir)
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
    elif not rows:
        click.echo("no approvals")
    else:
        for row in rows:
            click.echo(_text(row))


@approvals.command("request")
@data_dir_option
@click.argument("action")
@click.option("--details", default="", help="What exactly is to be approved.")
@click.pass_context
def request(ctx: click.Context, data_dir: Path | None, action: str, details: str) -> None:
    """Ask the devices holding approve to approve ACTION (on the runtime); prints its id."""
    from nodes import approvals as approvals_
    from nodes.setup import RUNTIME_ROLE

    datadir = _datadir(data_dir or ctx.obj)
    datadir.require()
    payload = {"op": "approval-request", "action": action, "details": details}
    reply = ask_node(datadir, payload)
    if reply is not None:
        click.echo(reply["id"])
        return
    with _offline_node(datadir) as (node, transact, now):
        if node.role != RUNTIME_ROLE.decode():
            raise NodeError("only the runtime requests approvals")
        approval_id = approvals_.request_approval(transact, action, details, now)
    click.echo(approval_id)


def _decide(ctx: click.Context, data_dir: Path | None, approval_id: str, decision: str) -> None:
    from nodes import approvals as approvals_

    datadir = _datadir(data_dir or ctx.obj)
    datadir.require()
    listed = ask_node(datadir, {"op": "approvals"})
    if listed is not None:
        if not any(row.get("id") == approval_id for row in listed["approvals"]):
            raise approvals_.UnknownApproval(
                f"no approval {approval_id!r} (not requested, or not synced yet)"
            )
        payload = {"op": "decide", "id": approval_id, "decision": decision}
        if ask_node(datadir, payload) is not None:
            click.echo(f"{decision} recorded for {approval_id}")
            return
    with _offline_node(datadir) as (node, transact, now):
        key = node.identity.public_key
        approvals_.decide(transact, node.replica, key, approval_id, decision, now)
    click.echo(f"{decision} recorded for {approval_id} (syncs when the node runs)")


@approvals.command("approve")
@data_dir_option
@click.argument("approval_id", metavar="ID")
@click.pass_context
def approve(ctx: click.Context, data_dir: Path | None, approval_id: str) -> None:
    """Approve approval ID (this device must hold the approve capability)."""
    _decide(ctx, data_dir, approval_id, "approve")


@approvals.command("deny")
@data_dir_option
@click.argument("approval_id", metavar="ID")
@click.pass_context
def deny(ctx: click.Context, data_dir: Path | None, approval_id: str) -> None:
    """Deny approval ID (this device must hold the approve capability); any deny wins."""
    _decide(ctx, data_dir, approval_id, "deny")
