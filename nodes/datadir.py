"""The data directory: one folder holding a node's keys, store and lock.

Layout::

    identity.key     this node's Ed25519 key (mode 0600)
    root.key         the mesh root key (runtime only, mode 0600; move it offline)
    store.sqlite     envelopes, membership log, metadata (WAL)
    lock             held (flock) by the one process that owns the directory
    control.sock     local control socket of a running node (mode 0600)
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nodes.errors import DataDirError, DataDirLocked

ENV_HOME = "AGENTMESH_HOME"
APP_NAME = "agentmesh"


def default_data_dir() -> Path:
    """``$AGENTMESH_HOME`` if set, else the platform's user data dir for agentmesh."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP_NAME)


@dataclass(frozen=True)
class DataDir:
    """Paths inside one node's data directory."""

    path: Path

    @property
    def identity_key(self) -> Path:
        return self.path / "identity.key"

    @property
    def root_key(self) -> Path:
        return self.path / "root.key"

    @property
    def store(self) -> Path:
        return self.path / "store.sqlite"

    @property
    def lock_file(self) -> Path:
        return self.path / "lock"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    def create(self) -> None:
        """Make the directory (mode 0700) if missing."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def require(self) -> None:
        """Raise DataDirError unless an initialised node lives here."""
        if not self.identity_key.exists() or not self.store.exists():
            raise DataDirError(
                f"{self.path}: no agentmesh node here (run 'agentmesh init' or "
                f"'agentmesh device init', or pass --data-dir)"
            )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Own the directory for the duration; DataDirLocked if another process does."""
        self.create()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise DataDirLocked(
                    f"{self.path} is in use by another agentmesh process (pid {owner})"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
