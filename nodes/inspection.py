"""Read-only inspection of a node's data dir: what ``agentmesh state`` and ``status`` show.

Everything here opens the store with SQLite ``mode=ro``: it never takes the data
dir's lock and never writes, so it works while the node runs (WAL readers do not
block the writer) and on a stopped node's data dir. It imports neither click,
rich, trio nor libp2p.

Current state comes from the local materialized snapshot (``crdt_state.snapshot``)
plus the envelopes stored after it; past states (``state at``, ``state diff``) and
``history`` / ``blame`` are rebuilt from the envelope log, which is kept forever.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pycrdt import Doc, Map, MapEvent

from crdt_state import lib0
from crdt_state.envelope import Envelope, decode_envelope, decode_proof
from crdt_state.errors import CorruptStore, StateError, UnknownDocument
from crdt_state.schema import ROOTS, kind_of, new_doc
from crdt_state.snapshot import read_snapshot, render_view
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.yupdate import decode_update
from mesh.errors import AgentmeshError, MembershipError
from mesh.identity import peer_id_of, public_key_of_peer_id
from mesh.membership.log import ACTION_QUARANTINE, ACTION_REVOKE, decode_entry
from mesh.membership.records import Revocation, decode_record
from mesh.membership.state import Membership
from nodes.datadir import DataDir
from nodes.errors import ControlError, DataDirError, NotFound

#: How often ``state watch`` looks for new envelopes in the store.
WATCH_POLL_S = 0.2
#: Most deleted clocks of one range resolved to map keys (the rest are listed as a range).
_MAX_RANGE_RESOLVED = 4096
_CONTROL_TIMEOUT_S = 10.0
_MESH_KEY = "mesh_id"
_ROLE_KEY = "role"


# --- time --------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(text: str, now: int) -> int:
    """Milliseconds since the epoch from ``now``, a duration ago (``90s``, ``10m``, ``2h``,
    ``3d``), epoch milliseconds (digits) or ISO 8601 (UTC unless it names an offset)."""
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - int(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-01-31T12:00:00Z), epoch "
            "milliseconds, 'now', or a duration ago such as 90s, 10m, 2h, 3d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    """ISO 8601 in UTC, to the millisecond."""
    if ms is None:
        return None
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):  # a replicated value out of range
        return str(ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hlc_ms(hlc: int) -> int:
    """The wall-clock milliseconds of a hybrid logical clock value."""
    return hlc >> 16


# --- paths -------------------------------------------------------------------------------


def check_doc(name: str) -> str:
    """``name`` if it is a document of the schema, else NotFound."""
    try:
        kind_of(name)
    except UnknownDocument as exc:
        raise NotFound(f"{exc}; documents are 'shared', 'agent' and 'device/<peer id>'") from None
    return name


def resolve_path(doc: str, content: dict[str, Any], path: str) -> tuple[list[str], Any]:
    """Walk ``path`` (``root/key/field/...``) in a document's content; (segments, value).

    Map keys may hold '/': the longest run of segments that names a key wins.
    """
    parts = [p for p in path.strip("/").split("/") if p != ""]
    if not parts:
        return [], content
    root, rest = parts[0], parts[1:]
    if root not in content:
        roots = ", ".join(ROOTS[kind_of(doc)])
        raise NotFound(f"{doc}: no root {root!r} (roots: {roots})")
    walked = [root]
    value: Any = content[root]
    while rest:
        if isinstance(value, dict):
            for n in range(len(rest), 0, -1):
                key = "/".join(rest[:n])
                if key in value:
                    walked.append(key)
                    value = value[key]
                    rest = rest[n:]
                    break
            else:
                raise NotFound(f"{doc}: no {'/'.join([*walked, rest[0]])!r}")
        elif isinstance(value, list) and rest[0].isdigit() and int(rest[0]) < len(value):
            walked.append(rest[0])
            value = value[int(rest[0])]
            rest = rest[1:]
        else:
            raise NotFound(f"{doc}: no {'/'.join([*walked, rest[0]])!r}")
    return walked, value


# --- what an envelope changed ------------------------------------------------------------


@dataclass
class Changes:
    """Map keys (``root/key``) an envelope inserted, overwrote and deleted."""

    inserted: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: The update's delete set: [client, clock, length]
    deleted_ranges: list[list[int]] = field(default_factory=list)
    #: Items whose map key could not be told (their origin is not in this log)
    unresolved: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "overwritten": self.overwritten,
            "deleted": self.deleted,
            "deleted_ranges": self.deleted_ranges,
            "unresolved": self.unresolved,
        }

    def summary(self) -> str:
        parts = [f"+{k}" for k in self.inserted]
        parts += [f"~{k}" for k in self.overwritten]
        parts += [f"-{k}" for k in self.deleted]
        if self.unresolved:
            parts.append(f"({self.unresolved} unresolved items)")
        return " ".join(parts)


@dataclass(frozen=True)
class Write:
    """One item written for a map key, and the envelope that carried it."""

    client: int
    clock: int
    lid: int


class ItemIndex:
    """Which map key every item of one document belongs to, built envelope by envelope.

    An item that sets a key for the first time names its root and key; an overwrite
    names only its origin (the item it replaced), so keys are resolved through the
    items seen before, in acceptance order (causal order).
    """

    def __init__(self, track: tuple[str, str] | None = None) -> None:
        self.keys: dict[tuple[int, int], tuple[str, str]] = {}
        self.live: set[tuple[str, str]] = set()
        self.track = track
        #: Items written for ``track``, in acceptance order.
        self.writes: list[Write] = []

    def describe(self, update: bytes, lid: int = 0) -> Changes:
        decoded = decode_update(update, detail=True)
        changes = Changes()
        touched: set[tuple[str, str]] = set()
        for item in decoded.items or ():
            if item.kind != "item":
                continue
            key: tuple[str, str] | None = None
            if isinstance(item.parent, str) and item.key is not None:
                key = (item.parent, item.key)
            elif item.origin is not None:
                key = self.keys.get(item.origin)
            elif item.right_origin is not None:
                key = self.keys.get(item.right_origin)
            if key is None:
                changes.unresolved += 1
                continue
            for clock in range(item.clock, item.clock + min(item.length, 64)):
                self.keys[(item.client, clock)] = key
            if key == self.track:
                self.writes.append(Write(item.client, item.clock, lid))
            if key in touched:
                continue
            touched.add(key)
            (changes.overwritten if key in self.live else changes.inserted).append("/".join(key))
        for client, clock, length in decoded.deletes:
            changes.deleted_ranges.append([client, clock, length])
            for c in range(clock, clock + min(length, _MAX_RANGE_RESOLVED)):
                key = self.keys.get((client, c))
                if key is not None and key not in touched:
                    touched.add(key)
                    changes.deleted.append("/".join(key))
                    self.live.discard(key)
        self.live.update(k for k in touched if "/".join(k) not in changes.deleted)
        return changes


# --- the inspector -----------------------------------------------------------------------


@dataclass
class Inspector:
    """A node's data dir opened read-only."""

    datadir: DataDir
    store: SqliteStore
    mesh_id: bytes
    _membership: Membership | None = None

    @classmethod
    def open(cls, datadir: DataDir) -> Inspector:
        if not datadir.path.is_dir():
            raise DataDirError(
                f"{datadir.path}: no such data directory (pass --data-dir or set AGENTMESH_HOME)"
            )
        datadir.require()
        store = SqliteStore(datadir.store, readonly=True)
        try:
            mesh_id = store.get_meta(_MESH_KEY)
            if mesh_id is None:
                raise DataDirError(f"{datadir.path}: this device has not joined a mesh yet")
        except BaseException:
            store.close()
            raise
        return cls(datadir, store, mesh_id)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- membership and devices -----------------------------------------------------------

    @property
    def membership(self) -> Membership:
        if self._membership is None:
            membership = Membership(self.mesh_id)
            for raw in self.store.log_entries():
                try:
                    membership.add(decode_entry(raw))
                except MembershipError as exc:
                    raise CorruptStore(
                        f"{self.store.location}: bad membership-log row: {exc}"
                    ) from exc
            self._membership = membership
        return self._membership

    def device_name(self, key: bytes) -> str:
        member = self.membership.member(key)
        return member.cert.name if member is not None else ""

    def resolve_device(self, text: str) -> bytes:
        """A device's key from its PeerId, its name or its public key in hex."""
        members = self.membership.members
        named = [key for key, m in members.items() if m.cert.name == text]
        if len(named) == 1:
            return named[0]
        try:
            key = public_key_of_peer_id(text)
        except ValueError:
            key = bytes.fromhex(text) if re.fullmatch(r"[0-9a-fA-F]{64}", text) else b""
        if key in members:
            return key
        if len(named) > 1:
            raise NotFound(f"{len(named)} devices are named {text!r}: give a PeerId")
        raise NotFound(f"no device {text!r} in this mesh (see 'agentmesh devices')")

    # --- current content ------------------------------------------------------------------

    def current_docs(self, docs: list[str] | None = None) -> tuple[dict[str, Doc[Any]], int]:
        """The documents as they are now (snapshot + later envelopes); and the last lid read."""
        snapshot = read_snapshot(self.store, docs)
        ydocs: dict[str, Doc[Any]] = {}

        def ydoc(name: str) -> Doc[Any]:
            found = ydocs.get(name)
            if found is None:
                found = ydocs[name] = new_doc(name, 1)
            return found

        lid = 0
        if snapshot is not None:
            lid = snapshot.lid
            for name, snap in snapshot.docs.items():
                ydoc(name).apply_update(snap.state())
        for row in self.store.envelopes(lid):
            lid = row.lid
            if docs is None or row.doc in docs:
                ydoc(row.doc).apply_update(self._decode(row.raw, row.lid).update)
        for name in docs or ():
            ydoc(name)
        return ydocs, lid

    def views(self, docs: list[str] | None = None) -> dict[str, bytes]:
        """Every document's (or ``docs``') JSON text, straight from the snapshot when current."""
        snapshot = read_snapshot(self.store, docs)
        lid = snapshot.lid if snapshot is not None else 0
        names = set(snapshot.names) if snapshot is not None else set()
        stale = {row.doc for row in self.store.envelopes(lid)}
        names |= stale
        if docs is not None:
            names = set(docs)
        result: dict[str, bytes] = {}
        replay = sorted(n for n in names if snapshot is None or n in stale)
        if replay:
            ydocs, _ = self.current_docs(replay)
            for name in replay:
                result[name] = render_view(ydocs[name], name)
        for name in sorted(names - set(replay)):
            assert snapshot is not None
            snap = snapshot.docs.get(name)
            result[name] = snap.view() if snap is not None else render_view(new_doc(name, 1), name)
        return dict(sorted(result.items()))

    def known_docs(self) -> list[str]:
        snapshot = read_snapshot(self.store)
        names = set(snapshot.names) if snapshot is not None else set()
        names |= {row.doc for row in self.store.envelopes(snapshot.lid if snapshot else 0)}
        return sorted(names)

    def require_doc(self, name: str) -> str:
        """``name`` if it is in the schema and, for a device document, in this store."""
        check_doc(name)
        if kind_of(name) != name and name not in self.known_docs():
            raise NotFound(f"{name}: no such document in this store")
        return name

    # --- the envelope log -----------------------------------------------------------------

    def _decode(self, raw: bytes, lid: int) -> Envelope:
        try:
            return decode_envelope(raw, check_signature=False)
        except StateError as exc:
            raise CorruptStore(f"{self.store.location}: envelope row {lid}: {exc}") from exc

    def _chain_note(self, env: Envelope) -> str | None:
        membership = self.membership
        cutoff = membership.cutoff(env.author, env.incarnation, env.doc)
        if (env.author, env.incarnation) in membership.quarantined:
            seq = cutoff.seq if cutoff is not None else 0
            return f"quarantined: fork; accepted up to seq {seq}"
        member = membership.member(env.author)
        if member is not None and member.revoked_at is not None:
            seq = cutoff.seq if cutoff is not None else 0
            return f"revoked: accepted up to seq {seq}"
        return None

    def envelope_row(self, env: Envelope, lid: int, pos: int, changes: Changes) -> dict[str, Any]:
        ms = hlc_ms(env.hlc)
        return {
            "status": "accepted",
            "lid": lid,
            "pos": pos,
            "doc": env.doc,
            "author": peer_id_of(env.author),
            "device": self.device_name(env.author),
            "incarnation": env.incarnation.hex(),
            "seq": env.seq,
            "hlc": env.hlc,
            "time_ms": ms,
            "time": iso(ms),
            "size": len(env.raw),
            "update_size": len(env.update),
            "chain": self._chain_note(env),
            **changes.to_json(),
        }

    def history(
        self,
        doc: str | None = None,
        *,
        author: bytes | None = None,
        since_ms: int | None = None,
        held: Iterable[dict[str, Any]] = (),
        refusals: Iterable[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Accepted envelopes in acceptance order, then held, refused and cut-off events."""
        indexes: dict[str, ItemIndex] = {}
        positions: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for row in self.store.envelopes():
            if doc is not None and row.doc != doc:
                continue
            env = self._decode(row.raw, row.lid)
            positions[row.doc] = pos = positions.get(row.doc, 0) + 1
            index = indexes.setdefault(row.doc, ItemIndex())
            changes = self._describe(index, env, row.lid)
            if author is not None and env.author != author:
                continue
            if since_ms is not None and hlc_ms(env.hlc) < since_ms:
                continue
            rows.append(self.envelope_row(env, row.lid, pos, changes))
        events = [*self._log_events(doc), *self._held_rows(held), *self._refused_rows(refusals)]
        events = [
            e
            for e in events
            if (doc is None or e["doc"] in (doc, None))
            and (author is None or e.get("author") in (None, peer_id_of(author)))
            and (since_ms is None or (e["time_ms"] or 0) >= since_ms)
        ]
        events.sort(key=lambda e: e["time_ms"] or 0)
        return rows + events

    def _describe(self, index: ItemIndex, env: Envelope, lid: int) -> Changes:
        try:
            return index.describe(env.update, lid)
        except StateError as exc:
            raise CorruptStore(f"{self.store.location}: envelope row {lid}: {exc}") from exc

    def _log_events(self, doc: str | None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for entry in self.membership.entries:
            if entry.action not in (ACTION_REVOKE, ACTION_QUARANTINE):
                continue
            if entry.action == ACTION_QUARANTINE:
                assert entry.quarantine is not None
                subject, incarnation = entry.quarantine[0], entry.quarantine[1]
                proofs = [decode_proof(p) for p in entry.quarantine[2:]]
                fork_doc = proofs[0].doc
                detail = (
                    f"fork at {fork_doc} seq {proofs[0].seq}: "
                    f"{proofs[0].hash.hex()[:12]} vs {proofs[1].hash.hex()[:12]}"
                )
                status = "quarantined"
            else:
                record = decode_record(entry.record)
                assert isinstance(record, Revocation)
                subject, incarnation, fork_doc = record.subject, None, None
                detail = f"revoked by {peer_id_of(record.issuer)}"
                status = "revoked"
            for cutoff in entry.cutoffs or ():
                if doc is None or cutoff.doc == doc:
                    events.append(
                        self._event(
                            status,
                            cutoff.doc,
                            subject,
                            cutoff.incarnation.hex(),
                            cutoff.seq,
                            entry.committed_ms,
                            f"{detail}; later envelopes are refused (log entry {entry.index})",
                        )
                    )
            if not entry.cutoffs and (doc is None or fork_doc in (None, doc)):
                events.append(
                    self._event(
                        status,
                        fork_doc,
                        subject,
                        incarnation.hex() if incarnation else None,
                        None,
                        entry.committed_ms,
                        f"{detail}; no envelope accepted before (log entry {entry.index})",
                    )
                )
        return events

    def _event(
        self,
        status: str,
        doc: str | None,
        author: bytes | None,
        incarnation: str | None,
        seq: int | None,
        time_ms: int | None,
        detail: str,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "status": status,
            "doc": doc,
            "author": peer_id_of(author) if author else None,
            "device": self.device_name(author) if author else "",
            "incarnation": incarnation,
            "seq": seq,
            "time_ms": time_ms,
            "time": iso(time_ms),
            "detail": detail,
            **extra,
        }

    def _held_rows(self, held: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for h in held:
            key = public_key_of_peer_id(h["author"])
            rows.append(
                self._event(
                    "held",
                    h["doc"],
                    key,
                    h["incarnation"],
                    h["seq"],
                    hlc_ms(h["hlc"]),
                    f"waiting in the running node's memory (membership position {h['mship']}, "
                    "or an earlier envelope it depends on)",
                    size=h["size"],
                )
            )
        return rows

    def _refused_rows(self, refusals: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
        from nodes.tracking import stored_refusals

        rows = []
        for r in stored_refusals(self.store) if refusals is None else refusals:
            author = bytes.fromhex(r["author"]) if r.get("author") else None
            rows.append(
                self._event(
                    "refused",
                    r.get("doc") or None,
                    author,
                    r.get("incarnation"),
                    r.get("seq"),
                    r.get("time_ms"),
                    f"{r.get('code')}: {r.get('message')}",
                    peer=peer_id_of(bytes.fromhex(r["peer"])) if r.get("peer") else None,
                    client=r.get("client"),
                )
            )
        return rows

    # --- blame ----------------------------------------------------------------------------

    def blame(self, doc: str, path: str) -> dict[str, Any]:
        """Which envelope wrote the current value of the map key at ``path``, and the others."""
        current, _ = self.current_docs([doc])
        content = json.loads(render_view(current[doc], doc))
        walked, value = resolve_path(doc, content, path)
        if len(walked) < 2:
            raise NotFound(f"{doc}: blame needs a map key: {walked[0] if walked else 'ROOT'}/KEY")
        target = (walked[0], walked[1])
        index = ItemIndex(track=target)
        ydoc = new_doc(doc, 1)
        envelopes: dict[int, tuple[Envelope, int]] = {}
        positions = 0
        for row in self.store.envelopes():
            if row.doc != doc:
                continue
            positions += 1
            env = self._decode(row.raw, row.lid)
            before = len(index.writes)
            self._describe(index, env, row.lid)
            if len(index.writes) > before:
                envelopes[row.lid] = (env, positions)
            ydoc.apply_update(env.update)
        deleted = _delete_ranges(ydoc)
        writes = []
        live: list[dict[str, Any]] = []
        for write in index.writes:
            env, pos = envelopes[write.lid]
            entry = self.envelope_row(env, write.lid, pos, Changes())
            for key in ("inserted", "overwritten", "deleted", "deleted_ranges", "unresolved"):
                del entry[key]
            entry["item"] = [write.client, write.clock]
            entry["current"] = not _is_deleted(deleted, write.client, write.clock)
            writes.append(entry)
            if entry["current"]:
                live.append(entry)
        if len(live) != 1:
            raise StateError(
                f"{doc}: {len(live)} live items for {'/'.join(target)} (expected one); "
                "the store's log and documents disagree"
            )
        return {
            "doc": doc,
            "path": "/".join(walked),
            "key": "/".join(target),
            "value": value,
            "writer": live[0],
            "writes": writes,
        }

    # --- the past -------------------------------------------------------------------------

    def doc_at(
        self, doc: str, *, time_ms: int | None = None, count: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A document rebuilt from its envelopes: those whose HLC time is at most ``time_ms``
        or the first ``count`` (acceptance order). Returns (content, about)."""
        ydoc = new_doc(doc, 1)
        expected: dict[int, int] = {}
        applied = skipped = total = 0
        last: dict[str, Any] | None = None
        for row in self.store.envelopes():
            if row.doc != doc:
                continue
            total += 1
            if count is not None and total > count:
                continue
            env = self._decode(row.raw, row.lid)
            if time_ms is not None and hlc_ms(env.hlc) > time_ms:
                skipped += 1
                continue
            ydoc.apply_update(env.update)
            applied += 1
            if row.clock_end:
                expected[row.client] = max(expected.get(row.client, 0), row.clock_end)
            last = {"lid": row.lid, "pos": total, "time_ms": hlc_ms(env.hlc)}
        if count is not None and count > total:
            raise NotFound(f"{doc} has {total} envelopes, not {count}")
        state = lib0.decode_state_vector(ydoc.get_state())
        waiting = sum(1 for client, end in expected.items() if state.get(client, 0) < end)
        about = {
            "doc": doc,
            "envelopes": applied,
            "skipped": skipped,
            "of": total,
            "last": last,
            "time_ms": time_ms,
            "time": iso(time_ms),
            "seq": count,
            # Envelopes with an earlier HLC whose items depend on later ones stay out of view.
            "incomplete_chains": waiting,
        }
        return json.loads(render_view(ydoc, doc)), about

    # --- status ---------------------------------------------------------------------------

    def status(self, running: dict[str, Any] | None) -> dict[str, Any]:
        """``agentmesh status``: the running node's reply (if any) completed from the store."""
        from nodes.tracking import stored_peer, stored_refusals

        membership = self.membership
        role = (self.store.get_meta(_ROLE_KEY) or b"").decode()
        me: bytes | None = None
        try:
            from mesh.identity import Identity

            me = Identity.load(self.datadir.identity_key).public_key
        except (OSError, ValueError, AgentmeshError):
            if running is None:
                raise
        report: dict[str, Any] = dict(running or {})
        report.pop("ok", None)
        report["running"] = running is not None
        report.setdefault("id", peer_id_of(me) if me else None)
        report.setdefault("role", role)
        report["mesh"] = self.mesh_id.hex()
        live = {p["peer"]: p for p in report.get("peers", [])}
        peers = []
        for key, member in sorted(membership.members.items(), key=lambda kv: kv[1].certs[0][0]):
            if key == me:
                continue
            entry = live.pop(key.hex(), None)
            if entry is None:
                entry = {"peer": key.hex(), "peer_id": peer_id_of(key), "connected": False}
                record = stored_peer(self.store, key)
                if record is not None:
                    entry.update(
                        {
                            "synced": False,
                            "last_seen_ms": record.last_seen_ms or None,
                            "last_sync_ms": record.last_sync_ms or None,
                            "acked_own": record.acked_own,
                            # As of last_seen_ms: the peer may have more (or less) now.
                            "docs_as_of_last_seen": {
                                doc: {"we_lack": pair[0], "they_lack": pair[1]}
                                for doc, pair in record.docs.items()
                            },
                        }
                    )
            entry["name"] = member.cert.name
            entry["caps"] = sorted(member.cert.caps)
            entry["revoked"] = member.revoked_at is not None
            peers.append(entry)
        peers.extend(live.values())  # connected but not (yet) a member we know of
        for entry in peers:
            for field_ in ("last_seen_ms", "last_sync_ms"):
                if field_ in entry:
                    entry[field_.replace("_ms", "")] = iso(entry[field_])
        report["peers"] = peers
        report["peers_known"] = len(peers)
        report["peers_connected"] = sum(1 for p in peers if p.get("connected"))
        report["forks"] = [
            {
                "author": peer_id_of(author),
                "device": self.device_name(author),
                "incarnation": incarnation.hex(),
            }
            for author, incarnation in sorted(membership.quarantined)
        ]
        report["membership_entries"] = membership.length
        if running is None:
            chains = self._chain_heads()
            own = sum(seq for author, seq in chains if author == me)
            acked = max(
                (
                    r.acked_own
                    for r in (stored_peer(self.store, k) for k in membership.members)
                    if r
                ),
                default=0,
            )
            report.update(
                {
                    "envelopes": self.store.envelope_count(),
                    "own_envelopes": own,
                    "pending_writes": max(0, own - acked),
                    # Held envelopes live only in a running node's memory.
                    "held": None,
                    "held_envelopes": [],
                    "refusals": stored_refusals(self.store),
                    "unsealed_writes": False,
                    "synced": False,
                    "revoked": bool(
                        me and (m := membership.member(me)) is not None and m.revoked_at is not None
                    ),
                }
            )
            snapshot = read_snapshot(self.store, [])
            lid = snapshot.lid if snapshot is not None else 0
            report["snapshot"] = {"lid": lid, "behind": self.store.last_lid() - lid}
        report["refusals_kept"] = len(report.pop("refusals", []) or [])
        report["store"] = _store_size(self.datadir)
        report["data_dir"] = str(self.datadir.path)
        return report

    def _chain_heads(self) -> list[tuple[bytes, int]]:
        """(author, seq) of every chain head, from the snapshot and the envelopes after it."""
        snapshot = read_snapshot(self.store)
        heads: dict[tuple[str, int], tuple[bytes, int]] = {}
        lid = 0
        if snapshot is not None:
            lid = snapshot.lid
            for name, snap in snapshot.docs.items():
                for head in snap.chains:
                    heads[(name, head.client)] = (head.author, head.seq)
        for row in self.store.envelopes(lid):
            env = self._decode(row.raw, row.lid)
            heads[(row.doc, row.client)] = (env.author, row.seq)
        return list(heads.values())

    # --- watching -------------------------------------------------------------------------

    def watcher(self, doc: str | None) -> Watcher:
        return Watcher(self, doc)


def _store_size(datadir: DataDir) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        path = datadir.store.with_name(datadir.store.name + suffix)
        try:
            sizes["db" + suffix.replace("-", "_")] = path.stat().st_size
        except OSError:
            continue
    sizes["bytes"] = sum(sizes.values())
    return sizes


def _delete_ranges(ydoc: Doc[Any]) -> dict[int, list[tuple[int, int]]]:
    """The document's delete set, per client, as sorted (start, end) ranges."""
    update = ydoc.get_update(ydoc.get_state())
    ranges: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in decode_update(update).deletes:
        ranges.setdefault(client, []).append((clock, clock + length))
    for value in ranges.values():
        value.sort()
    return ranges


def _is_deleted(ranges: dict[int, list[tuple[int, int]]], client: int, clock: int) -> bool:
    spans = ranges.get(client)
    if not spans:
        return False
    i = bisect_right(spans, (clock, 1 << 62)) - 1
    return i >= 0 and spans[i][0] <= clock < spans[i][1]


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per root: keys added, removed and changed between two contents of one document."""
    result: dict[str, Any] = {"added": {}, "removed": {}, "changed": {}}
    for root in sorted(set(before) | set(after)):
        a, b = before.get(root) or {}, after.get(root) or {}
        added = {k: b[k] for k in sorted(set(b) - set(a))}
        removed = {k: a[k] for k in sorted(set(a) - set(b))}
        changed = {k: {"from": a[k], "to": b[k]} for k in sorted(set(a) & set(b)) if a[k] != b[k]}
        for name, part in (("added", added), ("removed", removed), ("changed", changed)):
            if part:
                result[name][root] = part
    return result


# --- watching ----------------------------------------------------------------------------


class Watcher:
    """New envelopes in a store, as they are committed, with what they changed.

    Starts from the current documents (snapshot + later envelopes) and then applies
    each new envelope to them, recording the map keys it changed (pycrdt's map
    events: added, updated, deleted, with the new values).
    """

    def __init__(self, inspector: Inspector, doc: str | None) -> None:
        self.inspector = inspector
        self.doc = doc
        self.docs, self.lid = inspector.current_docs([doc] if doc else None)
        self._events: list[tuple[str, MapEvent]] = []
        #: The observed roots and their subscriptions (an observer lives as long as both).
        self._observed: list[object] = []
        for name in list(self.docs):
            self._observe(name)

    def _observe(self, name: str) -> None:
        ydoc = self.docs[name]
        for root in ROOTS[kind_of(name)]:
            shared = ydoc.get(root, type=Map)
            subscription = shared.observe(self._recorder(root))
            self._observed += [shared, subscription]

    def _recorder(self, root: str) -> Callable[[MapEvent], None]:
        # One parameter: pycrdt passes the transaction too to a callback that takes two.
        def record(event: MapEvent) -> None:
            self._events.append((root, event))

        return record

    def poll(self) -> list[dict[str, Any]]:
        """Envelopes committed since the last poll (their changes applied)."""
        out = []
        for row in self.inspector.store.envelopes(self.lid):
            self.lid = row.lid
            if self.doc is not None and row.doc != self.doc:
                continue
            env = self.inspector._decode(row.raw, row.lid)
            if row.doc not in self.docs:
                self.docs[row.doc] = new_doc(row.doc, 1)
                self._observe(row.doc)
            self._events.clear()
            self.docs[row.doc].apply_update(env.update)
            changes = []
            for root, event in self._events:
                for key, change in sorted(getattr(event, "keys", {}).items()):
                    changes.append(
                        {
                            "path": f"{root}/{key}",
                            "action": change.get("action"),
                            "value": _plain(change.get("newValue")),
                        }
                    )
            self._events.clear()
            ms = hlc_ms(env.hlc)
            out.append(
                {
                    "lid": row.lid,
                    "doc": row.doc,
                    "author": peer_id_of(env.author),
                    "device": self.inspector.device_name(env.author),
                    "incarnation": env.incarnation.hex(),
                    "seq": env.seq,
                    "time_ms": ms,
                    "time": iso(ms),
                    "size": len(env.raw),
                    "changes": changes,
                }
            )
        return out


def _plain(value: Any) -> Any:
    """A JSON-able copy of a value pycrdt returned (floats that are integers become ints)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return list(value)
    return value


# --- the running node --------------------------------------------------------------------


def running_status(datadir: DataDir) -> dict[str, Any] | None:
    """The running node's ``status`` reply over its control socket; None if none runs.

    (A plain socket client: ``nodes.control`` would import trio, and this must stay light.)
    """
    path = datadir.control_socket
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_CONTROL_TIMEOUT_S)
        try:
            sock.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(b'{"op": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"bad reply from the running node: {exc}") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply


__all__ = [
    "WATCH_POLL_S",
    "Changes",
    "Inspector",
    "ItemIndex",
    "Watcher",
    "check_doc",
    "diff",
    "hlc_ms",
    "iso",
    "now_ms",
    "parse_time",
    "resolve_path",
    "running_status",
]
