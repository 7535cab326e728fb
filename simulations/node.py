"""One simulated node: a real ``Replica`` and ``Engine`` over a ``MemoryStore``.

The node owns what survives a crash (its identity and store) and rebuilds the
rest on restart exactly as a real node does: a new ``Replica`` with a new
incarnation, ``load()``, and a new ``Engine``. Its clock is the simulated
time plus the epoch plus its skew.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from crdt_state.envelope import INCARNATION_BYTES
from crdt_state.replica import Replica
from crdt_state.storage.memory import MemoryStore
from mesh.engine import RUNTIME_ROLE, Engine
from mesh.identity import Identity
from simulations.config import SIM_EPOCH_MS
from simulations.network import Connection

ReplicaFactory = Callable[[bytes, MemoryStore, Identity, bytes], Replica]
EngineFactory = Callable[[Replica, Identity, str], Engine]


@dataclass(frozen=True)
class Build:
    """How nodes make their store, replica and engine (production classes, or a mutant)."""

    replica: ReplicaFactory
    engine: EngineFactory
    store: Callable[[str], MemoryStore] = MemoryStore


def production_replica(
    mesh_id: bytes, store: MemoryStore, identity: Identity, incarnation: bytes
) -> Replica:
    return Replica(mesh_id=mesh_id, store=store, author=identity, incarnation=incarnation)


def production_engine(replica: Replica, identity: Identity, role: str) -> Engine:
    return Engine(replica, identity, role)


PRODUCTION = Build(production_replica, production_engine)


class SimNode:
    """A runtime or device in the simulation."""

    def __init__(
        self,
        *,
        index: int,
        name: str,
        role: str,
        identity: Identity,
        mesh_id: bytes,
        build: Build,
        skew_ms: int,
        rng: random.Random,
        hostile: bool = False,
    ) -> None:
        self.index = index
        self.name = name
        self.role = role
        self.identity = identity
        self.key = identity.public_key
        self.mesh_id = mesh_id
        self.build = build
        self.skew_ms = skew_ms
        self.rng = rng
        self.hostile = hostile
        self.store = build.store(f"sim:{name}")
        self.up = False
        self.life = 0
        self.incarnations = 0
        self.revoked = False
        self.offline = 0
        self.conns: dict[bytes, Connection] = {}
        self.dialing = False
        self.attempt = 0
        self.tick_at: int | None = None
        self.torn = False
        self.torn_down_ms = 0
        #: Envelope count of the store when this node last released an output.
        self.floor = 0
        #: Heads this node acknowledged to a peer: (doc, client) -> seq.
        self.acked: dict[tuple[str, int], int] = {}
        self.log_seen = 0
        self.writable: tuple[str, ...] = ()
        self._replica: Replica | None = None
        self._engine: Engine | None = None

    @property
    def is_runtime(self) -> bool:
        return self.role == RUNTIME_ROLE

    @property
    def honest(self) -> bool:
        """Counted for convergence: neither hostile nor revoked."""
        return not self.hostile and not self.revoked

    @property
    def replica(self) -> Replica:
        assert self._replica is not None, f"{self.name} was never started"
        return self._replica

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, f"{self.name} was never started"
        return self._engine

    def clock(self, sim_ms: int) -> int:
        """This node's wall clock at simulated time ``sim_ms``."""
        return SIM_EPOCH_MS + sim_ms + self.skew_ms

    def start(self) -> None:
        """Open the store as a new incarnation: what a process start does."""
        incarnation = self.rng.randbytes(INCARNATION_BYTES)
        replica = self.build.replica(self.mesh_id, self.store, self.identity, incarnation)
        replica.load()
        self._replica = replica
        self._engine = self.build.engine(replica, self.identity, self.role)
        self.up = True
        self.life += 1
        self.incarnations += 1
        self.log_seen = min(self.log_seen, replica.membership.length)

    def release(self) -> None:
        """Let go of the current replica's documents.

        pycrdt's ``Doc.observe`` keeps the document alive from Rust (its callback holds
        the ``Doc``), so a replica that is dropped without unobserving leaks every
        document: thousands of runs in one worker would grow without bound.
        """
        if self._replica is None:
            return
        for ydoc in self._replica.docs.values():
            for subscription in list(ydoc._subscriptions):
                ydoc.unobserve(subscription)

    def crash(self) -> None:
        """Power cut: lose what was not committed, every connection and all volatile state."""
        self.release()
        self.store.crash()
        self.up = False
        self.life += 1
        self.conns.clear()
        self.dialing = False
        self.tick_at = None
        self.torn = False
