"""One node's replica of the document set: local batching and the receive path.

The replica is sans-IO: it takes envelopes, log entries, local transactions
and the current time as arguments, and stages writes in its ``Store``. The
caller decides when to ``commit`` (group commit) and only then sends anything.

Receive checks, all before an update touches a document (docs/PROTOCOL.md §6):
mesh, document, signature (at decode), client-id binding, duplicate/fork,
membership position, capability, cutoff, chain continuity (seq, prev), causal
context, and the update's own content (author's client id only, clocks
continuing the chain, references and deletes inside the causal context).
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import os
import weakref
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent

from crdt_state import lib0
from crdt_state.envelope import (
    GENESIS_PREV,
    INCARNATION_BYTES,
    Envelope,
    client_id_of,
    decode_envelope,
    proof_of,
    seal,
)
from crdt_state.errors import (
    ClientIdClash,
    ClockDiscontinuity,
    CorruptStore,
    CutOff,
    EnvelopeRejected,
    ForeignClient,
    ForkDetected,
    HoldFull,
    MalformedEnvelope,
    NotPermitted,
    OutsideContext,
    StateError,
    UnknownDocument,
    UpdateDecodeError,
)
from crdt_state.schema import kind_of, may_write, new_doc, root_names
from crdt_state.storage.base import Store
from crdt_state.yupdate import decode_update
from mesh.errors import LogGap, MembershipError
from mesh.limits import (
    MAX_BATCH_DELAY_MS,
    MAX_ENVELOPE_UPDATE_BYTES,
    MAX_HELD_BYTES,
    MAX_HELD_ENVELOPES,
    MAX_HLC_DRIFT_MS,
    MAX_TRANSACTION_UPDATE_BYTES,
    MAX_TXNS_PER_ENVELOPE,
)
from mesh.membership.log import Cutoff, LogEntry, decode_entry
from mesh.membership.state import Membership

Slot = tuple[str, int, int]  # (doc, client, seq)
#: How many explanations of undone local batches a replica keeps for status.
MAX_LOCAL_REFUSALS_KEPT = 16


class InvariantViolation(StateError):
    """A document's state no longer matches its accepted envelopes (a bug, never input)."""


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    HELD = "held"


@dataclass
class ChainState:
    """The head of one (document, author incarnation) chain."""

    author: bytes
    incarnation: bytes
    seq: int
    hash: bytes
    clock_end: int


@dataclass
class _Batch:
    state: bytes
    vector: dict[int, int]
    deletes: bytes
    txns: int = 0
    size: int = 0
    opened_ms: int = 0
    last_update: bytes = b""


class _LocalTransaction:
    """Context manager of one local transaction (a class: this is the hot path)."""

    __slots__ = ("_batch", "_name", "_now_ms", "_replica", "_txn", "_ydoc")

    def __init__(
        self, replica: Replica, name: str, ydoc: Doc[Any], batch: _Batch, now_ms: int
    ) -> None:
        self._replica = replica
        self._name = name
        self._ydoc = ydoc
        self._batch = batch
        self._now_ms = now_ms

    def __enter__(self) -> Doc[Any]:
        self._replica._in_local_txn = self._name
        self._txn = self._ydoc.transaction()
        self._txn.__enter__()
        return self._ydoc

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._txn.__exit__(*exc_info)  # type: ignore[arg-type]
        finally:
            self._replica._end_transaction(self._name, self._batch, self._now_ms)


class LocalWriteRefused(StateError):
    """This node may not write that document."""


def _delete_set_bytes(ydoc: Doc[Any]) -> bytes:
    update = ydoc.get_update(ydoc.get_state())
    if not update.startswith(b"\x00"):
        raise InvariantViolation("a diff against the current state holds structs")
    return update[1:]


class Replica:
    """Documents, chains and membership of one node, over one ``Store``."""

    def __init__(
        self,
        *,
        mesh_id: bytes,
        store: Store,
        author: object | None = None,
        incarnation: bytes | None = None,
    ) -> None:
        from mesh.identity import Identity

        if author is not None and not isinstance(author, Identity):
            raise TypeError("author must be an Identity")
        self.mesh_id = mesh_id
        self.store = store
        self.identity: Identity | None = author
        self.incarnation = incarnation or os.urandom(INCARNATION_BYTES)
        self.client_id = (
            client_id_of(author.public_key, self.incarnation) if author is not None else 0
        )
        self.membership = Membership(mesh_id)
        self.docs: dict[str, Doc[Any]] = {}
        self.chains: dict[tuple[str, int], ChainState] = {}
        self.owners: dict[int, tuple[bytes, bytes]] = {}
        self.held: dict[Slot, Envelope] = {}
        self.held_bytes = 0
        self.held_entries: dict[int, LogEntry] = {}
        #: Held slots by the causal-context entry each waits for (see ``_wait``).
        self._waits: dict[tuple[str, int], list[tuple[int, Slot]]] = {}
        self._waiting: dict[Slot, tuple[str, int, int]] = {}
        self.hlc = 0
        self._batches: dict[str, _Batch] = {}
        self._in_local_txn: str | None = None
        self._write_rights: dict[str, tuple[int, bool]] = {}
        self._subscriptions: list[tuple[Doc[Any], Subscription]] = []
        #: Why recent local batches were undone (newest last, bounded).
        self.local_refusals: list[str] = []
        self._accepted: list[Envelope] = []
        self._log_added: list[LogEntry] = []
        if author is not None:
            self.owners[self.client_id] = (author.public_key, self.incarnation)

    def __del__(self) -> None:
        # pycrdt holds each observer (and through it the document) from Rust, where the
        # garbage collector cannot see the cycle: unobserve when the replica goes.
        for ydoc, subscription in getattr(self, "_subscriptions", ()):
            with contextlib.suppress(Exception):
                ydoc.unobserve(subscription)

    # --- opening ---------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild membership, chains and documents from the store (trusted content).

        Documents and chains start from the local snapshot, if a usable one exists, and
        only the envelopes stored after it are replayed.
        """
        for raw in self.store.log_entries():
            try:
                entry = decode_entry(raw)
                self.membership.add(entry)
            except MembershipError as exc:
                raise CorruptStore(f"{self.store.location}: bad membership-log row: {exc}") from exc
        from crdt_state.snapshot import restore  # the local snapshot (docs/ARCHITECTURE.md)

        for row in self.store.envelopes(restore(self)):
            try:
                env = decode_envelope(row.raw, check_signature=False)
            except StateError as exc:
                raise CorruptStore(f"{self.store.location}: envelope row {row.lid}: {exc}") from exc
            if (env.hash, env.doc, env.client_id, env.seq) != (
                row.hash,
                row.doc,
                row.client,
                row.seq,
            ):
                raise CorruptStore(
                    f"{self.store.location}: envelope row {row.lid} does not match its hash"
                )
            self._apply(env, row.clock_end)

    # --- reading ----------------------------------------------------------------------

    def doc(self, name: str) -> Doc[Any]:
        """The pycrdt document ``name`` (created empty on first use)."""
        ydoc = self.docs.get(name)
        if ydoc is None:
            kind_of(name)
            ydoc = self.docs[name] = self._new_doc(name)
        return ydoc

    def _new_doc(self, name: str) -> Doc[Any]:
        ydoc = new_doc(name, self.client_id or 1)
        if self.identity is not None:  # only writers batch local transactions
            # pycrdt keeps the callback alive from Rust, out of the garbage collector's
            # sight: a strong reference to self here would keep the replica forever.
            replica = weakref.ref(self)

            def observed(event: TransactionEvent, name: str = name) -> None:
                this = replica()
                if this is not None and this._in_local_txn == name:
                    batch = this._batches[name]
                    batch.last_update = event.update
                    batch.size += len(batch.last_update)

            self._subscriptions.append((ydoc, ydoc.observe(observed)))
        return ydoc

    def _discard_batch(self, name: str) -> None:
        """Drop the open batch of ``name``: rebuild the document from what is stored."""
        self._batches.pop(name, None)
        ydoc = self._new_doc(name)
        for row in self.store.envelopes():
            if row.doc == name:
                ydoc.apply_update(decode_envelope(row.raw, check_signature=False).update)
        self.docs[name] = ydoc

    def vector(self, doc: str) -> dict[int, int]:
        """Version vector of ``doc``: client id -> highest accepted seq."""
        return {client: chain.seq for (name, client), chain in self.chains.items() if name == doc}

    def vectors(self) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {}
        for (name, client), chain in self.chains.items():
            result.setdefault(name, {})[client] = chain.seq
        return result

    def expected_state(self, doc: str) -> dict[int, int]:
        """The Yjs state vector that the accepted envelopes of ``doc`` imply."""
        state = {
            client: chain.clock_end
            for (name, client), chain in self.chains.items()
            if name == doc and chain.clock_end > 0
        }
        if doc in self._batches:  # local writes not sealed yet are ours, never pending
            own = lib0.decode_state_vector(self.docs[doc].get_state()).get(self.client_id, 0)
            if own:
                state[self.client_id] = own
        return state

    def take_accepted(self) -> list[Envelope]:
        """Envelopes accepted (or sealed locally) since the last call, in order."""
        accepted, self._accepted = self._accepted, []
        return accepted

    def take_log_added(self) -> list[LogEntry]:
        added, self._log_added = self._log_added, []
        return added

    def cutoffs(self, author: bytes, incarnation: bytes | None = None) -> tuple[Cutoff, ...]:
        """Current chain heads of ``author`` (one incarnation, or all) as cutoffs."""
        return tuple(
            Cutoff(doc, chain.incarnation, chain.seq, chain.hash)
            for (doc, _client), chain in sorted(self.chains.items())
            if chain.author == author and incarnation in (None, chain.incarnation)
        )

    # --- time ---------------------------------------------------------------------------

    def _tick_hlc(self, now_ms: int) -> int:
        self.hlc = max(self.hlc + 1, now_ms << 16)
        return self.hlc

    def _observe_hlc(self, remote: int, now_ms: int) -> None:
        self.hlc = max(self.hlc, min(remote, (now_ms + MAX_HLC_DRIFT_MS) << 16))

    # --- local writes -------------------------------------------------------------------

    def _may_write_locally(self, name: str) -> bool:
        cached = self._write_rights.get(name)
        if cached is not None and cached[0] == self.membership.length:
            return cached[1]
        assert self.identity is not None
        caps = self.membership.caps(self.identity.public_key)
        allowed = may_write(name, self.identity.public_key, caps)
        self._write_rights[name] = (self.membership.length, allowed)
        return allowed

    def transact(self, name: str, now_ms: int) -> _LocalTransaction:
        """A local transaction on ``name``; it joins the document's open batch."""
        if self.identity is None:
            raise LocalWriteRefused("this replica has no author key")
        if not self._may_write_locally(name):
            raise LocalWriteRefused(f"this node may not write {name!r}")
        ydoc = self.doc(name)
        batch = self._batches.get(name)
        if batch is None:
            state = ydoc.get_state()
            batch = self._batches[name] = _Batch(
                state, lib0.decode_state_vector(state), _delete_set_bytes(ydoc), opened_ms=now_ms
            )
        return _LocalTransaction(self, name, ydoc, batch, now_ms)

    def _end_transaction(self, name: str, batch: _Batch, now_ms: int) -> None:
        self._in_local_txn = None
        batch.txns += 1
        size, batch.last_update = len(batch.last_update), b""
        if size > MAX_TRANSACTION_UPDATE_BYTES:
            self._refuse_local(
                name, f"a transaction of {size} bytes exceeds {MAX_TRANSACTION_UPDATE_BYTES}"
            )
        if batch.txns >= MAX_TXNS_PER_ENVELOPE or batch.size >= MAX_ENVELOPE_UPDATE_BYTES:
            self.seal(name, now_ms)

    def _refuse_local(self, name: str, problem: str) -> None:
        """Undo the open batch of ``name`` (no peer would accept it) and say why."""
        # An envelope cannot be split or partly refused: the whole unsealed batch goes.
        self._discard_batch(name)
        message = f"{name}: {problem}; the unsealed writes of this batch were undone"
        self.local_refusals.append(message)
        del self.local_refusals[:-MAX_LOCAL_REFUSALS_KEPT]
        raise LocalWriteRefused(message)

    def seal_due(self, now_ms: int) -> None:
        """Seal every batch that has been open for MAX_BATCH_DELAY_MS."""
        for name in [
            n for n, b in self._batches.items() if now_ms - b.opened_ms >= MAX_BATCH_DELAY_MS
        ]:
            with contextlib.suppress(LocalWriteRefused):  # kept in local_refusals
                self.seal(name, now_ms)

    def seal_all(self, now_ms: int) -> None:
        for name in list(self._batches):
            with contextlib.suppress(LocalWriteRefused):  # kept in local_refusals
                self.seal(name, now_ms)

    def next_seal_ms(self) -> int | None:
        """When the oldest open batch must be sealed, if any is open."""
        if not self._batches:
            return None
        return min(b.opened_ms for b in self._batches.values()) + MAX_BATCH_DELAY_MS

    def seal(self, name: str, now_ms: int) -> Envelope | None:
        """Turn the open batch of ``name`` into a signed, staged envelope."""
        batch = self._batches.pop(name, None)
        if batch is None:
            return None
        assert self.identity is not None
        ydoc = self.docs[name]
        full = ydoc.get_update(batch.state)
        deletes_now = _delete_set_bytes(ydoc)
        if full.endswith(deletes_now):
            structs = full[: len(full) - len(deletes_now)]
        else:  # pragma: no cover - pycrdt encodes one delete set identically twice
            decoded = decode_update(full)
            structs = full[: len(full) - len(deletes_now)] if decoded else full
        if deletes_now == batch.deletes:
            own_deletes = b"\x00"
        else:
            before = decode_update(b"\x00" + batch.deletes).deletes
            after = decode_update(b"\x00" + deletes_now).deletes
            own_deletes = lib0.encode_delete_set(
                lib0.subtract_delete_sets(list(after), list(before))
            )
        if structs == b"\x00" and own_deletes == b"\x00":
            return None
        update = structs + own_deletes
        try:  # what no peer would accept is never signed: it would wedge this chain
            decode_update(update, roots=root_names(name))
        except UpdateDecodeError as exc:
            self._batches[name] = batch
            self._refuse_local(name, f"a write is outside the document schema ({exc})")
        chain = self.chains.get((name, self.client_id))
        env = seal(
            self.identity,
            mesh_id=self.mesh_id,
            doc=name,
            incarnation=self.incarnation,
            seq=chain.seq + 1 if chain else 1,
            hlc=self._tick_hlc(now_ms),
            mship=self.membership.length,
            context=tuple(sorted((c, k) for c, k in batch.vector.items() if k > 0)),
            prev=chain.hash if chain else GENESIS_PREV,
            update=update,
        )
        clock_end = lib0.decode_state_vector(ydoc.get_state()).get(self.client_id, 0)
        self._record(env, clock_end)
        self._accepted.append(env)
        return env

    # --- membership log ------------------------------------------------------------------

    def add_log_entry(self, entry: LogEntry) -> bool:
        """Fold and stage a log entry; entries after a gap are held (bounded)."""
        try:
            added = self.membership.add(entry)
        except LogGap:
            if len(self.held_entries) >= MAX_HELD_ENVELOPES:
                raise HoldFull("too many early membership-log entries") from None
            self.held_entries[entry.index] = entry
            return False
        if added:
            self.store.add_log_entry(entry.index, entry.hash, entry.raw)
            self._log_added.append(entry)
            while self.membership.length in self.held_entries:
                following = self.held_entries.pop(self.membership.length)
                self.membership.add(following)
                self.store.add_log_entry(following.index, following.hash, following.raw)
                self._log_added.append(following)
            self._release_held(0)
        return added

    # --- receiving -----------------------------------------------------------------------

    def receive(self, env: Envelope, now_ms: int) -> Outcome:
        """Check and apply (or hold) a remote envelope. Raises EnvelopeRejected subclasses."""
        twin = self.held.get((env.doc, env.client_id, env.seq))
        if (
            twin is not None
            and twin.hash != env.hash
            and (twin.mesh_id, twin.author, twin.incarnation)
            == (env.mesh_id, env.author, env.incarnation)
        ):
            # A fork even while one of the two waits in the hold (else, once the other is
            # accepted, the held one would be dropped silently, proof and all).
            raise ForkDetected(
                f"{env.doc}: two envelopes at seq {env.seq}", proof_of(twin), proof_of(env)
            )
        outcome = self._receive(env, now_ms)
        if outcome is Outcome.HELD:
            self._hold(env)
        elif outcome is Outcome.ACCEPTED:
            self._release_held(now_ms, env)
        return outcome

    def _hold(self, env: Envelope) -> None:
        slot = (env.doc, env.client_id, env.seq)
        if slot in self.held:
            return
        if len(self.held) >= MAX_HELD_ENVELOPES or self.held_bytes + len(env.raw) > MAX_HELD_BYTES:
            raise HoldFull("no room to hold another early envelope")
        self.held[slot] = env
        self.held_bytes += len(env.raw)
        self._wait(env)

    def _wait(self, env: Envelope) -> None:
        """Index a held envelope under the first causal-context entry it still lacks.

        One that waits for its chain predecessor is found by slot when that is accepted;
        one that waits for membership, by the pass over the hold after each log entry.
        """
        slot = (env.doc, env.client_id, env.seq)
        state = lib0.decode_state_vector(self.doc(env.doc).get_state())
        for client, clock in env.context:
            if state.get(client, 0) < clock:
                if self._waiting.get(slot) != (env.doc, client, clock):  # else still queued
                    self._waiting[slot] = (env.doc, client, clock)
                    heapq.heappush(self._waits.setdefault((env.doc, client), []), (clock, slot))
                return
        self._waiting.pop(slot, None)

    def _unblocked_by(self, env: Envelope) -> list[Slot]:
        """Held slots that the acceptance of ``env`` may let in."""
        woken: list[Slot] = []
        successor = (env.doc, env.client_id, env.seq + 1)
        if successor in self.held:
            woken.append(successor)
        heap = self._waits.get(env.chain)
        clock_end = self.chains[env.chain].clock_end
        while heap and heap[0][0] <= clock_end:
            clock, slot = heapq.heappop(heap)
            if self._waiting.get(slot) == (env.doc, env.client_id, clock):
                del self._waiting[slot]
                woken.append(slot)
        return woken

    def _release_held(self, now_ms: int, accepted: Envelope | None = None) -> None:
        """Apply what waited in the hold and may go in now.

        After an accepted envelope, only what it may unblock is checked again (its chain
        successor; envelopes whose context waited for its clocks); after a membership-log
        entry, the whole hold once. A chain of n dependencies costs O(n) checks, not a
        rescan of the hold per step (which let one member stall a node for hours).
        """
        work = list(self.held) if accepted is None else self._unblocked_by(accepted)
        while work:
            slot = work.pop()
            env = self.held.get(slot)
            if env is None:
                continue
            try:
                outcome = self._receive(env, now_ms)
            except EnvelopeRejected:
                outcome = Outcome.DUPLICATE  # refused for good: drop from the hold
            if outcome is Outcome.HELD:
                self._wait(env)
                continue
            del self.held[slot]
            self._waiting.pop(slot, None)
            self.held_bytes -= len(env.raw)
            if outcome is Outcome.ACCEPTED:
                work.extend(self._unblocked_by(env))
        if not self.held:
            self._waits.clear()

    def _receive(self, env: Envelope, now_ms: int) -> Outcome:
        if env.mesh_id != self.mesh_id:
            raise MalformedEnvelope("envelope belongs to another mesh")
        try:
            kind_of(env.doc)
        except UnknownDocument as exc:
            raise NotPermitted(str(exc)) from exc
        client = env.client_id
        owner = self.owners.get(client)
        if owner is not None and owner != (env.author, env.incarnation):
            raise ClientIdClash(f"client id {client} is bound to another author incarnation")
        chain = self.chains.get((env.doc, client))
        if chain is not None and env.seq <= chain.seq:
            stored = self.store.get_envelope(env.doc, client, env.seq)
            if stored is not None and stored.hash == env.hash:
                return Outcome.DUPLICATE
            if stored is None:  # pragma: no cover - every seq up to the head is stored
                raise InvariantViolation(f"{env.doc}: seq {env.seq} missing from the store")
            existing = decode_envelope(stored.raw, check_signature=False)
            raise ForkDetected(
                f"{env.doc}: two envelopes at seq {env.seq}", proof_of(existing), proof_of(env)
            )
        limit = self.membership.chain_limit(env.author, env.incarnation, env.doc)
        if limit is not None and env.seq > limit:
            raise CutOff(f"{env.doc}: author's chain is cut off at seq {limit}")
        if env.mship > self.membership.length:
            return Outcome.HELD
        caps = self.membership.caps_at(env.author, env.mship)
        if not may_write(env.doc, env.author, caps):
            raise NotPermitted(f"author may not write {env.doc!r}")
        if env.seq != (chain.seq + 1 if chain else 1):
            return Outcome.HELD
        expected_prev = chain.hash if chain else GENESIS_PREV
        if env.prev != expected_prev:
            raise ClockDiscontinuity(f"{env.doc} seq {env.seq}: prev does not match the chain")
        ydoc = self.doc(env.doc)
        state = lib0.decode_state_vector(ydoc.get_state())
        context = dict(env.context)
        clock_start = chain.clock_end if chain else 0
        if context.get(client, 0) != clock_start:
            # Checkable now: never hold an envelope whose own clock no chain can reach.
            raise ClockDiscontinuity("causal context disagrees with the chain's clock")
        if any(state.get(c, 0) < k for c, k in env.context):
            return Outcome.HELD
        clock_end = self._check_content(env, context, clock_start)
        if env.doc in self._batches:
            # Seal local writes first: a batch's update is a diff of the whole document.
            self.seal(env.doc, now_ms)
        self._observe_hlc(env.hlc, now_ms)
        self._apply_checked(env, ydoc, clock_end)
        self._record(env, clock_end)  # only what the document took is ever stored
        self._accepted.append(env)
        return Outcome.ACCEPTED

    def _check_content(self, env: Envelope, context: dict[int, int], clock_start: int) -> int:
        client = env.client_id
        if context.get(client, 0) != clock_start:
            raise ClockDiscontinuity("causal context disagrees with the chain's clock")
        try:
            decoded = decode_update(env.update, roots=root_names(env.doc))
        except UpdateDecodeError as exc:
            raise MalformedEnvelope(f"update: {exc}") from exc
        clock_end = clock_start
        for group in decoded.groups:
            if group.client != client:
                raise ForeignClient(f"update inserts items as client {group.client}")
            if group.has_skip or group.clock != clock_start:
                raise ClockDiscontinuity(
                    f"update starts at clock {group.clock}, chain ends at {clock_start}"
                )
            clock_end = clock_start + group.length
        for ref_client, end in decoded.ref_ends.items():
            limit = clock_start if ref_client == client else context.get(ref_client, 0)
            if end > limit:
                raise OutsideContext(f"update references client {ref_client} beyond its context")
        for del_client, clock, length in decoded.deletes:
            limit = clock_end if del_client == client else context.get(del_client, 0)
            if clock + length > limit:
                raise OutsideContext(f"update deletes client {del_client} beyond its context")
        return clock_end

    def _apply_checked(self, env: Envelope, ydoc: Doc[Any], clock_end: int) -> None:
        try:
            ydoc.apply_update(env.update)
        except BaseException as exc:  # pycrdt panics are BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise InvariantViolation(f"pycrdt refused a checked update: {exc!r}") from exc
        state = lib0.decode_state_vector(ydoc.get_state())
        if state.get(env.client_id, 0) != clock_end:
            raise InvariantViolation(f"{env.doc}: update left items pending after our checks")

    def _record(self, env: Envelope, clock_end: int) -> None:
        self.store.add_envelope(env.doc, env.client_id, env.seq, env.hash, clock_end, env.raw)
        self.chains[(env.doc, env.client_id)] = ChainState(
            env.author, env.incarnation, env.seq, env.hash, clock_end
        )
        self.owners[env.client_id] = (env.author, env.incarnation)

    def _apply(self, env: Envelope, clock_end: int) -> None:
        """Apply a stored (already checked) envelope while loading."""
        ydoc = self.doc(env.doc)
        ydoc.apply_update(env.update)
        self.chains[(env.doc, env.client_id)] = ChainState(
            env.author, env.incarnation, env.seq, env.hash, clock_end
        )
        self.owners[env.client_id] = (env.author, env.incarnation)
        self.hlc = max(self.hlc, env.hlc)
