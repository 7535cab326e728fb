"""The ``agentmesh`` command line.

Commands import what they need lazily: ``agentmesh --help`` and commands that
only read local state start fast and never import libp2p.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mesh.errors import AgentmeshError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="AGENTMESH_HOME",
        default=None,
        help="Node data directory [env: AGENTMESH_HOME; default: the platform's user data dir].",
    )(func)


def _datadir(path: Path | None) -> Any:
    from nodes.datadir import DataDir, default_data_dir

    return DataDir(path or default_data_dir())


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    click.echo(json.dumps(payload, sort_keys=True) if as_json else text)


class _Group(click.Group):
    """Turns our errors into one clear line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentmeshError as exc:
            click.echo(f"agentmesh: error: {exc}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentmesh")
def cli() -> None:
    """Replicated, authenticated state for AI agents on a persistent runtime."""


# --- runtime -------------------------------------------------------------------------


@cli.command()
@data_dir_option
def init(data_dir: Path | None) -> None:
    """Create a mesh: its root key, the runtime identity and store."""
    from nodes.setup import init_runtime

    datadir = _datadir(data_dir)
    mesh_id = init_runtime(datadir, _now_ms())
    from mesh.identity import Identity

    peer_id = Identity.load(datadir.identity_key).peer_id
    click.echo(f"mesh {mesh_id.hex()}\nruntime {peer_id}\ndata dir {datadir.path}")
    click.echo(f"the mesh root key is {datadir.root_key}: keep a backup, offline")


@cli.command()
@data_dir_option
@click.option(
    "--listen",
    multiple=True,
    default=["/ip4/0.0.0.0/tcp/4001"],
    show_default=True,
    help="Multiaddr to listen on (repeatable).",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option("--log-level", default="info", show_default=True)
def runtime(data_dir: Path | None, listen: tuple[str, ...], log_json: bool, log_level: str) -> None:
    """Run the runtime node in the foreground (initialises an empty data dir first)."""
    import trio

    from nodes import logs
    from nodes.runtime import serve_runtime
    from nodes.setup import init_runtime

    logs.configure(json_lines=log_json, level=log_level)
    datadir = _datadir(data_dir)
    with datadir.locked():
        if not datadir.identity_key.exists():
            init_runtime(datadir, _now_ms())
            click.echo(f"initialised a new mesh in {datadir.path}", err=True)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                ready = await nursery.start(serve_runtime, datadir, list(listen))
                click.echo(f"mesh {ready.mesh_id}")
                click.echo(f"runtime {ready.peer_id}")
                for address in ready.addresses:
                    click.echo(f"listening {address}")
                sys.stdout.flush()
                await _until_signal()
                nursery.cancel_scope.cancel()

        trio.run(main)
    click.echo("runtime stopped", err=True)


async def _until_signal() -> None:
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


# --- membership ------------------------------------------------------------------------


@cli.group(cls=_Group, invoke_without_command=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def devices(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """List the mesh's devices (or add one: devices add)."""
    if ctx.invoked_subcommand is not None:
        return
    from nodes.setup import open_readonly
    from nodes.views import device_rows

    replica = open_readonly(_datadir(data_dir))
    rows = device_rows(replica)
    replica.store.close()
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "id", "caps", "joined", "expires", "revoked")
    for row in rows:
        table.add_row(
            row["name"],
            row["id"],
            ",".join(row["caps"]),
            str(row["joined_index"]),
            time.strftime("%Y-%m-%d", time.gmtime(row["expires_ms"] / 1000)),
            "yes" if row["revoked"] else "",
        )
    Console().print(table)


def _membership_request(datadir: Any, op: str, record: bytes) -> int:
    """Commit a record through the running runtime, or directly when none runs."""
    from nodes import control

    reply = control.request(datadir.control_socket, {"op": op, "record": record.hex()})
    if reply is not None:
        return int(reply["index"])
    from crdt_state.errors import StorageError
    from mesh.engine import RUNTIME_ROLE, Engine
    from mesh.membership.records import decode_record
    from nodes.setup import open_node

    with datadir.locked():
        node = open_node(datadir)
        try:
            engine = Engine(node.replica, node.identity, RUNTIME_ROLE)
            decoded = decode_record(record)
            from mesh.membership.records import Certificate

            if isinstance(decoded, Certificate):
                entry = engine.admit(decoded, _now_ms())
            else:
                entry = engine.revoke(decoded, _now_ms())
            node.replica.store.commit()
        except StorageError:
            raise
        finally:
            node.close()
    return entry.index


@devices.command("add")
@data_dir_option
@click.argument("device")
@click.option("--caps", default="read,write", show_default=True, help="Comma-separated caps.")
@click.option("--name", default="", help="A name for the device.")
@click.option("--ttl-days", default=365, show_default=True, type=click.IntRange(1, 3650))
def devices_add(data_dir: Path | None, device: str, caps: str, name: str, ttl_days: int) -> None:
    """Certify DEVICE (its PeerId or hex public key) as a member, on the runtime."""
    from mesh.membership.records import parse_caps
    from nodes.membership_ops import certificate_for, parse_device_key
    from nodes.setup import open_readonly

    try:
        capabilities = parse_caps(caps)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--caps") from exc
    datadir = _datadir(data_dir)
    subject = parse_device_key(device)
    replica = open_readonly(datadir)
    mesh_id = replica.mesh_id
    replica.store.close()
    cert = certificate_for(
        datadir, mesh_id, subject, capabilities, name, _now_ms(), ttl_days * 86_400_000
    )
    index = _membership_request(datadir, "admit", cert.raw)
    click.echo(f"device {device} admitted with {','.join(sorted(capabilities))} (entry {index})")


@cli.command()
@data_dir_option
@click.argument("device")
def revoke(data_dir: Path | None, device: str) -> None:
    """Revoke DEVICE: no peer accepts its writes past the runtime's cutoff."""
    from nodes.membership_ops import parse_device_key, revocation_for
    from nodes.setup import open_readonly

    datadir = _datadir(data_dir)
    subject = parse_device_key(device)
    replica = open_readonly(datadir)
    mesh_id = replica.mesh_id
    replica.store.close()
    revocation = revocation_for(datadir, mesh_id, subject, _now_ms())
    index = _membership_request(datadir, "revoke", revocation.raw)
    click.echo(f"device {device} revoked (entry {index})")


# --- device ----------------------------------------------------------------------------


@cli.group(cls=_Group)
def device() -> None:
    """Set up and run a device node."""


@device.command("init")
@data_dir_option
def device_init(data_dir: Path | None) -> None:
    """Create this device's key; prints its PeerId for 'agentmesh devices add'."""
    from nodes.setup import init_device

    datadir = _datadir(data_dir)
    identity = init_device(datadir)
    click.echo(identity.peer_id)


@device.command("run")
@data_dir_option
@click.option("--runtime", "runtime_addr", help="The runtime's multiaddr, with /p2p/<id>.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option("--log-level", default="info", show_default=True)
def device_run(
    data_dir: Path | None, runtime_addr: str | None, log_json: bool, log_level: str
) -> None:
    """Run the device node: sync with the runtime, keep working offline."""
    import trio

    from nodes import logs
    from nodes.device import run_device

    logs.configure(json_lines=log_json, level=log_level)
    datadir = _datadir(data_dir)
    datadir.require()
    with datadir.locked():

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                ready = await nursery.start(run_device, datadir, runtime_addr)
                click.echo(f"device {ready.peer_id}")
                click.echo(f"runtime {ready.runtime}")
                sys.stdout.flush()
                await _until_signal()
                nursery.cancel_scope.cancel()

        trio.run(main)
    click.echo("device stopped", err=True)


# --- writing ----------------------------------------------------------------------------


def _write(datadir: Any, op: str, text: str) -> str:
    """Write through the running node, or open the store when no node runs."""
    from nodes import app, control
    from nodes.setup import open_node

    reply = control.request(datadir.control_socket, {"op": op, "text": text})
    if reply is not None:
        return str(reply["id"])
    with datadir.locked():
        node = open_node(datadir)
        try:
            now = _now_ms()
            me = node.identity.peer_id

            def transact(doc: str) -> Any:
                return node.replica.transact(doc, now)

            if op == "send":
                result = app.send_message(transact, me, text, now)
            elif op == "task-add":
                result = app.add_task(transact, me, text, now)
            else:
                app.cancel_task(transact, me, text, now)
                result = text
            node.replica.seal_all(now)
        finally:
            node.close()
    return result


@cli.command()
@data_dir_option
@click.argument("text")
def send(data_dir: Path | None, text: str) -> None:
    """Send a message to the agent (works offline; syncs when connected).

    TEXT '-' reads messages from standard input, one per line.
    """
    datadir = _datadir(data_dir)
    if text != "-":
        click.echo(_write(datadir, "send", text))
        return
    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    sent = _send_many(datadir, lines)
    click.echo(f"sent {sent} messages")


def _send_many(datadir: Any, texts: list[str]) -> int:
    from nodes import app, control
    from nodes.service import MAX_TEXTS_PER_REQUEST

    for start in range(0, len(texts), MAX_TEXTS_PER_REQUEST):
        chunk = texts[start : start + MAX_TEXTS_PER_REQUEST]
        reply = control.request(datadir.control_socket, {"op": "send-many", "texts": chunk})
        if reply is None:
            from nodes.setup import open_node

            with datadir.locked():
                node = open_node(datadir)
                try:
                    now = _now_ms()
                    me = node.identity.peer_id
                    for text_ in texts[start:]:
                        app.send_message(lambda d: node.replica.transact(d, now), me, text_, now)
                    node.replica.seal_all(now)
                finally:
                    node.close()
            return len(texts)
    return len(texts)


@cli.group(cls=_Group)
def task() -> None:
    """Request and cancel agent tasks."""


@task.command("add")
@data_dir_option
@click.argument("text")
def task_add(data_dir: Path | None, text: str) -> None:
    """Ask the agent to do TEXT; prints the task id."""
    click.echo(_write(_datadir(data_dir), "task-add", text))


@task.command("cancel")
@data_dir_option
@click.argument("task_id")
def task_cancel(data_dir: Path | None, task_id: str) -> None:
    """Ask the agent to cancel task TASK_ID."""
    _write(_datadir(data_dir), "task-cancel", task_id)
    click.echo(f"cancel requested for {task_id}")


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """This node's id, mesh, peers and sync state."""
    from nodes import control

    datadir = _datadir(data_dir)
    datadir.require()
    reply = control.request(datadir.control_socket, {"op": "status"})
    if reply is None:
        from nodes.setup import open_readonly

        replica = open_readonly(datadir)
        reply = {
            "ok": True,
            "running": False,
            "mesh": replica.mesh_id.hex(),
            "envelopes": replica.store.envelope_count(),
            "synced": False,
        }
        replica.store.close()
    else:
        reply["running"] = True
    if as_json:
        click.echo(json.dumps(reply, sort_keys=True))
        return
    for key in sorted(reply):
        if key != "ok":
            click.echo(f"{key}: {reply[key]}")


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Run the deterministic simulator (see: agentmesh sim --help)."""
    from simulations.cli import sim as sim_command

    sim_command.main(args=ctx.args, prog_name="agentmesh sim", standalone_mode=True)


def main() -> None:
    """Console-script entry point."""
    cli()
