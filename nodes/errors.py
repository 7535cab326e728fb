"""Errors of the node layer (data dirs, configuration, local control)."""

from __future__ import annotations

from mesh.errors import AgentmeshError


class NodeError(AgentmeshError):
    """Base of node-level errors; the CLI prints them without a traceback."""


class DataDirError(NodeError):
    """The data directory is missing, not initialised, or of the wrong kind."""


class DataDirLocked(NodeError):
    """Another process owns this data directory."""


class ControlError(NodeError):
    """The local control socket refused or failed a request."""


class NotFound(NodeError):
    """Something named on the command line does not exist (document, path, device)."""

    exit_code = 3
