"""What a running node records for inspection: snapshots, refusals, per-peer sync times.

``attach(driver)`` registers one output listener on a node's ``EngineDriver``:

* it refreshes the local materialized snapshot (``crdt_state.snapshot``) when
  ``Snapshotter.due`` (``SNAPSHOT_EVERY_ENVELOPES`` stored after it, more as the
  log grows), and once the node has stored nothing for ``SNAPSHOT_IDLE_MS``, so
  an idle node's snapshot is current. While ``run`` runs, a helper process does
  it (``nodes.snapshot_helper``: off the event loop); otherwise right after the
  flush, in-process;
* it keeps the newest ``MAX_REFUSALS_KEPT`` refused envelopes (memory and the
  store's metadata), since refusals are otherwise only frames on the wire;
* ``run`` (a task next to the driver) looks at every session each
  ``PEER_POLL_S``: per peer it records when it was last connected, when both
  sides last had everything (``synced``, from version vectors) and, per
  document, how many envelopes each side lacked then, so a stopped node's
  ``status`` can tell.

Its writes are staged in the store and committed by a flush it asks for
(``driver.kick()``); a peer's record is rewritten when ``synced`` or the
connection changes, else at most every ``PEER_RECORD_INTERVAL_MS``.
"""

from __future__ import annotations

import json
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdt_state.snapshot import Snapshotter
from crdt_state.storage.sqlite import SqliteStore
from mesh.limits import MAX_REFUSALS_KEPT, SNAPSHOT_IDLE_MS

if TYPE_CHECKING:
    from crdt_state.replica import Replica
    from crdt_state.storage.base import Store
    from mesh.engine import Engine, Output
    from nodes.driver import EngineDriver

#: Metadata key of the refusal ring (JSON list, newest last).
REFUSALS_KEY = "inspect/refusals"
#: Metadata key prefix of one peer's record (JSON), followed by the peer's key in hex.
PEER_KEY_PREFIX = "inspect/peer/"
#: A peer's unchanged record is rewritten at most this often.
PEER_RECORD_INTERVAL_MS = 30_000
#: How often ``NodeTracker.run`` looks at the sessions.
PEER_POLL_S = 1.0
_MESSAGE_CHARS = 200


@dataclass
class PeerRecord:
    """What this node last knew about one peer's sync state."""

    last_seen_ms: int = 0
    last_sync_ms: int = 0
    synced: bool = False
    connected: bool = False
    acked_own: int = 0
    #: doc -> [we_lack, they_lack], as of ``last_seen_ms``
    docs: dict[str, list[int]] = field(default_factory=dict)
    written_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "last_seen_ms": self.last_seen_ms,
            "last_sync_ms": self.last_sync_ms,
            "synced": self.synced,
            "connected": self.connected,
            "acked_own": self.acked_own,
            "docs": self.docs,
        }

    @classmethod
    def from_json(cls, value: Any) -> PeerRecord:
        if not isinstance(value, dict):
            return cls()
        docs = value.get("docs")
        return cls(
            int(value.get("last_seen_ms") or 0),
            int(value.get("last_sync_ms") or 0),
            bool(value.get("synced")),
            bool(value.get("connected")),
            int(value.get("acked_own") or 0),
            {
                str(doc): [int(pair[0]), int(pair[1])]
                for doc, pair in (docs.items() if isinstance(docs, dict) else [])
                if isinstance(pair, list) and len(pair) == 2
            },
        )


def _json_meta(store: Store, key: str) -> Any:
    raw = store.get_meta(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def stored_refusals(store: Store) -> list[dict[str, Any]]:
    """Refusals recorded in a store (newest last)."""
    value = _json_meta(store, REFUSALS_KEY)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def stored_peer(store: Store, peer: bytes) -> PeerRecord | None:
    """A peer's record from a store, if the node ever synced with it."""
    value = _json_meta(store, PEER_KEY_PREFIX + peer.hex())
    return None if value is None else PeerRecord.from_json(value)


def doc_lacks(engine: Engine, peer: bytes) -> dict[str, list[int]]:
    """Per document, [envelopes we lack, envelopes the peer lacks], from version vectors.

    What the peer has counts only once it said so (its hello or acknowledgements), so
    a document is never shown complete on the other side before it is.
    """
    session = engine.sessions.get(peer)
    if session is None:
        return {}
    ours = engine.replica.vectors()
    result: dict[str, list[int]] = {}
    for doc in sorted(set(ours) | set(session.claims)):
        mine = ours.get(doc, {})
        claims = session.claims.get(doc, {})
        durable = session.durable.get(doc, {})
        we_lack = sum(max(0, seq - mine.get(client, 0)) for client, seq in claims.items())
        they_lack = sum(max(0, seq - durable.get(client, 0)) for client, seq in mine.items())
        result[doc] = [we_lack, they_lack]
    return result


class NodeTracker:
    """The output listener of one running node (see the module docstring)."""

    def __init__(self, driver: EngineDriver) -> None:
        self._driver = weakref.ref(driver)
        self.replica: Replica = driver.engine.replica
        self.snapshots = Snapshotter(self.replica)
        #: When this node last stored an envelope (driver clock, ms).
        self.last_accepted_ms = driver.clock()
        #: Set while ``run`` runs: refreshes then go to a helper process (SQLite stores).
        self._refresh_wanted: Any = None
        self._helper_lock: Any = None  # a trio.Lock while ``run`` runs: one helper at a time
        self._store_path: Path | None = None
        store = self.replica.store
        self.refusals: deque[dict[str, Any]] = deque(
            stored_refusals(store)[-MAX_REFUSALS_KEPT:], maxlen=MAX_REFUSALS_KEPT
        )
        self.peers: dict[bytes, PeerRecord] = {}

    def peer(self, key: bytes) -> PeerRecord:
        record = self.peers.get(key)
        if record is None:
            record = stored_peer(self.replica.store, key) or PeerRecord()
            self.peers[key] = record
        return record

    def __call__(self, output: Output) -> None:
        from mesh.engine import Accepted, Refused

        driver = self._driver()
        if driver is None:
            return
        if isinstance(output, Accepted):
            self.last_accepted_ms = driver.clock()
            if self.snapshots.due():
                self._refresh(driver)
        elif isinstance(output, Refused):
            owner = self.replica.owners.get(output.client)
            self.refusals.append(
                {
                    "time_ms": driver.clock(),
                    "peer": output.peer.hex(),
                    "doc": output.doc,
                    "client": output.client,
                    "author": owner[0].hex() if owner else None,
                    "incarnation": owner[1].hex() if owner else None,
                    "seq": output.seq,
                    "code": output.code,
                    "message": output.message[:_MESSAGE_CHARS],
                }
            )
            self.replica.store.set_meta(REFUSALS_KEY, json.dumps(list(self.refusals)).encode())
            driver.kick()

    async def run(self) -> None:
        """Look at the sessions every PEER_POLL_S until cancelled; record them at the end.

        While it runs, snapshot refreshes of a SQLite store go to a helper process.
        """
        import trio

        try:
            async with trio.open_nursery() as nursery:
                if isinstance(self.replica.store, SqliteStore):
                    self._refresh_wanted = trio.Event()
                    self._helper_lock = trio.Lock()
                    self._store_path = self.replica.store.path
                    nursery.start_soon(self._refresher)
                while True:
                    self.observe_peers()
                    self.refresh_if_idle()
                    await trio.sleep(PEER_POLL_S)
        finally:  # the node is stopping: its close() commits what this stages
            self._refresh_wanted = None
            self.observe_peers(stopping=True)

    def refresh_if_idle(self) -> None:
        """Refresh a stale snapshot once the node has stored nothing for SNAPSHOT_IDLE_MS."""
        driver = self._driver()
        if driver is None or self.snapshots.behind() == 0:
            return
        if driver.clock() - self.last_accepted_ms >= SNAPSHOT_IDLE_MS:
            self._refresh(driver)

    def _refresh(self, driver: EngineDriver) -> None:
        """Refresh the snapshot: by the helper process while ``run`` runs, else right here."""
        if self._refresh_wanted is not None:
            self._refresh_wanted.set()
        elif self.snapshots.write():
            driver.kick()  # the next flush commits it

    async def _refresher(self) -> None:
        import trio

        while True:
            wanted = self._refresh_wanted
            if wanted is None:
                return
            await wanted.wait()
            self._refresh_wanted = trio.Event()
            await self.refresh_now()

    async def refresh_now(self) -> None:
        """Bring the snapshot up to date through the helper (while ``run`` runs), and wait.

        Also what a caller awaits to know no helper is at work (tests measuring a node).
        """
        from nodes.snapshot_helper import refresh_in_helper

        lock, path = self._helper_lock, self._store_path
        if lock is None or path is None:
            driver = self._driver()
            if driver is not None and self.snapshots.behind() > 0 and self.snapshots.write():
                driver.kick()
            return
        async with lock:
            if self.snapshots.behind() == 0:
                return
            ok = await refresh_in_helper(path)
            # Even a "failed" helper may have committed (killed or timed out after it):
            # never write over its rows from a cache it made stale.
            self.snapshots.reload()
            if not ok:
                driver = self._driver()
                if driver is not None and self.snapshots.write():
                    driver.kick()

    def observe_peers(self, *, stopping: bool = False) -> None:
        """Update (and, when due, stage) every session's peer record."""
        driver = self._driver()
        if driver is None:
            return
        engine = driver.engine
        now = driver.clock()
        wrote = False
        for peer in set(engine.sessions) | {p for p, r in self.peers.items() if r.connected}:
            record = self.peer(peer)
            before = (record.synced, record.connected, sorted(record.docs))
            session = engine.sessions.get(peer)
            record.connected = session is not None and session.ready
            if record.connected:
                record.last_seen_ms = now
                record.synced = engine.status(peer).synced
                record.docs = doc_lacks(engine, peer)
                record.acked_own = max(record.acked_own, engine.acknowledged_own(peer))
            else:
                record.synced = False
            if record.synced:
                record.last_sync_ms = now
            if stopping:
                record.synced = record.connected = False
            if (record.synced, record.connected, sorted(record.docs)) != before or (
                record.connected and now - record.written_ms >= PEER_RECORD_INTERVAL_MS
            ):
                record.written_ms = now
                self.replica.store.set_meta(
                    PEER_KEY_PREFIX + peer.hex(), json.dumps(record.to_json()).encode()
                )
                wrote = True
        if wrote:
            driver.kick()


_TRACKERS: weakref.WeakKeyDictionary[EngineDriver, NodeTracker] = weakref.WeakKeyDictionary()


def attach(driver: EngineDriver) -> NodeTracker:
    """Track ``driver``'s node (once); returns its tracker."""
    tracker = _TRACKERS.get(driver)
    if tracker is None:
        tracker = _TRACKERS[driver] = NodeTracker(driver)
        driver.listeners.append(tracker)
    return tracker


def tracker_of(driver: EngineDriver) -> NodeTracker | None:
    return _TRACKERS.get(driver)


# --- the running node's part of 'agentmesh status' (nodes/service.py) ----------------------

#: Most held envelopes listed by ``status`` (all are counted).
MAX_HELD_LISTED = 100


def peer_status(driver: EngineDriver, peer: bytes) -> dict[str, Any]:
    """Extra per-peer status fields: per-document lacks and sync times."""
    from mesh.identity import peer_id_of

    engine = driver.engine
    now = driver.clock()
    synced = engine.status(peer).synced
    tracker = tracker_of(driver)
    record = tracker.peers.get(peer) if tracker is not None else None
    return {
        "peer_id": peer_id_of(peer),
        "connected": True,
        "docs": {
            doc: {"we_lack": pair[0], "they_lack": pair[1]}
            for doc, pair in doc_lacks(engine, peer).items()
        },
        "last_seen_ms": now,
        "last_sync_ms": now if synced else (record.last_sync_ms or None) if record else None,
    }


def node_status(driver: EngineDriver) -> dict[str, Any]:
    """Extra node status fields: pending writes, held envelopes, refusals, snapshot."""
    from mesh.identity import peer_id_of

    engine = driver.engine
    replica = engine.replica
    me = engine.identity.public_key
    own = sum(chain.seq for chain in replica.chains.values() if chain.author == me)
    acked = max((engine.acknowledged_own(peer) for peer in engine.sessions), default=0)
    tracker = tracker_of(driver)
    if tracker is not None:
        acked = max([acked, *(r.acked_own for r in tracker.peers.values())])
    held = [
        {
            "doc": env.doc,
            "author": peer_id_of(env.author),
            "incarnation": env.incarnation.hex(),
            "seq": env.seq,
            "hlc": env.hlc,
            "size": len(env.raw),
            "mship": env.mship,
        }
        for env in list(replica.held.values())[:MAX_HELD_LISTED]
    ]
    return {
        "pending_writes": max(0, own - acked),
        "held_envelopes": held,
        "held_bytes": replica.held_bytes,
        "refusals": list(tracker.refusals) if tracker is not None else [],
        "snapshot": (
            {"lid": tracker.snapshots.lid, "behind": tracker.snapshots.behind()}
            if tracker is not None
            else None
        ),
    }
