"""The local materialized snapshot: opening a store without replaying its envelope log.

A node keeps, in its own store, every document's full pycrdt state
(``doc.get_update()``), its JSON rendering (the *view*, what ``agentmesh state
show`` prints) and its chain heads (the version vector with what ``Replica``
keeps per chain), all as of one local envelope id ``lid``: every envelope up to
``lid`` is in the snapshot and none after it. Opening applies the snapshot and
replays only the envelopes after ``lid``.

A running node refreshes it through a helper process (``nodes/snapshot_helper.py``,
``full_snapshot``), so the O(document) work never runs on its event loop.

Rows (``Store.put_snapshot``): one per document, plus a header row (doc ``""``)
naming the covered ``lid`` and the documents, each with the lid its row was
written at. Rows are replaced only in the transaction that writes the header,
so a crash keeps the old snapshot or the new one, never a mix.

Why it stays correct:

* A snapshot is written only when no local batch is open (documents hold exactly
  the envelopes stored), and it is staged in the store's current transaction:
  it becomes durable with, or after, every envelope it covers. It never holds
  anything that is not committed.
* Every chain head it names must be in the store, with the same hash and clock,
  at or before ``lid``, and its successor must not be; the document's state
  vector after applying must match the chain heads. Anything else (a bad
  checksum, an unknown version, a mismatch) and the snapshot is ignored with a
  ``SnapshotWarning``: the store is replayed from the start instead.
* Snapshot rows are a cache: deleting them never loses data.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map

from crdt_state import lib0
from crdt_state.envelope import HASH_BYTES, INCARNATION_BYTES, client_id_of, decode_envelope
from crdt_state.errors import StateError
from crdt_state.schema import ROOTS, kind_of
from crdt_state.storage.base import SnapshotRow, Store
from mesh import cbor
from mesh.identity import PUBLIC_KEY_BYTES
from mesh.limits import SNAPSHOT_EVERY_ENVELOPES, SNAPSHOT_GROWTH_DIVISOR

if TYPE_CHECKING:
    from crdt_state.replica import Replica

SNAPSHOT_VERSION = 1
HEADER_DOC = ""
#: zlib level for snapshot states and views: fast, and ~6x smaller on message-like maps.
_ZLIB_LEVEL = 1


class SnapshotWarning(UserWarning):
    """A snapshot was found but not used (corrupt, stale or inconsistent); the log is replayed."""


class SnapshotInvalid(StateError):
    """Why a snapshot cannot be used."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The head of one (document, author incarnation) chain as a snapshot records it."""

    client: int
    seq: int
    clock_end: int
    hash: bytes
    author: bytes
    incarnation: bytes
    hlc: int


@dataclass(frozen=True, slots=True)
class DocSnapshot:
    """One document in a snapshot (``state`` and ``view`` compressed)."""

    doc: str
    row_lid: int
    state_z: bytes
    view_z: bytes
    chains: tuple[ChainHead, ...]

    def state(self) -> bytes:
        return _inflate(self.state_z, "state", self.doc)

    def view(self) -> bytes:
        return _inflate(self.view_z, "view", self.doc)

    def vector(self) -> dict[int, int]:
        return {head.client: head.seq for head in self.chains}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A validated snapshot: every document's state as of envelope ``lid``."""

    lid: int
    docs: dict[str, DocSnapshot]
    #: Every document the snapshot covers (``docs`` may hold only the ones asked for).
    names: tuple[str, ...]


def _inflate(data: bytes, what: str, doc: str) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        raise SnapshotInvalid(f"snapshot {what} of {doc!r} does not inflate: {exc}") from exc


def render_view(ydoc: Doc[Any], name: str) -> bytes:
    """The JSON text of a document: ``{root: {key: value}}`` for every schema root.

    pycrdt renders each root in Rust (much faster than ``to_py``): integers stay
    integers, non-finite floats become null, binary values arrays of bytes.
    """
    parts = [f'"{root}":{ydoc.get(root, type=Map)}' for root in ROOTS[kind_of(name)]]
    return ("{" + ",".join(parts) + "}").encode()


# --- reading -------------------------------------------------------------------------------


def _decode_header(row: SnapshotRow) -> tuple[int, dict[str, int]]:
    try:
        value = cbor.decode(row.meta)
        fields = cbor.expect_list(value, 3, "snapshot header")
        if cbor.expect_uint(fields[0], "snapshot version") != SNAPSHOT_VERSION:
            raise SnapshotInvalid(f"snapshot version {fields[0]} is not {SNAPSHOT_VERSION}")
        lid = cbor.expect_uint(fields[1], "snapshot lid")
        if not isinstance(fields[2], list):
            raise cbor.CanonicalError("snapshot documents: expected an array")
        docs: dict[str, int] = {}
        for item in fields[2]:
            pair = cbor.expect_list(item, 2, "snapshot document")
            name = cbor.expect_text(pair[0], "snapshot document name", 1024)
            docs[name] = cbor.expect_uint(pair[1], "snapshot row lid")
    except cbor.CanonicalError as exc:
        raise SnapshotInvalid(f"snapshot header: {exc}") from exc
    if row.lid != lid:
        raise SnapshotInvalid("snapshot header row disagrees with its lid")
    return lid, docs


def _decode_doc(row: SnapshotRow) -> DocSnapshot:
    try:
        fields = cbor.expect_list(cbor.decode(row.meta), 3, "snapshot row")
        if cbor.expect_uint(fields[0], "snapshot version") != SNAPSHOT_VERSION:
            raise SnapshotInvalid(f"snapshot version {fields[0]} is not {SNAPSHOT_VERSION}")
        if cbor.expect_text(fields[1], "snapshot doc", 1024) != row.doc:
            raise SnapshotInvalid(f"snapshot row {row.doc!r} names another document")
        if not isinstance(fields[2], list):
            raise cbor.CanonicalError("snapshot chains: expected an array")
        heads = []
        for item in fields[2]:
            head = cbor.expect_list(item, 7, "snapshot chain")
            heads.append(
                ChainHead(
                    cbor.expect_uint(head[0], "client"),
                    cbor.expect_uint(head[1], "seq"),
                    cbor.expect_uint(head[2], "clock end"),
                    cbor.expect_bytes(head[3], "hash", HASH_BYTES),
                    cbor.expect_bytes(head[4], "author", PUBLIC_KEY_BYTES),
                    cbor.expect_bytes(head[5], "incarnation", INCARNATION_BYTES),
                    cbor.expect_uint(head[6], "hlc"),
                )
            )
    except cbor.CanonicalError as exc:
        raise SnapshotInvalid(f"snapshot row {row.doc!r}: {exc}") from exc
    try:
        kind_of(row.doc)
    except StateError as exc:
        raise SnapshotInvalid(f"snapshot row: {exc}") from exc
    return DocSnapshot(row.doc, row.lid, row.state, row.view, tuple(heads))


def _check_heads(store: Store, lid: int, snap: DocSnapshot) -> None:
    """Every chain head is in the store at or before ``lid``, and its successor is not."""
    seen: set[int] = set()
    for head in snap.chains:
        if head.client in seen or client_id_of(head.author, head.incarnation) != head.client:
            raise SnapshotInvalid(f"snapshot of {snap.doc!r}: bad chain {head.client}")
        seen.add(head.client)
        row = store.get_envelope(snap.doc, head.client, head.seq)
        if row is None or row.lid > lid or (row.hash, row.clock_end) != (head.hash, head.clock_end):
            raise SnapshotInvalid(
                f"snapshot of {snap.doc!r}: chain {head.client} seq {head.seq} is not in the store"
            )
        successor = store.first_lid(snap.doc, head.client, head.seq + 1)
        if successor is not None and successor <= lid:
            raise SnapshotInvalid(f"snapshot of {snap.doc!r}: chain {head.client} is stale")


def _warn(store: Store, reason: object) -> None:
    warnings.warn(
        f"{store.location}: ignoring the local snapshot ({reason}); replaying the envelope log",
        SnapshotWarning,
        stacklevel=3,
    )


def read_snapshot(store: Store, docs: list[str] | None = None) -> Snapshot | None:
    """The store's snapshot (only ``docs``, if given), checked; None if there is none.

    A snapshot that fails a check is reported with a ``SnapshotWarning`` and None.
    """
    try:
        rows = store.snapshot_rows(None if docs is None else [HEADER_DOC, *docs])
        by_doc = {row.doc: row for row in rows}
        header = by_doc.get(HEADER_DOC)
        if header is None:
            return None
        lid, listed = _decode_header(header)
        if lid > store.last_lid():
            raise SnapshotInvalid(f"snapshot covers envelope {lid}, beyond the log")
        result: dict[str, DocSnapshot] = {}
        for name, row_lid in listed.items():
            if docs is not None and name not in docs:
                continue
            row = by_doc.get(name)
            if row is None or row.lid != row_lid or row_lid > lid:
                raise SnapshotInvalid(f"snapshot row of {name!r} is missing or out of date")
            snap = _decode_doc(row)
            _check_heads(store, lid, snap)
            result[name] = snap
        return Snapshot(lid, result, tuple(sorted(listed)))
    except StateError as exc:  # SnapshotInvalid, CorruptStore (checksum), StorageError
        _warn(store, exc)
        return None


def restore(replica: Replica) -> int:
    """Load ``replica``'s documents and chains from the snapshot; the lid to replay after.

    Called by ``Replica.load`` after the membership log and before the envelopes.
    Returns 0 (replay everything) when there is no usable snapshot.
    """
    snapshot = read_snapshot(replica.store)
    if snapshot is None:
        return 0
    from crdt_state.replica import ChainState

    owners = dict(replica.owners)
    try:
        for snap in snapshot.docs.values():
            ydoc = replica.doc(snap.doc)
            try:
                ydoc.apply_update(snap.state())
            except BaseException as exc:  # pycrdt panics are BaseException
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                raise SnapshotInvalid(f"pycrdt refused the state of {snap.doc!r}") from exc
            expected = {h.client: h.clock_end for h in snap.chains if h.clock_end > 0}
            if lib0.decode_state_vector(ydoc.get_state()) != expected:
                raise SnapshotInvalid(f"state of {snap.doc!r} does not match its chains")
            for head in snap.chains:
                owner = replica.owners.get(head.client)
                if owner is not None and owner != (head.author, head.incarnation):
                    raise SnapshotInvalid(f"client {head.client} has two owners")
                replica.chains[(snap.doc, head.client)] = ChainState(
                    head.author, head.incarnation, head.seq, head.hash, head.clock_end
                )
                replica.owners[head.client] = (head.author, head.incarnation)
                replica.hlc = max(replica.hlc, head.hlc)
    except SnapshotInvalid as exc:
        _warn(replica.store, exc)
        replica.docs.clear()
        replica.chains.clear()
        replica.owners = owners
        replica.hlc = 0
        return 0
    return snapshot.lid


# --- writing -------------------------------------------------------------------------------


class Snapshotter:
    """Writes a replica's snapshot; remembers what it wrote to skip unchanged documents.

    ``write`` must run when the store holds exactly the replica's documents: right
    after a commit (a node's flush) or just before one (closing). It refuses while a
    local batch is open, since documents then hold writes that no envelope carries.
    """

    def __init__(
        self,
        replica: Replica,
        every: int = SNAPSHOT_EVERY_ENVELOPES,
        growth_divisor: int = SNAPSHOT_GROWTH_DIVISOR,
    ) -> None:
        self.replica = replica
        self.every = every
        self.growth_divisor = growth_divisor
        self._written: dict[str, tuple[dict[int, int], int]] = {}
        #: (doc, client) -> (seq, hlc) of the chain head last looked up.
        self._hlc: dict[tuple[str, int], tuple[int, int]] = {}
        try:
            header = replica.store.snapshot_rows([HEADER_DOC])
        except StateError:  # a corrupt snapshot: the next write replaces it
            header = []
        self.lid = header[0].lid if header else 0
        self.writes = 0

    def behind(self) -> int:
        """Envelopes stored after the snapshot."""
        return self.replica.store.last_lid() - self.lid

    def reload(self) -> None:
        """Take the stored snapshot as ours (another process wrote it: forget our cache)."""
        try:
            header = self.replica.store.snapshot_rows([HEADER_DOC])
        except StateError:
            header = []
        self.lid = header[0].lid if header else 0
        self._written.clear()
        self.writes += 1

    def due(self) -> bool:
        """Whether a busy node should refresh now.

        At least ``every`` envelopes behind, and at least 1/``growth_divisor`` of
        what the snapshot covers: a refresh re-encodes whole documents, so a fixed
        interval would cost O(log²) over a node's life and stall it ever longer.
        """
        return self.behind() >= max(self.every, self.lid // self.growth_divisor)

    def write(self) -> bool:
        """Stage a fresh snapshot (the caller commits); False when a local batch is open."""
        replica = self.replica
        if replica.next_seal_ms() is not None:
            return False
        store = replica.store
        lid = store.last_lid()
        vectors = replica.vectors()
        listed: list[list[Any]] = []
        for name in sorted(vectors):
            vector = vectors[name]
            written = self._written.get(name)
            if written is None or written[0] != vector:
                store.put_snapshot(self._row(name, lid))
                written = self._written[name] = (vector, lid)
            listed.append([name, written[1]])
        store.put_snapshot(
            SnapshotRow(HEADER_DOC, lid, cbor.encode([SNAPSHOT_VERSION, lid, listed]), b"", b"")
        )
        self.lid = lid
        self.writes += 1
        return True

    def _head_hlc(self, name: str, client: int, seq: int) -> int:
        known = self._hlc.get((name, client))
        if known is not None and known[0] == seq:
            return known[1]
        row = self.replica.store.get_envelope(name, client, seq)
        if row is None:  # pragma: no cover - every chain head is stored
            raise SnapshotInvalid(f"{name}: chain head {client} seq {seq} is not stored")
        hlc = decode_envelope(row.raw, check_signature=False).hlc
        self._hlc[(name, client)] = (seq, hlc)
        return hlc

    def _row(self, name: str, lid: int) -> SnapshotRow:
        ydoc = self.replica.docs[name]
        heads = [
            [
                client,
                chain.seq,
                chain.clock_end,
                chain.hash,
                chain.author,
                chain.incarnation,
                self._head_hlc(name, client, chain.seq),
            ]
            for (doc, client), chain in sorted(self.replica.chains.items())
            if doc == name
        ]
        return SnapshotRow(
            name,
            lid,
            cbor.encode([SNAPSHOT_VERSION, name, heads]),
            zlib.compress(ydoc.get_update(), _ZLIB_LEVEL),
            zlib.compress(render_view(ydoc, name), _ZLIB_LEVEL),
        )


def full_snapshot(replica: Replica, lid: int) -> list[SnapshotRow]:
    """Every row of a snapshot of ``replica`` as of ``lid``, the header last.

    For a replica that holds exactly the envelopes stored up to ``lid`` (a helper
    process that loaded the store in one read view: ``nodes/snapshot_helper.py``).
    Stage them in one transaction, as ``Snapshotter.write`` does.
    """
    writer = Snapshotter(replica)
    vectors = replica.vectors()
    rows = [writer._row(name, lid) for name in sorted(vectors)]
    listed = [[name, lid] for name in sorted(vectors)]
    header = SnapshotRow(HEADER_DOC, lid, cbor.encode([SNAPSHOT_VERSION, lid, listed]), b"", b"")
    return [*rows, header]


def refresh(replica: Replica) -> bool:
    """Write a snapshot if envelopes were stored since the last one (e.g. when closing)."""
    snapshotter = Snapshotter(replica)
    return snapshotter.behind() > 0 and snapshotter.write()
