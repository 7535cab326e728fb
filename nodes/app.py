"""What users write: messages and tasks in ``shared`` (values are immutable dicts).

Each function takes a ``transact`` callable (a node's local-transaction
factory) so that a running node and a direct store open share one code path.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pycrdt import Doc, Map

from crdt_state.schema import SHARED
from nodes.errors import NodeError

Transact = Callable[[str], AbstractContextManager[Doc[Any]]]
MAX_TEXT_BYTES = 16 * 1024
#: Longest id the agent acts on (ours are 30 bytes: ``new_id``). Records the agent writes
#: repeat the id, so an unbounded one could make them too large to write.
MAX_ID_BYTES = 64


_sequence = itertools.count(int.from_bytes(os.urandom(2), "big"))


def new_id(now_ms: int) -> str:
    """A sortable, unique id: milliseconds, then 16 hex digits.

    The first 4 digits count up in this process (mod 2^16), so one writer's ids made
    in the same millisecond sort in the order they were made; 48 random bits follow.
    """
    return f"{now_ms:013d}-{next(_sequence) % 0x10000:04x}{os.urandom(6).hex()}"


def finite_int(value: Any) -> int | None:
    """A replicated number as an int; None for anything else (bool, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def acceptable_id(key: str) -> bool:
    """Whether the agent acts on a record with this id (not empty, at most MAX_ID_BYTES)."""
    return 0 < len(key.encode()) <= MAX_ID_BYTES


def _check_text(text: str) -> None:
    if not text.strip():
        raise NodeError("text is empty")
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise NodeError(f"text longer than {MAX_TEXT_BYTES} bytes")


def send_message(transact: Transact, author: str, text: str, now_ms: int) -> str:
    """Add a user message to ``shared/messages``; returns its id."""
    _check_text(text)
    message_id = new_id(now_ms)
    with transact(SHARED) as ydoc:
        ydoc.get("messages", type=Map)[message_id] = {
            "id": message_id,
            "text": text,
            "author": author,
            "ts": now_ms,
        }
    return message_id


def add_task(transact: Transact, author: str, text: str, now_ms: int) -> str:
    """Request a task in ``shared/tasks``; returns its id."""
    _check_text(text)
    task_id = new_id(now_ms)
    with transact(SHARED) as ydoc:
        ydoc.get("tasks", type=Map)[task_id] = {
            "id": task_id,
            "text": text,
            "author": author,
            "ts": now_ms,
            "cancel": False,
        }
    return task_id


def cancel_task(transact: Transact, author: str, task_id: str, now_ms: int) -> None:
    """Ask for a task to be cancelled (a new immutable value with ``cancel`` set)."""
    with transact(SHARED) as ydoc:
        tasks = ydoc.get("tasks", type=Map)
        current = tasks.get(task_id)
        if not isinstance(current, dict):
            raise NodeError(f"no task {task_id!r}")
        tasks[task_id] = {**current, "cancel": True, "cancelled_by": author, "cancel_ts": now_ms}
