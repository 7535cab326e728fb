"""``python -m nodes`` runs the agentmesh CLI."""

from nodes.cli import main

main()
