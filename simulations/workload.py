"""Honest writes: every node writes, at a fixed simulated rate, to the documents it may write.

``shared`` (messages, tasks, memory) for nodes holding ``write``; ``agent``
(replies, tasks, approvals, notifications) for the runtime; ``device/<id>``
(decisions, acks) for that device alone. A write is 1..N transactions, each a
new key, an overwrite of a hot key, or a delete of a key someone wrote
(deleting others' items exercises causal contexts).
"""

from __future__ import annotations

import random
from collections import Counter

from pycrdt import Map

from crdt_state.replica import LocalWriteRefused
from crdt_state.schema import AGENT, ROOTS, SHARED, device_doc, kind_of
from mesh.membership.records import RUNTIME, WRITE
from simulations.config import HOT_KEYS, WorkloadConfig
from simulations.node import SimNode


def writable_docs(node: SimNode, caps: frozenset[str]) -> tuple[str, ...]:
    """The documents ``node`` may write with ``caps``."""
    docs: list[str] = []
    if WRITE in caps:
        docs.append(SHARED)
    if RUNTIME in caps:
        docs.append(AGENT)
    else:
        docs.append(device_doc(node.identity.peer_id))
    return tuple(docs)


class Workload:
    """Writes of every node; keys are drawn from each node's own stream."""

    def __init__(self, config: WorkloadConfig) -> None:
        self.config = config
        self.counter = 0
        #: Keys ever written, per (doc, root): deletes pick among them.
        self.keys: dict[tuple[str, str], list[str]] = {}
        self.stats: Counter[str] = Counter()

    def _weight(self, doc: str) -> float:
        kind = kind_of(doc)
        if kind == SHARED:
            return self.config.shared_weight
        if kind == AGENT:
            return self.config.agent_weight
        return self.config.device_weight

    def write(self, node: SimNode, rng: random.Random, now_ms: int, sim_ms: int) -> None:
        """One write of ``node``: 1..max_txns_per_write transactions."""
        if not node.writable:
            return
        weights = [self._weight(doc) for doc in node.writable]
        for _ in range(rng.randint(1, self.config.max_txns_per_write)):
            doc = rng.choices(node.writable, weights)[0]
            root = rng.choice(ROOTS[kind_of(doc)])
            roll = rng.random()
            try:
                self._transaction(node, rng, doc, root, roll, now_ms, sim_ms)
            except LocalWriteRefused:
                self.stats["refused-locally"] += 1  # a device that learned it was revoked

    def _transaction(
        self,
        node: SimNode,
        rng: random.Random,
        doc: str,
        root: str,
        roll: float,
        now_ms: int,
        sim_ms: int,
    ) -> None:
        known = self.keys.setdefault((doc, root), [])
        with node.engine.transact(doc, now_ms) as ydoc:
            target = ydoc.get(root, type=Map)
            if roll < self.config.delete_share and known:
                key = rng.choice(known)
                if key in target:
                    del target[key]
                    self.stats["deletes"] += 1
                    return
            if roll < self.config.delete_share + self.config.overwrite_share:
                key = f"hot-{rng.randrange(HOT_KEYS)}"
                self.stats["overwrites"] += 1
            else:
                self.counter += 1
                key = f"{node.name}-{self.counter}"
                known.append(key)
                self.stats["inserts"] += 1
            # A string, not a dict: pycrdt encodes a dict's keys in a random (hash) order, so
            # the update bytes (and signatures) would differ between two runs of one seed.
            target[key] = f"{node.name}:{self.counter}:{sim_ms}"
