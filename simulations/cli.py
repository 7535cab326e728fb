"""``agentmesh sim``: run seeds of the deterministic simulator, summarise, replay and shrink."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulations.config import (
    MAX_DEVICES,
    MIN_DEVICES,
    NO_FAULTS,
    PROFILES,
    SimConfig,
    format_duration,
    parse_duration,
)
from simulations.mutants import MUTANTS
from simulations.report import Summary, replay_command
from simulations.runner import RunResult, run_seed, run_seeds
from simulations.schedule import Schedule, from_json, generate, to_json
from simulations.shrink import shrink

FC = TypeVar("FC", bound=Callable[..., Any])

#: Fault toggles: option name -> FaultConfig field.
TOGGLES = {
    "partitions": "partitions",
    "isolate": "isolate",
    "crashes": "crashes",
    "duplicate": "duplicate",
    "reorder": "reorder",
    "latency": "latency",
    "bandwidth": "bandwidth",
    "skew": "skew",
    "offline": "offline",
    "membership": "membership",
}
#: Options that do not change what a seed does (left out of replay commands).
NOT_REPLAYED = {"seed", "seeds", "jobs", "as_json", "shrink_failures", "trace_path"}
#: Failing seeds printed in full.
MAX_FAILURES_SHOWN = 5
DEFAULT_SEEDS = 10
#: With ``--jobs 0`` (the default), runs of at least this many seeds use every core.
AUTO_JOBS_MIN_SEEDS = 20


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def build_config(params: dict[str, Any]) -> SimConfig:
    """The run's config: the profile, then every option given."""
    config = PROFILES[params["profile"]]
    faults = config.faults
    if params["faults"] is False:
        faults = NO_FAULTS
    changes = {TOGGLES[k]: v for k, v in params.items() if k in TOGGLES and v is not None}
    faults = dataclasses.replace(faults, **changes)
    network = config.network
    if params["loss"] is not None:
        network = dataclasses.replace(network, loss_max=params["loss"])
        faults = dataclasses.replace(faults, loss=params["loss"] > 0)
    workload = config.workload
    if params["write_every"] is not None:
        workload = dataclasses.replace(workload, write_every_ms=params["write_every"])
    if params["hostile"] is not None:
        workload = dataclasses.replace(workload, hostile=params["hostile"])
    return dataclasses.replace(
        config,
        devices=params["peers"] if params["peers"] is not None else config.devices,
        duration_ms=params["duration"] if params["duration"] is not None else config.duration_ms,
        faults=faults,
        network=network,
        workload=workload,
        mutant=params["mutant"],
    )


def replay_options(ctx: click.Context) -> list[str]:
    """The options given on the command line that shape a run, as argv."""
    argv: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in NOT_REPLAYED:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        assert isinstance(param, click.Option)
        if param.is_flag and param.secondary_opts:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        elif name in ("duration", "write_every"):
            argv += [param.opts[0], format_duration(value)]
        else:
            argv += [param.opts[0], str(value)]
    return argv


def _load_schedule(text: str | None) -> Schedule | None:
    if text is None:
        return None
    if text.lstrip().startswith("["):
        return from_json(text)
    return from_json(Path(text).read_text(encoding="utf-8"))


def _toggle(name: str) -> Callable[[FC], FC]:
    return click.option(
        f"--{name}/--no-{name}", default=None, help=f"{name} faults (default: the profile's)"
    )


@click.command(name="sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seed", type=int, default=None, help="Run this seed (with --seeds: the first).")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Number of seeds to run.")
@click.option(
    "--profile", type=click.Choice(sorted(PROFILES)), default="default", show_default=True
)
@click.option(
    "--peers",
    type=click.IntRange(MIN_DEVICES, MAX_DEVICES),
    default=None,
    help="Devices (the runtime is one more node; default 4).",
)
@click.option("--duration", type=DURATION, default=None, help="Faulty period, e.g. 7d, 1h, 30m.")
@click.option("--loss", type=click.FloatRange(0.0, 0.95), default=None, help="Max frame loss.")
@click.option("--write-every", type=DURATION, default=None, help="Each node writes this often.")
@click.option("--faults/--no-faults", default=None, help="All faults (off: a perfect network).")
@_toggle("partitions")
@_toggle("isolate")
@_toggle("crashes")
@_toggle("duplicate")
@_toggle("reorder")
@_toggle("latency")
@_toggle("bandwidth")
@_toggle("skew")
@_toggle("offline")
@_toggle("membership")
@click.option("--hostile/--no-hostile", default=None, help="A hostile member (default on).")
@click.option("--mutant", type=click.Choice(sorted(MUTANTS)), default=None, help="Broken build.")
@click.option("--schedule", "schedule_text", default=None, help="Fault schedule: JSON or a file.")
@click.option("--shrink/--no-shrink", "shrink_failures", default=True, show_default=True)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    help="Worker processes (0: one per core when running many seeds, else 1).",
)
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def sim(ctx: click.Context, /, **params: Any) -> None:
    """Run the deterministic simulator over seeds; exit 1 if any seed fails."""
    try:
        config = build_config(params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    schedule = _load_schedule(params["schedule_text"])
    start = params["seed"] if params["seed"] is not None else 0
    count = params["seeds"] or (1 if params["seed"] is not None else DEFAULT_SEEDS)
    seeds = list(range(start, start + count))
    options = replay_options(ctx)
    as_json: bool = params["as_json"]
    err = Console(stderr=True)
    summary = Summary()
    results: list[RunResult] = []
    started = time.perf_counter()
    if schedule is not None or params["trace_path"]:
        results = [_run_one(config, seeds[0], schedule, params["trace_path"])]
        seeds = seeds[:1]
    else:
        progress = Progress(
            TextColumn("seeds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failures {task.fields[failures]}"),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
            transient=True,
        )
        with progress:
            task = progress.add_task("seeds", total=len(seeds), failures=0)
            for result in run_seeds(config, seeds, jobs=_jobs(params["jobs"], len(seeds))):
                results.append(result)
                failed = sum(not r.ok for r in results)
                progress.update(task, advance=1, failures=failed)
    for result in sorted(results, key=lambda r: r.seed):
        summary.add(result)
    summary.wall_s = time.perf_counter() - started
    shrunk_info = None
    if summary.failures and params["shrink_failures"]:
        first = summary.failures[0]
        shrunk_info = _shrink(config, first, schedule, options, err, quiet=as_json)
    if as_json:
        payload: dict[str, Any] = summary.to_json()
        if len(seeds) == 1:
            payload["digest"] = results[0].digest
        payload["failures_detail"] = [
            {
                "seed": r.seed,
                "violations": list(r.violations[:MAX_FAILURES_SHOWN]),
                "replay": replay_command(r.seed, options),
            }
            for r in summary.failures[:MAX_FAILURES_SHOWN]
        ]
        if shrunk_info is not None:
            payload["shrunk"] = shrunk_info
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        _print_failures(summary, options)
        if shrunk_info is not None:
            click.echo(
                f"shrunk ({shrunk_info['faults']} faults, {shrunk_info['devices']} devices, "
                f"{shrunk_info['duration']}, {shrunk_info['runs']} runs):"
            )
            click.echo(f"  {shrunk_info['violation']}")
            click.echo(f"  replay: {shrunk_info['replay']}")
        _print_table(summary, results[0].digest if len(seeds) == 1 else None)
    ctx.exit(1 if summary.failures else 0)


def _jobs(requested: int, seeds: int) -> int:
    if requested:
        return requested
    return (os.cpu_count() or 1) if seeds >= AUTO_JOBS_MIN_SEEDS else 1


def _run_one(
    config: SimConfig, seed: int, schedule: Schedule | None, trace_path: str | None
) -> RunResult:
    result = run_seed(config, seed, schedule, keep_trace=trace_path is not None)
    if trace_path is not None:
        Path(trace_path).write_text("\n".join(result.trace) + "\n", encoding="utf-8")
    return result


def _shrink(
    config: SimConfig,
    failure: RunResult,
    schedule: Schedule | None,
    options: list[str],
    err: Console,
    *,
    quiet: bool,
) -> dict[str, Any]:
    original = schedule if schedule is not None else generate(config, failure.seed)
    if not quiet:
        err.print(f"shrinking seed {failure.seed} ({len(original)} faults)...")
    result = shrink(config, failure.seed, original, failure)
    kept = [o for o in _without(options, ("--peers", "--duration", "--schedule"))]
    if not result.config.workload.hostile and "--no-hostile" not in kept:
        kept.append("--no-hostile")
    argv = [
        *kept,
        "--peers",
        str(result.config.devices),
        "--duration",
        format_duration(result.config.duration_ms),
        "--schedule",
        to_json(result.schedule),
    ]
    return {
        "seed": failure.seed,
        "faults": len(result.schedule),
        "devices": result.config.devices,
        "duration": format_duration(result.config.duration_ms),
        "runs": result.runs,
        "violation": result.result.violations[0] if result.result.violations else "",
        "schedule": json.loads(to_json(result.schedule)),
        "replay": replay_command(failure.seed, argv),
    }


def _without(options: list[str], names: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for item in options:
        if skip:
            skip = False
            continue
        if item in names:
            skip = True
            continue
        kept.append(item)
    return kept


def _print_failures(summary: Summary, options: list[str]) -> None:
    for result in summary.failures[:MAX_FAILURES_SHOWN]:
        click.echo(f"FAILED seed {result.seed}:")
        for violation in result.violations[:MAX_FAILURES_SHOWN]:
            click.echo(f"  {violation}")
        click.echo(f"  replay: {replay_command(result.seed, options)}")
    if len(summary.failures) > MAX_FAILURES_SHOWN:
        more = len(summary.failures) - MAX_FAILURES_SHOWN
        click.echo(f"... and {more} more failing seeds")


def _print_table(summary: Summary, digest: str | None) -> None:
    data = summary.to_json()
    rounds = summary.round_percentiles()
    table = Table(title="agentmesh sim")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("seeds run", str(data["seeds"]))
    table.add_row("failures", str(data["failures"]))
    table.add_row(
        "rounds to converge p50/p90/p99/max",
        "/".join("-" if v is None else str(v) for v in rounds.values()),
    )
    table.add_row("simulated seconds", f"{data['sim_seconds']:,}")
    table.add_row("wall seconds", f"{data['wall_seconds']:,}")
    table.add_row("simulated s per wall s", f"{data['sim_speedup']:,}")
    table.add_row("events per wall s", f"{data['events_per_s']:,}")
    if digest is not None:
        table.add_row("digest", digest)
    Console().print(table)
