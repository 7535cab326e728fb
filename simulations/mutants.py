"""Deliberately broken engines and replicas: the checker must catch every one.

Each mutant is a subclass (or a store wrapper) of the production classes that
reintroduces one classic bug; production code is never edited. A whole
cluster runs the mutant build. ``MUTANTS`` maps a name (``agentmesh sim
--mutant NAME``) to its build and the number of seeds within which the test
suite requires the default test profile to catch it.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt_state.envelope import Envelope
from crdt_state.errors import ForeignClient
from crdt_state.replica import Outcome, Replica
from crdt_state.schema import root_names
from crdt_state.storage.memory import MemoryStore
from crdt_state.yupdate import decode_update
from mesh.engine import Engine, Output, _Session
from mesh.identity import Identity
from mesh.limits import MAX_ENVELOPES_PER_BATCH
from mesh.membership.state import Membership
from mesh.sync import frames
from simulations.node import PRODUCTION, Build, production_engine

# --- skips the last batch after a reconnect -------------------------------------------------


class SkipLastBatchEngine(Engine):
    """After a reconnect, marks the last batch of the catch-up as sent without sending it."""

    def __init__(self, replica: Replica, identity: Identity, role: str) -> None:
        super().__init__(replica, identity, role)
        self._met: set[bytes] = set()
        self._reconnected: set[bytes] = set()

    def connect(self, peer: bytes, now_ms: int) -> bool:
        ok = super().connect(peer, now_ms)
        if ok:
            if peer in self._met:
                self._reconnected.add(peer)
            self._met.add(peer)
        return ok

    def _on_hello(self, session: _Session, hello: frames.Hello) -> None:
        super()._on_hello(session, hello)
        if session.peer not in self._reconnected:
            return
        self._reconnected.discard(session.peer)
        lacking = [
            row
            for row in self.replica.store.envelopes(session.cursor)
            if session.known.get(row.doc, {}).get(row.client, 0) < row.seq
        ]
        for row in lacking[-MAX_ENVELOPES_PER_BATCH:]:
            vector = session.known.setdefault(row.doc, {})
            vector[row.client] = max(vector.get(row.client, 0), row.seq)


# --- acknowledges / sends before committing ------------------------------------------------


class LazyStore(MemoryStore):
    """A MemoryStore whose ``commit`` does nothing while ``lazy`` (a later one catches up)."""

    def __init__(self, location: str = "memory") -> None:
        super().__init__(location)
        self.lazy = False

    def commit(self) -> None:
        if not self.lazy:
            super().commit()


class _DeferredCommitEngine(Engine):
    """Skips the commit in some flushes; a later flush commits what they released."""

    def _defer(self) -> bool:
        raise NotImplementedError

    def flush(self, now_ms: int) -> list[Output]:
        store = self.replica.store
        assert isinstance(store, LazyStore)
        store.lazy = self._defer()
        try:
            return super().flush(now_ms)
        finally:
            store.lazy = False


class AckBeforeCommitEngine(_DeferredCommitEngine):
    """Releases ACKs before the envelopes they acknowledge are committed."""

    def _defer(self) -> bool:
        return any(session.acks for session in self.sessions.values())


class SendBeforeCommitEngine(_DeferredCommitEngine):
    """Releases its own sealed envelopes (and relays) before committing them."""

    def _defer(self) -> bool:
        return not any(session.acks for session in self.sessions.values())


# --- ignores revocation ----------------------------------------------------------------------


class LaxMembership(Membership):
    """Treats revoked keys as members and never cuts a chain off."""

    def is_member(self, key: bytes, now_ms: int | None = None) -> bool:
        member = self.members.get(key)
        return member is not None and (now_ms is None or now_ms < member.cert.expires_ms)

    def chain_limit(self, author: bytes, incarnation: bytes, doc: str) -> int | None:
        return None


class IgnoresRevocationReplica(Replica):
    def __init__(self, *, mesh_id: bytes, store: MemoryStore, author: Identity, incarnation: bytes):
        super().__init__(mesh_id=mesh_id, store=store, author=author, incarnation=incarnation)
        self.membership = LaxMembership(mesh_id)


# --- skips the client-id check ------------------------------------------------------------------


class SkipsClientIdReplica(Replica):
    """Lets an update insert items under any client id."""

    def _check_content(self, env: Envelope, context: dict[int, int], clock_start: int) -> int:
        try:
            return super()._check_content(env, context, clock_start)
        except ForeignClient:
            decoded = decode_update(env.update, roots=root_names(env.doc))
            own = sum(g.length for g in decoded.groups if g.client == env.client_id)
            return clock_start + own


# --- applies before the causal context ------------------------------------------------------------


class AppliesEarlyReplica(Replica):
    """Applies an envelope that waits only for its causal context instead of holding it."""

    def _receive(self, env: Envelope, now_ms: int) -> Outcome:
        outcome = super()._receive(env, now_ms)
        if outcome is not Outcome.HELD or env.mship > self.membership.length:
            return outcome
        chain = self.chains.get(env.chain)
        if env.seq != (chain.seq + 1 if chain else 1):
            return outcome
        clock_start = chain.clock_end if chain else 0
        clock_end = self._check_content(env, dict(env.context), clock_start)
        self._apply_checked(env, self.doc(env.doc), clock_end)
        self._record(env, clock_end)
        self._accepted.append(env)
        return Outcome.ACCEPTED


# --- the registry -------------------------------------------------------------------------------


def _replica_of(cls: type[Replica]) -> Build:
    def make(mesh_id: bytes, store: MemoryStore, identity: Identity, incarnation: bytes) -> Replica:
        return cls(mesh_id=mesh_id, store=store, author=identity, incarnation=incarnation)

    return Build(make, production_engine)


def _engine_of(cls: type[Engine], *, lazy: bool = False) -> Build:
    def make(replica: Replica, identity: Identity, role: str) -> Engine:
        return cls(replica, identity, role)

    return Build(PRODUCTION.replica, make, LazyStore if lazy else MemoryStore)


@dataclass(frozen=True)
class Mutant:
    """A broken build, what it breaks, and how many seeds the suite allows to catch it."""

    name: str
    description: str
    build: Build
    catch_within: int


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "skip-last-batch",
            "after a reconnect, the last batch of the catch-up is marked sent but never sent",
            _engine_of(SkipLastBatchEngine),
            5,
        ),
        Mutant(
            "ack-before-commit",
            "ACKs are released before the envelopes they acknowledge are committed",
            _engine_of(AckBeforeCommitEngine, lazy=True),
            10,
        ),
        Mutant(
            "send-before-commit",
            "sealed and relayed envelopes are sent before they are committed",
            _engine_of(SendBeforeCommitEngine, lazy=True),
            10,
        ),
        Mutant(
            "ignores-revocation",
            "revoked members keep their sessions and chains are never cut off",
            _replica_of(IgnoresRevocationReplica),
            10,
        ),
        Mutant(
            "skips-client-id-check",
            "an update may insert items under another author's client id",
            _replica_of(SkipsClientIdReplica),
            5,
        ),
        Mutant(
            "applies-before-context",
            "an envelope waiting for its causal context is applied at once",
            _replica_of(AppliesEarlyReplica),
            10,
        ),
    )
}


def build_of(mutant: str | None) -> Build:
    """The build of a run: production, or the named mutant's."""
    if mutant is None:
        return PRODUCTION
    try:
        return MUTANTS[mutant].build
    except KeyError:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(MUTANTS)}") from None
