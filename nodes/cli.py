"""The ``agentmesh`` command line.

Commands import what they need lazily: ``agentmesh --help`` and commands that
only read local state must start fast and never import libp2p.
"""

from __future__ import annotations

import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="agentmesh")
def cli() -> None:
    """Replicated, authenticated state for AI agents on a persistent runtime."""


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
    sys.exit(cli())
