"""The data directory: one folder holding a node's keys, store and lock.

Layout::

    identity.key     this node's Ed25519 key (mode 0600)
    root.key         the mesh root key (runtime only, mode 0600; move it offline)
    store.sqlite     envelopes, membership log, metadata (WAL)
    lock             held (flock) by the one process that owns the directory; it
                     names that process and whether it is a node or a command
    control.sock     local control socket of a running node (mode 0600)
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mesh.limits import DATA_DIR_LOCK_WAIT_S
from nodes.errors import DataDirError, DataDirLocked

ENV_HOME = "AGENTMESH_HOME"
APP_NAME = "agentmesh"
#: Who holds the lock: a long-running node (``runtime``, ``device run``) or a command.
NODE = "node"
COMMAND = "command"
_LOCK_POLL_S = 0.05
_PROBE_GRACE_S = 0.2


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
    def locked(self, *, node: bool = False) -> Iterator[None]:
        """Own the directory for the duration; DataDirLocked if another process does.

        A node (``node=True``) starting while a command briefly holds the directory
        (``agentmesh send`` writing to a stopped node's store) waits for it, up to
        DATA_DIR_LOCK_WAIT_S; another node holding it is refused at once.
        """
        self.create()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        started = time.monotonic()
        deadline = started + DATA_DIR_LOCK_WAIT_S
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pid, role = _holder(fd)
                    # A node waits out a command; another node it retries briefly, since
                    # node_starting() takes a shared lock for an instant to look.
                    patience = deadline if role == COMMAND else started + _PROBE_GRACE_S
                    if node and time.monotonic() < patience:
                        time.sleep(_LOCK_POLL_S)
                        continue
                    raise DataDirLocked(
                        f"{self.path} is in use by another agentmesh process (pid {pid})"
                    ) from None
            holder = f"{os.getpid()} {NODE if node else COMMAND}\n".encode()
            os.pwrite(fd, holder, 0)  # then truncate: a reader never sees it empty
            os.ftruncate(fd, len(holder))
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def node_starting(self) -> bool:
        """Whether a node holds the directory but its control socket does not answer yet."""
        return self._held_by_node() and not _answers(self.control_socket)

    def _held_by_node(self) -> bool:
        if not self.lock_file.exists():
            return False
        fd = os.open(self.lock_file, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder(fd)[1] == NODE
            return False  # nobody holds it
        finally:
            os.close(fd)

    def wait_for_node(self) -> bool:
        """If a node is starting here, wait (up to DATA_DIR_LOCK_WAIT_S) until its control
        socket answers; whether it does. A stale socket file of a dead node is ignored."""
        deadline = time.monotonic() + DATA_DIR_LOCK_WAIT_S
        while self._held_by_node():
            if _answers(self.control_socket):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_LOCK_POLL_S)
        return False


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _holder(fd: int) -> tuple[str, str]:
    """(pid, role) written in the lock file by its holder."""
    words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    pid = words[0] if words else "?"
    return pid, words[1] if len(words) > 1 else COMMAND
