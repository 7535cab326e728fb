"""``agentmesh state ...`` and ``agentmesh status``: read-only inspection commands.

Imported only when one of them runs (``nodes.cli`` lists ``state`` lazily). They
open the store read-only (never the data dir's lock), so they work while the node
runs and on a stopped node's data dir, and they never import libp2p or trio.
See docs/CLI.md for the output formats and exit codes.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from nodes.cli import _datadir, data_dir_option
from nodes.inspection import Inspector, check_doc, iso, now_ms, parse_time, resolve_path

#: Entries shown per map in a tree unless --limit says otherwise (JSON shows everything).
TREE_LIMIT = 50

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show our warnings (an ignored snapshot) as one stderr line each, never raise them."""
    from crdt_state.snapshot import SnapshotWarning

    seen: set[str] = set()

    def show(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            click.echo(f"agentmesh: warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SnapshotWarning)
        warnings.showwarning = show
        yield


@contextmanager
def _open(data_dir: Path | None) -> Iterator[Inspector]:
    with _warnings_to_stderr():
        inspector = Inspector.open(_datadir(data_dir))
        try:
            yield inspector
        finally:
            inspector.close()


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, now_ms())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _doc_arg(doc: str) -> str:
    check_doc(doc)
    return doc


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped: do not squeeze tables into 80 columns
        console.width = max(console.width, 160)
    return console


def _short(peer_id: str | None) -> str:
    if not peer_id:
        return ""
    return peer_id if len(peer_id) <= 16 else f"{peer_id[:6]}…{peer_id[-6:]}"


def _who(row: dict[str, Any]) -> str:
    name = row.get("device") or ""
    short = _short(row.get("author"))
    return f"{name} ({short})" if name else short


def _scalar(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _tree(label: str, value: Any, limit: int) -> Any:
    from rich.markup import escape
    from rich.tree import Tree

    tree = Tree(escape(label))

    def add(node: Any, key: str, item: Any) -> None:
        if isinstance(item, dict) and item:
            child = node.add(f"[bold]{escape(key)}[/bold]")
            fill(child, item)
        elif isinstance(item, list) and item and any(isinstance(v, dict | list) for v in item):
            child = node.add(f"[bold]{escape(key)}[/bold] [dim]list of {len(item)}[/dim]")
            fill(child, {str(i): v for i, v in enumerate(item)})
        else:
            node.add(f"[bold]{escape(key)}[/bold]: {escape(_scalar(item))}")

    def fill(node: Any, mapping: dict[str, Any]) -> None:
        keys = sorted(mapping)
        hidden = len(keys) - limit if limit and len(keys) > limit else 0
        if hidden:
            node.add(f"[dim]… {hidden} earlier entries (--limit 0 or --json shows all)[/dim]")
            keys = keys[hidden:]
        for key in keys:
            add(node, key, mapping[key])

    if isinstance(value, dict):
        fill(tree, value)
    else:
        tree.add(escape(_scalar(value)))
    return tree


# --- state show --------------------------------------------------------------------------


@click.command("show")
@data_dir_option
@click.argument("doc", required=False)
@click.argument("path", required=False)
@json_option
@click.option(
    "--limit",
    default=TREE_LIMIT,
    show_default=True,
    type=click.IntRange(0),
    help="Entries shown per map in the tree (0: all). JSON always shows all.",
)
def show(
    data_dir: Path | None, doc: str | None, path: str | None, as_json: bool, limit: int
) -> None:
    """The current content of DOC (every document if omitted), or of PATH in it.

    PATH is ROOT[/KEY[/FIELD...]], e.g. 'messages' or 'messages/<id>/text'.
    Shown from the local snapshot; only envelopes stored after it are replayed.
    """
    if doc is not None:
        _doc_arg(doc)
    with _open(data_dir) as inspector:
        if doc is not None:
            inspector.require_doc(doc)
        views = inspector.views([doc] if doc is not None else None)
    if as_json and path is None:
        if doc is not None:
            click.echo(views[doc])
        else:
            body = b",".join(json.dumps(n).encode() + b":" + v for n, v in views.items())
            click.echo(b"{" + body + b"}")
        return
    if doc is None:
        content = {name: json.loads(view) for name, view in views.items()}
        if as_json:  # pragma: no cover - path needs a doc
            click.echo(_dumps(content))
            return
        console = _console()
        for name, value in content.items():
            console.print(_tree(name, value, limit))
        return
    value = json.loads(views[doc])
    label = doc
    if path is not None:
        walked, value = resolve_path(doc, value, path)
        label = f"{doc}/{'/'.join(walked)}"
    if as_json:
        click.echo(_dumps(value))
        return
    _console().print(_tree(label, value, limit))


# --- state watch -------------------------------------------------------------------------


@click.command("watch")
@data_dir_option
@click.argument("doc", required=False)
@json_option
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Stop after this many envelopes (default: until interrupted).",
)
def watch(data_dir: Path | None, doc: str | None, as_json: bool, count: int | None) -> None:
    """Print changes to DOC (every document if omitted) as they are stored.

    One line per envelope: time, author device, document, seq and the map keys it
    added, updated or deleted. Polls the store read-only, so it works while the
    node runs. With --json, one JSON object per line.
    """
    import time

    from nodes.inspection import WATCH_POLL_S

    if doc is not None:
        _doc_arg(doc)
    seen = 0
    with _open(data_dir) as inspector:
        watcher = inspector.watcher(doc)
        click.echo(
            f"watching {doc or 'every document'} in {inspector.datadir.path} "
            f"(from envelope {watcher.lid}; Ctrl-C stops)",
            err=True,
        )
        try:
            while count is None or seen < count:
                for change in watcher.poll():
                    _print_change(change, as_json)
                    seen += 1
                    if count is not None and seen >= count:
                        break
                else:
                    sys.stdout.flush()
                    time.sleep(WATCH_POLL_S)
        except KeyboardInterrupt:
            pass


def _print_change(change: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(_dumps(change))
        return
    head = f"{change['time']} {_who(change)} {change['doc']} #{change['seq']}"
    if not change["changes"]:
        click.echo(f"{head} (no visible change)")
    for item in change["changes"]:
        sign = {"add": "+", "update": "~", "delete": "-"}.get(item["action"], "?")
        tail = "" if item["action"] == "delete" else " = " + _scalar(item["value"])
        click.echo(f"{head} {sign}{item['path']}{tail}")
    sys.stdout.flush()


# --- state history -----------------------------------------------------------------------


@click.command("history")
@data_dir_option
@click.argument("doc", required=False)
@click.option("--author", help="Only this device (PeerId, name or public key in hex).")
@click.option("--since", help="Only from this time: ISO 8601, epoch ms, or ago (10m, 2h, 3d).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N rows.")
@json_option
def history(
    data_dir: Path | None,
    doc: str | None,
    author: str | None,
    since: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Envelopes of DOC (every document if omitted) and what each changed.

    Accepted envelopes in the order this node accepted them (# is the position in
    the document's log, for 'state at --seq'), with author device, incarnation, seq,
    HLC time, size, and the map keys inserted (+), overwritten (~) and deleted (-).
    Then what the store and the membership log know of the rest: refused envelopes
    (the newest the node kept), held ones (a running node's memory), and chains
    cut off by a revocation or quarantined after a fork.
    """
    since_ms = _time(since, "--since")
    if doc is not None:
        _doc_arg(doc)
    from nodes.inspection import running_status

    with _open(data_dir) as inspector:
        if doc is not None:
            inspector.require_doc(doc)
        key = inspector.resolve_device(author) if author else None
        running = running_status(inspector.datadir)
        rows = inspector.history(
            doc,
            author=key,
            since_ms=since_ms,
            held=running.get("held_envelopes", []) if running else (),
            refusals=running.get("refusals") if running else None,
        )
    if limit is not None:
        rows = rows[-limit:]
    if as_json:
        click.echo(_dumps(rows))
        return
    from rich import box
    from rich.table import Table

    show_doc = doc is None
    show_status = any(r["status"] != "accepted" or r.get("chain") for r in rows)
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    if show_doc:
        table.add_column("doc")
    table.add_column("author", no_wrap=True)
    table.add_column("inc", no_wrap=True)
    table.add_column("seq", justify="right")
    table.add_column("size", justify="right")
    table.add_column("what", overflow="fold")
    if show_status:
        table.add_column("status", overflow="fold")
    for row in rows:
        if row["status"] == "accepted":
            what = _changes_text(row)
            status = row["status"] + (f" ({row['chain']})" if row["chain"] else "")
            size, pos = str(row["size"]), str(row["pos"])
        else:
            what, status, size, pos = row["detail"], row["status"], str(row.get("size", "")), ""
        cells = [pos, _when(row["time"])]
        if show_doc:
            cells.append(row["doc"] or "")
        cells += [
            _who(row),
            (row["incarnation"] or "")[:8],
            "" if row["seq"] is None else str(row["seq"]),
            size,
            what,
        ]
        if show_status:
            cells.append(status)
        table.add_row(*cells)
    _console().print(table)


def _when(text: str | None) -> str:
    return (text or "")[:23].replace("T", " ")


def _changes_text(row: dict[str, Any]) -> str:
    parts = [f"+{k}" for k in row["inserted"]]
    parts += [f"~{k}" for k in row["overwritten"]]
    parts += [f"-{k}" for k in row["deleted"]]
    if row["unresolved"]:
        parts.append(f"({row['unresolved']} unresolved)")
    if not row["deleted"] and row["deleted_ranges"] and not row["overwritten"]:
        parts.append(f"deletes {len(row['deleted_ranges'])} ranges")
    return " ".join(parts)


# --- state blame -------------------------------------------------------------------------


@click.command("blame")
@data_dir_option
@click.argument("doc")
@click.argument("path")
@json_option
def blame(data_dir: Path | None, doc: str, path: str, as_json: bool) -> None:
    """Which device wrote the current value at PATH (ROOT/KEY...) of DOC, and when.

    Lists every write of that map key too; the current one is the write whose item
    is not deleted in the document (a concurrent loser or an older value is).
    """
    _doc_arg(doc)
    with _open(data_dir) as inspector:
        inspector.require_doc(doc)
        result = inspector.blame(doc, path)
    if as_json:
        click.echo(_dumps(result))
        return
    writer = result["writer"]
    console = _console()
    console.print(
        f"{doc}/{result['path']} = {_scalar(result['value'])}", markup=False, soft_wrap=True
    )
    console.print(
        f"written by {_who(writer)} at {writer['time']} "
        f"(incarnation {writer['incarnation'][:8]}, seq {writer['seq']}, "
        f"envelope #{writer['pos']})",
        markup=False,
        soft_wrap=True,
    )
    if len(result["writes"]) > 1:
        from rich.table import Table

        table = Table("#", "time (UTC)", "author", "inc", "seq", "current")
        for write in result["writes"]:
            table.add_row(
                str(write["pos"]),
                _when(write["time"]),
                _who(write),
                write["incarnation"][:8],
                str(write["seq"]),
                "yes" if write["current"] else "",
            )
        console.print(table)


# --- state at / diff ---------------------------------------------------------------------


@click.command("at")
@data_dir_option
@click.argument("doc")
@click.argument("path", required=False)
@click.option("--time", "at_time", help="As of this time (ISO 8601, epoch ms, or ago: 2h).")
@click.option(
    "--seq",
    type=click.IntRange(0),
    help="After the first N envelopes of DOC (# in 'state history').",
)
@json_option
@click.option("--limit", default=TREE_LIMIT, show_default=True, type=click.IntRange(0))
def at(
    data_dir: Path | None,
    doc: str,
    path: str | None,
    at_time: str | None,
    seq: int | None,
    as_json: bool,
    limit: int,
) -> None:
    """DOC (or PATH in it) as it was at --time T or after --seq N envelopes.

    Rebuilt from the envelope log: with --time, the envelopes whose HLC time is at
    most T, in the order this node accepted them.
    """
    if (at_time is None) == (seq is None):
        raise click.UsageError("give exactly one of --time and --seq")
    moment = _time(at_time, "--time")
    _doc_arg(doc)
    with _open(data_dir) as inspector:
        inspector.require_doc(doc)
        content, about = inspector.doc_at(doc, time_ms=moment, count=seq)
    value: Any = content
    label = f"{doc} at " + (f"{iso(moment)}" if moment is not None else f"#{seq}")
    if path is not None:
        walked, value = resolve_path(doc, content, path)
        label = f"{doc}/{'/'.join(walked)}" + label[len(doc) :]
    if as_json:
        click.echo(_dumps({"about": about, "content": value}))
        return
    console = _console()
    console.print(_tree(label, value, limit))
    note = f"{about['envelopes']} of {about['of']} envelopes"
    if about["incomplete_chains"]:
        note += f"; {about['incomplete_chains']} chains wait for later envelopes"
    console.print(f"[dim]{note}[/dim]")


@click.command("diff")
@data_dir_option
@click.argument("doc")
@click.option("--from", "t_from", help="Start time (default: the beginning).")
@click.option("--to", "t_to", help="End time (default: now).")
@json_option
def diff(
    data_dir: Path | None, doc: str, t_from: str | None, t_to: str | None, as_json: bool
) -> None:
    """What changed in DOC between --from T1 and --to T2: keys added, removed, changed."""
    from nodes.inspection import diff as compute_diff

    start = _time(t_from, "--from") if t_from is not None else 0
    end = _time(t_to, "--to") if t_to is not None else now_ms()
    assert start is not None and end is not None
    if start > end:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    _doc_arg(doc)
    with _open(data_dir) as inspector:
        inspector.require_doc(doc)
        before, _ = inspector.doc_at(doc, time_ms=start)
        after, _ = inspector.doc_at(doc, time_ms=end)
    result = {"doc": doc, "from": iso(start), "to": iso(end), **compute_diff(before, after)}
    if as_json:
        click.echo(_dumps(result))
        return
    lines = []
    for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for root, keys in result[kind].items():
            for key, value in keys.items():
                shown = (
                    f"{_scalar(value['from'])} -> {_scalar(value['to'])}"
                    if kind == "changed"
                    else _scalar(value)
                )
                lines.append(f"{sign} {root}/{key}: {shown}")
    click.echo(f"{doc}: {result['from']} -> {result['to']}")
    click.echo("\n".join(lines) if lines else "no changes")


COMMANDS: dict[str, click.Command] = {
    "show": show,
    "watch": watch,
    "history": history,
    "blame": blame,
    "at": at,
    "diff": diff,
}


# --- status ------------------------------------------------------------------------------


def status_command(datadir: Any, as_json: bool) -> None:
    """``agentmesh status``: the running node's view, completed (or replaced) from the store."""
    from nodes.inspection import running_status

    with _warnings_to_stderr():
        datadir.require()
        running = running_status(datadir)
        inspector = Inspector.open(datadir)
        try:
            report = inspector.status(running)
        finally:
            inspector.close()
    if as_json:
        click.echo(_dumps(report))
        return
    from rich.table import Table

    console = _console()
    state = "running" if report["running"] else "stopped"
    lines = [
        f"node      {report.get('id')} ({report.get('role')}, {state})",
        f"mesh      {report['mesh']}",
        f"synced    {'yes' if report.get('synced') else 'no'}",
        f"envelopes {report.get('envelopes')} stored, {report.get('own_envelopes')} own, "
        f"{report.get('pending_writes')} not yet acknowledged by a peer"
        + (", unsealed writes open" if report.get("unsealed_writes") else ""),
        "held      "
        + (
            "n/a (held envelopes live in a running node's memory)"
            if report.get("held") is None
            else str(report["held"])
        ),
        f"forks     {len(report['forks'])}"
        + "".join(f"; {_short(f['author'])}/{f['incarnation'][:8]}" for f in report["forks"]),
        f"refusals  {report['refusals_kept']} kept",
        f"store     {report['store']['bytes']:,} bytes in {report['data_dir']}",
    ]
    if report.get("snapshot"):
        lines.append(
            f"snapshot  at envelope {report['snapshot']['lid']}, "
            f"{report['snapshot']['behind']} stored after it"
        )
    if report.get("revoked"):
        lines.append("REVOKED   this node has been revoked")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    table = Table(
        "peer", "id", "connected", "synced", "we lack", "they lack", "last sync", "per doc"
    )
    for peer in report["peers"]:
        docs = peer.get("docs") or peer.get("docs_as_of_last_seen") or {}
        per_doc = ", ".join(
            f"{doc}: -{v['we_lack']}/+{v['they_lack']}"
            for doc, v in docs.items()
            if v["we_lack"] or v["they_lack"]
        )
        connected = "yes" if peer.get("connected") else ""
        if not peer.get("connected") and peer.get("last_seen"):
            connected = f"seen {peer['last_seen'][:19]}"
        table.add_row(
            (peer.get("name") or "") + (" (revoked)" if peer.get("revoked") else ""),
            _short(peer.get("peer_id")),
            connected,
            "yes" if peer.get("synced") else "no",
            "" if "we_lack" not in peer else str(peer["we_lack"]),
            "" if "they_lack" not in peer else str(peer["they_lack"]),
            (peer.get("last_sync") or "")[:19],
            per_doc,
        )
    console.print(table)
