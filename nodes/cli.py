"""The ``agentmesh`` command line.

Commands import what they need lazily: ``agentmesh --help`` and commands that
only read local state start fast and never import libp2p.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mesh.errors import AgentmeshError

if TYPE_CHECKING:
    from pathlib import Path

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2
#: Something named on the command line does not exist (a document, path or device).
EXIT_NOT_FOUND = 3


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _DirPath(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A directory as a ``pathlib.Path`` (imported on use: ``--help`` never needs it)."""

    name = "directory"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pathlib import Path

        path = value if isinstance(value, Path) else Path(value)
        if path.is_file():
            self.fail(f"{str(value)!r} is a file, not a directory", param, ctx)
        return path


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=_DirPath(),
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
            ctx.exit(getattr(exc, "exit_code", EXIT_ERROR))


class _LazyGroup(_Group):
    """A command group whose subcommands live in another module, imported only when used.

    ``agentmesh --help`` lists it from the short help given here, without the import.
    """

    def __init__(self, name: str, module: str, help_text: str) -> None:
        super().__init__(name, help=help_text, short_help=help_text.split("\n", maxsplit=1)[0])
        self._module = module

    def _commands(self) -> dict[str, click.Command]:
        import importlib

        commands: dict[str, click.Command] = importlib.import_module(self._module).COMMANDS
        return commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._commands().get(cmd_name)


_EPILOG = (
    "Exit codes: 0 ok; 1 error (no node in the data dir, corrupt store, refused request); "
    "2 usage; 3 not found (unknown document, path or device). See docs/CLI.md."
)


def _help_width() -> int:
    """The help text width click would choose, without its ``import shutil`` (~14 ms)."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": _help_width()},
    epilog=_EPILOG,
)
@click.version_option(package_name="agentmesh")
def cli() -> None:
    """Replicated, authenticated state for AI agents on a persistent runtime."""


cli.add_command(
    _LazyGroup(
        "state",
        "nodes.cli_state",
        "Inspect replicated state: show, watch, history, blame, at, diff.\n\n"
        "Read-only: works on a running node's data dir (no lock, no writes) and on a "
        "stopped one.",
    )
)


class _Elsewhere(click.Command):
    """A command that lives in another module, imported only when it runs.

    ``agentmesh --help`` lists it from ``help_text``; its own ``--help``, options and
    errors are the target's (``module:attribute``, a click command or group).
    """

    def __init__(self, name: str, target: str, help_text: str, prog: str) -> None:
        super().__init__(
            name,
            help=help_text,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            add_help_option=False,
        )
        self._target = target
        self._prog = prog

    def invoke(self, ctx: click.Context) -> None:
        import importlib

        module, attribute = self._target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        command.main(args=ctx.args, prog_name=self._prog, standalone_mode=True)


for _name, _target, _help in (
    (
        "approvals",
        "nodes.cli_approvals:approvals",
        "List approvals; request (runtime), approve or deny one.",
    ),
    (
        "messages",
        "nodes.cli_agent:messages",
        "The conversation with the agent: messages and its replies.",
    ),
    (
        "notifications",
        "nodes.cli_agent:notifications_group",
        "List the agent's notifications; dismiss one (on every device).",
    ),
):
    cli.add_command(_Elsewhere(_name, _target, _help, f"agentmesh {_name}"))


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
@click.option(
    "--announce",
    multiple=True,
    help="Public multiaddr to put in invites (repeatable; default: the listen addresses).",
)
@click.option(
    "--agent",
    "agent_kind",
    type=click.Choice(["builtin", "llm", "none"]),
    default="builtin",
    show_default=True,
    envvar="AGENTMESH_AGENT",
    help="The agent that works on tasks [env: AGENTMESH_AGENT]; see docs/AGENT.md.",
)
@click.option(
    "--llm-url",
    envvar="AGENTMESH_LLM_URL",
    help="OpenAI-compatible API base URL (https://.../v1) [env: AGENTMESH_LLM_URL].",
)
@click.option(
    "--llm-model", envvar="AGENTMESH_LLM_MODEL", help="Model name [env: AGENTMESH_LLM_MODEL]."
)
@click.option(
    "--llm-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Environment variable holding the API key (none sent if unset).",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option("--log-level", default="info", show_default=True)
def runtime(
    data_dir: Path | None,
    listen: tuple[str, ...],
    announce: tuple[str, ...],
    agent_kind: str,
    llm_url: str | None,
    llm_model: str | None,
    llm_key_env: str,
    log_json: bool,
    log_level: str,
) -> None:
    """Run the runtime node in the foreground (initialises an empty data dir first)."""
    _catch_early_signals()
    import os
    from functools import partial

    import trio

    from nodes import logs
    from nodes.agent.errors import AgentError
    from nodes.agent.factory import make_agent
    from nodes.heap import freeze_startup_heap
    from nodes.runtime import serve_runtime
    from nodes.setup import init_runtime

    try:
        agent = make_agent(
            agent_kind, llm_url=llm_url, llm_model=llm_model, api_key=os.environ.get(llm_key_env)
        )
    except AgentError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(json_lines=log_json, level=log_level)
    datadir = _datadir(data_dir)
    with datadir.locked(node=True):
        if not datadir.identity_key.exists():
            init_runtime(datadir, _now_ms())
            click.echo(f"initialised a new mesh in {datadir.path}", err=True)

        def report(ready: Any) -> None:
            click.echo(f"mesh {ready.mesh_id}")
            click.echo(f"runtime {ready.peer_id}")
            for address in ready.addresses:
                click.echo(f"listening {address}")
            sys.stdout.flush()

        serve = partial(serve_runtime, datadir, list(listen), announce=list(announce), agent=agent)
        freeze_startup_heap()
        trio.run(_serve_until_signal, serve, report)
    click.echo("runtime stopped", err=True)


#: SIGINT/SIGTERM received before the node's event loop took over (see _catch_early_signals).
_early_signals: list[int] = []


def _catch_early_signals() -> None:
    """Remember SIGINT/SIGTERM from now on instead of dying mid-start.

    Python's default SIGINT handler raises KeyboardInterrupt wherever the process
    is (in an import, under the data dir lock: it was seen swallowed there, leaving
    a runtime that ignored the signal), and SIGTERM kills it outright.
    """
    import signal

    def remember(signum: int, frame: object) -> None:
        _early_signals.append(signum)

    signal.signal(signal.SIGINT, remember)
    signal.signal(signal.SIGTERM, remember)


async def _serve_until_signal(start: Callable[..., Any], report: Callable[[Any], None]) -> None:
    """Run the node task ``start`` (it reports ready with task_status) until SIGINT/SIGTERM.

    The signals are caught from the start, so one that comes while the node starts
    also stops it cleanly; more while it stops are ignored (stopping is bounded).
    """
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if _early_signals:
            return
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            report(await nursery.start(start))


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

    def day(ms: int | None) -> str:
        return "-" if not ms else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))

    table = Table("name", "id", "caps", "joined", "expires", "last seen", "online", "revoked")
    for row in rows:
        table.add_row(
            row["name"],
            row["id"],
            ",".join(row["caps"]),
            day(row["joined_ms"]),
            day(row["expires_ms"]),
            day(row["last_seen_ms"]),
            "yes" if row["online"] else "",
            "yes" if row["revoked"] else "",
        )
    Console().print(table)


def _on_runtime(datadir: Any) -> bool:
    """Whether ``datadir`` is the runtime's (it holds the mesh root key) or a device's."""
    datadir.require()
    return bool(datadir.root_key.exists())


def _admin_request(datadir: Any, request: Any) -> Any:
    """Ask the runtime, as this admin device, to do ``request``; its result."""
    from nodes.admin import request_from_device

    return request_from_device(datadir, request)


def _admin_record(datadir: Any, record: bytes) -> int:
    from mesh.pairing.admin import SequenceRecord

    return int(_admin_request(datadir, SequenceRecord(record)))


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
    if _on_runtime(datadir):
        index = _membership_request(datadir, "admit", cert.raw)
    else:
        index = _admin_record(datadir, cert.raw)
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
    if _on_runtime(datadir):
        index = _membership_request(datadir, "revoke", revocation.raw)
    else:
        index = _admin_record(datadir, revocation.raw)
    click.echo(f"device {device} revoked (entry {index})")


# --- pairing ---------------------------------------------------------------------------


def _parse_ttl(text: str) -> int:
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    try:
        unit = units.get(text[-1])
        value = int(text[:-1]) * unit if unit else int(text) * 1000
    except (ValueError, IndexError):
        raise click.BadParameter(
            f"{text!r}: use e.g. 90s, 10m, 2h, 1d", param_hint="--ttl"
        ) from None
    if value <= 0:
        raise click.BadParameter("must be positive", param_hint="--ttl")
    return value


@cli.command()
@data_dir_option
@click.option("--caps", default="read,write", show_default=True, help="Comma-separated caps.")
@click.option("--ttl", default="10m", show_default=True, help="Lifetime, e.g. 90s, 10m, 2h.")
@click.option("--name", default="", help="Name for the device that joins.")
@click.option("--require-approval", is_flag=True, help="Wait for 'devices approve' to admit.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: code and expiry.")
def invite(
    data_dir: Path | None, caps: str, ttl: str, name: str, require_approval: bool, as_json: bool
) -> None:
    """Make a single-use invite on the running runtime; prints the code and a QR code."""
    from mesh.membership.records import parse_caps
    from nodes import control
    from nodes.errors import NodeError

    try:
        capabilities = parse_caps(caps)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--caps") from exc
    datadir = _datadir(data_dir)
    if _on_runtime(datadir):
        reply = control.request(
            datadir.control_socket,
            {
                "op": "invite",
                "caps": sorted(capabilities),
                "ttl_ms": _parse_ttl(ttl),
                "name": name,
                "require_approval": require_approval,
            },
        )
        if reply is None:
            raise NodeError("the runtime is not running here: start 'agentmesh runtime' first")
    else:
        from mesh.pairing.admin import OpenInvite

        code, expires_ms = _admin_request(
            datadir, OpenInvite(capabilities, _parse_ttl(ttl), name, require_approval)
        )
        reply = {"code": code, "expires_ms": expires_ms}
    if as_json:
        click.echo(json.dumps({"code": reply["code"], "expires_ms": reply["expires_ms"]}))
        return
    import segno

    segno.make(reply["code"], error="l").terminal(compact=True)
    expires = time.strftime("%H:%M:%S", time.localtime(reply["expires_ms"] / 1000))
    click.echo(f"\n{reply['code']}\n\nsingle use, expires at {expires}")
    click.echo("on the new device: agentmesh join <code>")


@cli.command()
@data_dir_option
@click.argument("code")
@click.option("--name", default="", help="A name for this device.")
def join(data_dir: Path | None, code: str, name: str) -> None:
    """Join a mesh with an invite CODE (creates this device's key if needed)."""
    from nodes import logs
    from nodes.join import run_join

    logs.configure(level="error", quiet_libp2p=True)
    datadir = _datadir(data_dir)

    def pending(sas: str) -> None:
        click.echo(f"waiting for approval; check that the runtime shows the same code: {sas}")

    with datadir.locked():
        mesh, peer_id = run_join(datadir, code, name, pending)
    click.echo(f"joined mesh {mesh} as {peer_id}")
    click.echo("start syncing: agentmesh device run")


@devices.command("approve")
@data_dir_option
@click.argument("device")
def devices_approve(data_dir: Path | None, device: str) -> None:
    """Approve DEVICE, which is waiting to join with an invite that requires approval."""
    from nodes import control
    from nodes.errors import NodeError

    datadir = _datadir(data_dir)
    if _on_runtime(datadir):
        reply = control.request(datadir.control_socket, {"op": "approve", "device": device})
        if reply is None:
            raise NodeError("the runtime is not running here")
    else:
        from mesh.pairing.admin import ApproveJoin
        from nodes.membership_ops import parse_device_key

        _admin_request(datadir, ApproveJoin(parse_device_key(device)))
    click.echo(f"approved {device}")


@devices.command("waiting")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_waiting(data_dir: Path | None, as_json: bool) -> None:
    """Devices waiting for approval, with the code each should show."""
    from mesh.identity import peer_id_of
    from nodes import control
    from nodes.errors import NodeError

    datadir = _datadir(data_dir)
    if _on_runtime(datadir):
        reply = control.request(datadir.control_socket, {"op": "waiting"})
        if reply is None:
            raise NodeError("the runtime is not running here")
        waiting = reply["waiting"]
    else:
        from mesh.pairing.admin import ListWaiting

        waiting = [
            {"device": key.hex(), "name": name, "sas": sas}
            for key, name, sas in _admin_request(datadir, ListWaiting())
        ]
    rows = [{**w, "device": peer_id_of(bytes.fromhex(w["device"]))} for w in waiting]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['device']}  name={row['name'] or '-'}  code={row['sas']}")


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
    from nodes.heap import freeze_startup_heap

    logs.configure(json_lines=log_json, level=log_level)
    datadir = _datadir(data_dir)
    datadir.require()
    with datadir.locked(node=True):

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                ready = await nursery.start(run_device, datadir, runtime_addr)
                click.echo(f"device {ready.peer_id}")
                click.echo(f"runtime {ready.runtime}")
                sys.stdout.flush()
                await _until_signal()
                nursery.cancel_scope.cancel()

        freeze_startup_heap()
        trio.run(main)
    click.echo("device stopped", err=True)


# --- writing ----------------------------------------------------------------------------


def ask_node(datadir: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The running node's reply to ``payload``; None when no node runs in ``datadir``.

    A node that holds the data dir but has not opened its control socket yet (it is
    starting) is waited for, up to DATA_DIR_LOCK_WAIT_S.
    """
    from nodes import control

    reply = control.request(datadir.control_socket, payload)
    if reply is None and datadir.wait_for_node():
        reply = control.request(datadir.control_socket, payload)
    return reply


@contextmanager
def offline_node(datadir: Any) -> Iterator[tuple[Any, Any, int]]:
    """Open a stopped node for writing: yields (node, transact, now).

    The data dir's lock is held; the writes are sealed into envelopes and committed
    when the block ends without an error (they sync when the node next runs).
    """
    from nodes.setup import open_node

    with datadir.locked():
        node = open_node(datadir)
        try:
            now = _now_ms()

            def transact(doc: str) -> Any:
                return node.replica.transact(doc, now)

            yield node, transact, now
            node.replica.seal_all(now)
        finally:
            node.close()


def _write(datadir: Any, op: str, text: str) -> str:
    """Write through the running node, or open the store when no node runs."""
    from nodes import app

    reply = ask_node(datadir, {"op": op, "text": text})
    if reply is not None:
        return str(reply["id"])
    with offline_node(datadir) as (node, transact, now):
        me = node.identity.peer_id
        if op == "send":
            return app.send_message(transact, me, text, now)
        if op == "task-add":
            return app.add_task(transact, me, text, now)
        app.cancel_task(transact, me, text, now)
        return text


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
    from nodes import app
    from nodes.service import MAX_TEXTS_PER_REQUEST

    for start in range(0, len(texts), MAX_TEXTS_PER_REQUEST):
        chunk = texts[start : start + MAX_TEXTS_PER_REQUEST]
        reply = ask_node(datadir, {"op": "send-many", "texts": chunk})
        if reply is None:
            with offline_node(datadir) as (node, transact, now):
                for text_ in texts[start:]:
                    app.send_message(transact, node.identity.peer_id, text_, now)
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


task.add_command(
    _Elsewhere(
        "list",
        "nodes.cli_agent:task_list",
        "List tasks: state, and the agent's reply once it has one.",
        "agentmesh task list",
    )
)
task.add_command(
    _Elsewhere(
        "show",
        "nodes.cli_agent:task_show",
        "Show one task: progress, tool calls, reply.",
        "agentmesh task show",
    )
)


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """This node's id, mesh, peers and sync state (running or stopped)."""
    from nodes.cli_state import status_command

    status_command(_datadir(data_dir), as_json)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Run the deterministic simulator (see: agentmesh sim --help)."""
    from simulations.cli import sim as sim_command

    sim_command.main(args=ctx.args, prog_name="agentmesh sim", standalone_mode=True)


@cli.command("snapshot-refresh", hidden=True)
@click.option("--store", "store_path", type=click.Path(exists=True, dir_okay=False), required=True)
def snapshot_refresh(store_path: str) -> None:
    """Internal: a running node's snapshot helper (nodes/snapshot_helper.py)."""
    from pathlib import Path as _Path

    from nodes.snapshot_helper import refresh_store

    click.echo(refresh_store(_Path(store_path)))


def main() -> None:
    """Console-script entry point."""
    cli()
