"""``python -m simulations`` = ``agentmesh sim`` (without importing the node CLI)."""

from __future__ import annotations

from simulations.cli import sim

if __name__ == "__main__":
    sim.main(prog_name="python -m simulations")
