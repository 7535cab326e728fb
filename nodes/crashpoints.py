"""Named points where a process can be made to die with SIGKILL, for crash tests.

``AGENTMESH_CRASH_AT=<name>`` in a node's environment makes it kill itself
(``kill -9``, nothing flushed, no cleanup) the first time it reaches ``<name>``:
tests use it to stop real processes at exact steps of a protocol, which sending
a signal from outside cannot do reliably. Unset, a crash point costs one
dictionary lookup. The names are listed in CRASH_POINTS.
"""

from __future__ import annotations

import os
import signal

ENV = "AGENTMESH_CRASH_AT"
CRASH_POINTS = frozenset(
    {
        # runtime, join protocol: a request handled, its state change staged / committed
        "join.staged",
        "join.committed",
        # runtime: an admin approved a waiting join (staged / committed)
        "approve.staged",
        "approve.committed",
        # device: `agentmesh join` prepared its data dir / got the runtime's answer
        "device.prepared",
        "device.answered",
    }
)


def crash_point(name: str) -> None:
    """Die here with SIGKILL if the environment asks for ``name``."""
    assert name in CRASH_POINTS, name
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
