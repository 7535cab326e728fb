"""A revocation and the envelopes it cuts off, delivered in any order ([pairing] point 6).

A runtime, an observer device, an honest device and a device that is revoked (the
*victim*). The victim writes envelopes to ``shared`` and to its own ``device/<id>``
document, sometimes restarting (a new incarnation of the same key, reopened on its
SQLite store). The runtime receives some of them, in a drawn order, and then revokes
the victim through ``Engine.revoke`` (the path of the CLI and the control socket),
which puts the heads of the victim's chains it accepted into the log entry as
cutoffs. The victim keeps writing after that. The honest device syncs from the
runtime at drawn moments (so its own envelopes may depend on the victim's and may
name a log position that includes the revocation).

A fresh observer, which knows a prefix of the log, then receives the missing log
entries (the revocation among them), every envelope of both devices and duplicates,
in a drawn permutation. Whatever the order:

* its documents, version vectors, stored envelopes and log equal those of a
  reference observer that got the whole log first and the envelopes in creation
  order, and match what the cutoffs say independently of any replica;
* an envelope past a cutoff is never applied: it is refused with ``CutOff`` or held
  and later dropped; an envelope within a cutoff is never lost, even when it arrives
  after the revocation;
* nothing stays pending in a pycrdt document, nothing stays held.

Precondition, from the topology (docs/ARCHITECTURE.md, "Devices accept envelopes only
from the runtime"): the *first* envelope past each cutoff never reaches the observer
before the revocation has been folded, because the runtime never accepted it and
therefore never forwards it. Later envelopes past a cutoff may arrive early (a replay
by anybody): they are held for their missing predecessor, then dropped. The last test
shows why the precondition is needed: a replica cannot undo an envelope it applied
before it learned of the revocation.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pycrdt import Map

from crdt_state import lib0
from crdt_state.envelope import Envelope, decode_envelope
from crdt_state.errors import CutOff
from crdt_state.replica import Outcome, Replica
from crdt_state.schema import SHARED, device_doc
from crdt_state.storage.base import Store
from crdt_state.storage.memory import MemoryStore
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py
from mesh.engine import RUNTIME_ROLE, Engine
from mesh.identity import Identity, mesh_id_of
from mesh.membership.log import LogEntry, decode_entry, genesis
from mesh.membership.records import issue_certificate, issue_revocation
from tests.support import DEVICE_CAPS, NOW, YEAR_MS, seeded_identity

ROOT = seeded_identity(1)
RUNTIME_ID = seeded_identity(2)
OBSERVER_ID = seeded_identity(50)
HONEST_ID = seeded_identity(51)
VICTIM_ID = seeded_identity(52)
MESH_ID = mesh_id_of(ROOT.public_key)
VICTIM = "victim"
HONEST = "honest"
#: Log entries: 0 genesis, 1 observer, 2 honest device, 3 victim, 4 the revocation.
MEMBERS = ((OBSERVER_ID, "observer"), (HONEST_ID, HONEST), (VICTIM_ID, VICTIM))
REVOCATION_INDEX = 1 + len(MEMBERS)
STEPS = ("victim", "victim", "victim", "honest", "forward", "forward", "sync", "restart")

Item = tuple[str, int]  # ("entry", log index) or ("env", index into Scenario.written)


def incarnation(n: int) -> bytes:
    """A fixed incarnation (examples must replay identically)."""
    return n.to_bytes(16, "big")


def root_of(doc: str) -> str:
    return "messages" if doc == SHARED else "acks"


def open_replica(identity: Identity, store: Store, number: int, log: list[LogEntry]) -> Replica:
    replica = Replica(
        mesh_id=MESH_ID, store=store, author=identity, incarnation=incarnation(number)
    )
    replica.load()
    for entry in log:
        replica.add_log_entry(entry)
    store.commit()
    return replica


@dataclass
class Written:
    """One sealed envelope and what its single transaction did."""

    env: Envelope
    author: str
    tag: str
    key: str
    deleted: str | None
    hot: bool


@dataclass
class Writer:
    name: str
    identity: Identity
    replica: Replica
    live: dict[str, list[str]] = field(default_factory=dict)  # own undeleted keys, by doc

    def write(self, doc: str, now: int, tag: str, *, hot: bool, delete: int | None) -> Written:
        live = self.live.setdefault(doc, [])
        deleted = live.pop(delete % len(live)) if delete is not None and live else None
        key = f"k-{tag}"
        with self.replica.transact(doc, now) as ydoc:
            target = ydoc.get(root_of(doc), type=Map)
            target[key] = {"tag": tag}
            if hot:  # may overwrite another author's value (a reference to its item)
                target["hot"] = {"tag": tag}
            if deleted is not None:
                del target[deleted]
        env = self.replica.seal(doc, now)
        assert env is not None  # staged; committed when the process stops (few fsyncs)
        live.append(key)
        return Written(env, self.name, tag, key, deleted, hot)


@dataclass
class Scenario:
    log: list[LogEntry]  # the runtime's whole log; the revocation is the last entry
    written: list[Written]  # every envelope of both devices, in creation order
    cutoffs: dict[tuple[str, bytes], int]  # (doc, victim incarnation) -> cutoff seq

    def limit(self, w: Written) -> int | None:
        if w.author != VICTIM:
            return None
        return self.cutoffs.get((w.env.doc, w.env.incarnation), 0)

    def admitted(self, w: Written) -> bool:
        limit = self.limit(w)
        return limit is None or w.env.seq <= limit

    def first_past_cutoff(self, w: Written) -> bool:
        limit = self.limit(w)
        return limit is not None and w.env.seq == limit + 1


def new_runtime() -> tuple[Replica, Engine]:
    """The runtime's replica and engine, with the log up to the victim's admission."""
    runtime = Replica(
        mesh_id=MESH_ID, store=MemoryStore(), author=RUNTIME_ID, incarnation=incarnation(1)
    )
    runtime.add_log_entry(genesis(ROOT, RUNTIME_ID, now_ms=NOW, expires_ms=NOW + YEAR_MS))
    engine = Engine(runtime, RUNTIME_ID, RUNTIME_ROLE)
    for identity, name in MEMBERS:
        cert = issue_certificate(
            ROOT, MESH_ID, identity.public_key, DEVICE_CAPS, NOW, NOW + YEAR_MS, name
        )
        engine.admit(cert, NOW)
    runtime.store.commit()
    return runtime, engine


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store, copied for each example (creating one costs fsyncs)."""
    path = tmp_path_factory.mktemp("revocation-orders") / "empty.sqlite"
    SqliteStore(path).close()
    return path


def build(data: st.DataObject, tmp: Path, empty_store: Path) -> Scenario:
    runtime, engine = new_runtime()
    before = list(runtime.membership.entries)
    victim_path = tmp / "victim.sqlite"
    shutil.copyfile(empty_store, victim_path)
    victim = Writer(VICTIM, VICTIM_ID, open_replica(VICTIM_ID, SqliteStore(victim_path), 2, before))
    honest = Writer(HONEST, HONEST_ID, open_replica(HONEST_ID, MemoryStore(), 100, before))
    written: list[Written] = []
    forwarded: set[int] = set()
    revocation: LogEntry | None = None
    steps = data.draw(st.integers(2, 12), label="steps")
    revoke_at = steps - data.draw(st.integers(0, steps), label="steps after the revocation")
    now = NOW

    def pending() -> list[int]:
        """The victim's envelopes not yet handed to the runtime."""
        return [i for i, w in enumerate(written) if w.author == VICTIM and i not in forwarded]

    def forward(i: int) -> None:
        forwarded.add(i)
        env = decode_envelope(written[i].env.raw)
        if revocation is None:
            assert runtime.receive(env, now) in (Outcome.ACCEPTED, Outcome.HELD)
        else:  # the runtime refuses the connection; its replica would cut it off anyway
            with pytest.raises(CutOff):
                runtime.receive(env, now)

    try:
        for step in range(steps + 1):
            now += 10
            if step == revoke_at:
                # Some more of the victim's envelopes reach the runtime just before.
                last = data.draw(st.lists(st.integers(0, 63), max_size=8), label="last forwards")
                for pick in last:
                    if pending():
                        forward(pending()[pick % len(pending())])
                record = issue_revocation(ROOT, MESH_ID, VICTIM_ID.public_key, now)
                revocation = engine.revoke(record, now)
                runtime.store.commit()
            if step == steps:
                break
            kind = data.draw(st.sampled_from(STEPS))
            if kind in (VICTIM, HONEST):
                writer = victim if kind == VICTIM else honest
                doc = data.draw(st.sampled_from([SHARED, device_doc(writer.identity.peer_id)]))
                hot = data.draw(st.booleans())
                delete = data.draw(st.none() | st.integers(0, 7))
                tag = f"{kind[0]}{len(written)}"
                written.append(writer.write(doc, now, tag, hot=hot, delete=delete))
            elif kind == "forward":  # the victim's session hands the runtime one envelope
                if pending():
                    forward(pending()[data.draw(st.integers(0, len(pending()) - 1))])
            elif kind == "sync":  # runtime -> honest device: log first, then envelopes
                for entry in runtime.membership.entries[honest.replica.membership.length :]:
                    assert honest.replica.add_log_entry(decode_entry(entry.raw))
                for row in runtime.store.envelopes():
                    outcome = honest.replica.receive(decode_envelope(row.raw), now)
                    assert outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)
                honest.replica.store.commit()
            else:  # the victim's process restarts: a new incarnation of the same key
                number = victim.replica.incarnation[-1] + 1
                victim.replica.store.commit()
                store = victim.replica.store
                assert isinstance(store, SqliteStore)
                store.close()
                victim.replica = open_replica(VICTIM_ID, SqliteStore(victim_path), number, [])
    finally:
        store = victim.replica.store
        assert isinstance(store, SqliteStore)
        store.close()
    assert revocation is not None
    assert revocation.index == REVOCATION_INDEX
    scenario = Scenario(
        log=list(runtime.membership.entries),
        written=written,
        cutoffs={(c.doc, c.incarnation): c.seq for c in revocation.cutoffs},
    )
    # The cutoffs are exactly what the runtime had accepted from the victim.
    accepted = {row.hash for row in runtime.store.envelopes()}
    assert accepted == {w.env.hash for w in written if w.author == VICTIM and scenario.admitted(w)}
    assert runtime.held == {}
    return scenario


# --- checks ----------------------------------------------------------------------------------


def assert_nothing_pending(replica: Replica) -> None:
    for name, ydoc in replica.docs.items():
        state = lib0.decode_state_vector(ydoc.get_state())
        assert state == replica.expected_state(name), f"{name}: items pending in the document"


def content(replica: Replica) -> dict[str, dict[str, dict[str, Any]]]:
    """Documents with accepted envelopes; the others must be empty (touched by a hold)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for name, roots in docs_to_py(replica.docs).items():
        if replica.vector(name):
            result[name] = roots
        else:
            assert not any(roots.values()), f"{name}: content without accepted envelopes"
    return result


def tags_in(roots: dict[str, dict[str, Any]]) -> Iterator[str]:
    for values in roots.values():
        for value in values.values():
            yield value["tag"]


def expected_content(scenario: Scenario) -> dict[str, dict[str, set[str]]]:
    """Per document and root, the keys that the admitted envelopes leave."""
    keys: dict[str, dict[str, set[str]]] = {}
    for w in scenario.written:
        if scenario.admitted(w):
            root = keys.setdefault(w.env.doc, {}).setdefault(root_of(w.env.doc), set())
            root.add(w.key)
            if w.hot:
                root.add("hot")
    for w in scenario.written:
        if scenario.admitted(w) and w.deleted is not None:
            keys[w.env.doc][root_of(w.env.doc)].discard(w.deleted)
    return keys


def assert_final_state(replica: Replica, scenario: Scenario) -> None:
    assert replica.held == {}, "envelopes left in the hold"
    assert replica.held_entries == {}, "log entries left in the hold"
    assert [e.hash for e in replica.membership.entries] == [e.hash for e in scenario.log]
    stored = {row.hash for row in replica.store.envelopes()}
    assert stored == {w.env.hash for w in scenario.written if scenario.admitted(w)}
    expected_vectors: dict[str, dict[int, int]] = {}
    for w in scenario.written:
        if scenario.admitted(w):
            vector = expected_vectors.setdefault(w.env.doc, {})
            vector[w.env.client_id] = max(vector.get(w.env.client_id, 0), w.env.seq)
    assert replica.vectors() == expected_vectors
    assert_nothing_pending(replica)
    admitted_tags = {w.tag for w in scenario.written if scenario.admitted(w)}
    hot_tags = {w.tag for w in scenario.written if scenario.admitted(w) and w.hot}
    docs = content(replica)
    keys = expected_content(scenario)
    assert set(docs) == set(keys)
    for name, roots in docs.items():
        assert {root: set(values) for root, values in roots.items() if values} == {
            root: left for root, left in keys[name].items() if left
        }
        assert set(tags_in(roots)) <= admitted_tags, f"{name}: a cut-off write was applied"
        hot = roots[root_of(name)].get("hot")
        assert hot is None or hot["tag"] in hot_tags


def deliver(replica: Replica, scenario: Scenario, item: Item, now: int) -> str:
    kind, index = item
    if kind == "entry":
        replica.add_log_entry(decode_entry(scenario.log[index].raw))
        return "entry"
    w = scenario.written[index]
    try:
        outcome = replica.receive(decode_envelope(w.env.raw), now)
    except CutOff:
        assert not scenario.admitted(w), f"{w.tag}: refused although within its cutoff"
        return "cut-off"
    if not scenario.admitted(w):
        assert outcome is Outcome.HELD, f"{w.tag}: past its cutoff yet {outcome.value}"
    return outcome.value


def observer(number: int, log: list[LogEntry]) -> Replica:
    return open_replica(OBSERVER_ID, MemoryStore(), number, log)


def reference(scenario: Scenario) -> Replica:
    """The whole log first, then every envelope in creation order."""
    replica = observer(201, scenario.log)
    for index, w in enumerate(scenario.written):
        outcome = deliver(replica, scenario, ("env", index), NOW)
        assert outcome == ("accepted" if scenario.admitted(w) else "cut-off"), w.tag
    return replica


def draw_order(data: st.DataObject, scenario: Scenario, known: int) -> list[Item]:
    """A permutation of the missing entries, every envelope and some duplicates.

    The first envelope past each cutoff is moved to just after the point where the
    revocation takes effect (every missing entry delivered), if drawn before it.
    """
    items: list[Item] = [("entry", i) for i in range(known, len(scenario.log))]
    items += [("env", i) for i in range(len(scenario.written))]
    everything = [("entry", i) for i in range(len(scenario.log))]
    everything += [("env", i) for i in range(len(scenario.written))]
    duplicates = data.draw(st.lists(st.sampled_from(everything), max_size=6), label="duplicates")
    order: list[Item] = data.draw(st.permutations(items + duplicates), label="order")
    effective = max(order.index(("entry", i)) for i in range(known, len(scenario.log)))

    def early_and_forbidden(position: int) -> bool:
        kind, index = order[position]
        return (
            position < effective
            and kind == "env"
            and scenario.first_past_cutoff(scenario.written[index])
        )

    moved = [item for p, item in enumerate(order) if early_and_forbidden(p)]
    kept = [item for p, item in enumerate(order) if not early_and_forbidden(p)]
    at = kept.index(order[effective]) + 1
    return kept[:at] + moved + kept[at:]


# --- the property ------------------------------------------------------------------------------


@settings(
    max_examples=max(100, settings().max_examples // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_the_final_state_does_not_depend_on_the_arrival_order(
    empty_store: Path, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = build(data, Path(tmp), empty_store)
    expected = reference(scenario)
    assert_final_state(expected, scenario)

    # The observer knows the log up to the revocation, or less (then the admission of a
    # device, even the victim's, may arrive after the revocation: held entries).
    known = data.draw(st.integers(2, REVOCATION_INDEX), label="log entries known")
    replica = observer(200, scenario.log[:known])
    allowed = {w.env.hash for w in scenario.written if scenario.admitted(w)}
    revoked = False
    for item in draw_order(data, scenario, known):
        outcome = deliver(replica, scenario, item, NOW + 1000)
        replica.store.commit()
        if item[0] == "env":
            w = scenario.written[item[1]]
            if w.author == VICTIM:
                event(f"victim, {'within' if scenario.admitted(w) else 'past'} cutoff: {outcome}")
                if revoked and scenario.admitted(w):
                    event("victim envelope within its cutoff arrives after the revocation")
            else:
                event(f"honest: {outcome}")
        if REVOCATION_INDEX in replica.held_entries:
            event("revocation held: it arrived before an entry it follows")
        revoked = replica.membership.length > REVOCATION_INDEX
        # Never, at any point, an envelope past a cutoff in the store or a document.
        assert {row.hash for row in replica.store.envelopes()} <= allowed
        assert_nothing_pending(replica)
    event(f"log entries known: {known}")

    assert_final_state(replica, scenario)
    assert content(replica) == content(expected)
    assert replica.vectors() == expected.vectors()


# --- the precondition ----------------------------------------------------------------------------


def test_an_envelope_applied_before_the_revocation_is_not_undone() -> None:
    """Why the property lets the first envelope past a cutoff come only after the revocation.

    A replica cannot take back an envelope it applied before it learned of the cutoff: it
    keeps it, while a replica that learned of the revocation first refuses it. Only the
    topology prevents this: devices receive envelopes from the runtime alone, and the
    runtime never accepted (so never forwards) an envelope past a cutoff.
    """
    runtime, engine = new_runtime()
    before = list(runtime.membership.entries)
    victim = Writer(VICTIM, VICTIM_ID, open_replica(VICTIM_ID, MemoryStore(), 2, before))
    kept = victim.write(SHARED, NOW, "v0", hot=False, delete=None).env
    late = victim.write(SHARED, NOW, "v1", hot=False, delete=None).env
    assert runtime.receive(decode_envelope(kept.raw), NOW) is Outcome.ACCEPTED
    revocation = engine.revoke(issue_revocation(ROOT, MESH_ID, VICTIM_ID.public_key, NOW), NOW)
    assert [(c.doc, c.seq) for c in revocation.cutoffs] == [(SHARED, 1)]

    early = observer(200, before)
    for env in (kept, late):
        assert early.receive(decode_envelope(env.raw), NOW) is Outcome.ACCEPTED
    assert early.add_log_entry(decode_entry(revocation.raw))
    assert early.vector(SHARED) == {late.client_id: 2}  # applied, and not undone

    informed = observer(201, [*before, revocation])
    assert informed.receive(decode_envelope(kept.raw), NOW) is Outcome.ACCEPTED
    with pytest.raises(CutOff):
        informed.receive(decode_envelope(late.raw), NOW)
    assert informed.vector(SHARED) == {late.client_id: 1}
