"""Seeded random streams: one ``random.Random`` per purpose, derived from the run's seed.

Separate streams keep a run's parts independent: removing a fault from a
schedule (shrinking) leaves every node's writes, keys and incarnations alone.
``random.Random`` seeded with a string hashes it with SHA-512, so a stream is
the same in every process whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import random

STREAM_PREFIX = "agentmesh-sim/v1"


def stream(seed: int, *labels: object) -> random.Random:
    """The random stream of ``seed`` for the purpose named by ``labels``."""
    return random.Random("/".join([STREAM_PREFIX, str(seed), *map(str, labels)]))


def backoff_ms(rng: random.Random, attempt: int, base_ms: int, cap_ms: int) -> int:
    """Exponential backoff with full jitter: uniform over [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap_ms, base_ms * (1 << min(attempt, 30)))
    return rng.randint(0, ceiling)
