"""The peer engine: the sync protocol over many sessions, sans-IO.

Inputs: ``connect``, ``disconnect``, ``receive`` (one frame), ``tick`` and
local transactions (``transact``), each with the current time in ms. Outputs,
returned by ``flush``: frames to send, sessions to close, and events. ``flush``
commits the store *before* it releases any output, so nothing is acknowledged
or sent that is not durable. The engine never awaits, sleeps or reads a clock;
the trio/libp2p driver and the simulator drive the same code.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from crdt_state.envelope import Envelope, decode_envelope, decode_proof, is_fork
from crdt_state.errors import (
    EnvelopeRejected,
    ForkDetected,
    HoldFull,
    NotPermitted,
    StateError,
)
from crdt_state.replica import Outcome, Replica
from mesh.errors import MembershipError, NotAMember, ProtocolError, VersionMismatch
from mesh.identity import Identity
from mesh.limits import (
    ACK_TIMEOUT_MS,
    HELLO_TIMEOUT_MS,
    MAX_BATCH_BYTES,
    MAX_ENVELOPES_PER_BATCH,
    MAX_ERROR_CODE_BYTES,
    MAX_ERROR_MESSAGE_BYTES,
    MAX_RECORDS_PER_FRAME,
    MAX_REFUSALS_PER_SESSION,
    MAX_UNACKED_BATCHES,
)
from mesh.membership.log import (
    ACTION_ADMIT,
    ACTION_QUARANTINE,
    ACTION_REVOKE,
    LogEntry,
    decode_entry,
    sign_entry,
)
from mesh.membership.records import Certificate, Revocation
from mesh.sync import frames
from mesh.sync.frames import Vectors

RUNTIME_ROLE = "runtime"
DEVICE_ROLE = "device"


# --- outputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` (one frame) to ``peer``."""

    peer: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the session with ``peer``; ``code`` says why."""

    peer: bytes
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """An envelope was accepted (``via`` is None for a local one)."""

    doc: str
    author: bytes
    client: int
    seq: int
    via: bytes | None


@dataclass(frozen=True, slots=True)
class Refused:
    """An envelope from ``peer`` was refused for good."""

    peer: bytes
    doc: str
    client: int
    seq: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    length: int


@dataclass(frozen=True, slots=True)
class Quarantined:
    author: bytes
    incarnation: bytes


Output = Send | Close | Accepted | Refused | MembershipChanged | Quarantined


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """How far this node and one peer are apart, from version vectors."""

    peer: bytes
    ready: bool
    we_lack: int
    they_lack: int
    unacked_batches: int

    @property
    def synced(self) -> bool:
        return self.ready and self.we_lack == 0 and self.they_lack == 0


def _merge(into: Vectors, doc: str, client: int, seq: int) -> None:
    vector = into.setdefault(doc, {})
    if vector.get(client, 0) < seq:
        vector[client] = seq


@dataclass
class _Session:
    peer: bytes
    hello_sent: bool = False
    ready: bool = False
    #: What the peer has or has been sent (decides what to send next).
    known: Vectors = field(default_factory=dict)
    #: What the peer has durably (its hello, plus acknowledgements).
    durable: Vectors = field(default_factory=dict)
    #: What the peer says it has (its hello, plus what it sent us).
    claims: Vectors = field(default_factory=dict)
    log_known: int = 0
    cursor: int = 0
    next_batch: int = 1
    #: batch number -> time it was sent (ms)
    unacked: dict[int, int] = field(default_factory=dict)
    opened_ms: int = 0
    acks: list[frames.Ack] = field(default_factory=list)
    refusals: int = 0
    closing: bool = False


class Engine:
    """Sessions with many peers over one replica."""

    def __init__(
        self,
        replica: Replica,
        identity: Identity,
        role: str,
        *,
        pinned_runtime: bytes | None = None,
    ) -> None:
        """``pinned_runtime``: on a device, the runtime key to trust before any membership."""
        if role not in (RUNTIME_ROLE, DEVICE_ROLE):
            raise ValueError(f"unknown role {role!r}")
        self.pinned_runtime = pinned_runtime
        self.replica = replica
        self.identity = identity
        self.role = role
        self.sessions: dict[bytes, _Session] = {}
        self._outputs: list[Output] = []
        self._sealed_seen = 0

    # --- inputs -----------------------------------------------------------------------

    def admissible(self, peer: bytes, now_ms: int) -> bool:
        """Whether a session with ``peer`` may open (checked before any frame is read)."""
        membership = self.replica.membership
        if self.is_revoked():
            return False
        if self.role == RUNTIME_ROLE:
            return peer != self.identity.public_key and membership.is_member(peer, now_ms)
        if membership.length == 0:
            return peer == self.pinned_runtime
        if self.pinned_runtime is not None and membership.runtime_key != self.pinned_runtime:
            return False
        return peer == membership.runtime_key and membership.is_member(peer)

    def is_revoked(self) -> bool:
        member = self.replica.membership.member(self.identity.public_key)
        return member is not None and member.revoked_at is not None

    def connect(self, peer: bytes, now_ms: int) -> bool:
        """A transport authenticated ``peer``; returns False (and closes) for a stranger."""
        if not self.admissible(peer, now_ms):
            self._outputs.append(Close(peer, "not-a-member", "peer is not a current member"))
            return False
        self.sessions[peer] = _Session(peer, opened_ms=now_ms)
        return True

    def disconnect(self, peer: bytes) -> None:
        self.sessions.pop(peer, None)

    def receive(self, peer: bytes, data: bytes, now_ms: int) -> None:
        """One frame from ``peer``. Protocol errors close that session only."""
        session = self.sessions.get(peer)
        if session is None or session.closing:
            return
        try:
            frame = frames.decode(data)
            if not session.ready and not isinstance(frame, frames.Hello | frames.Error):
                raise ProtocolError("first frame must be a hello")
            if isinstance(frame, frames.Hello):
                self._on_hello(session, frame)
            elif isinstance(frame, frames.Records):
                self._on_records(session, frame, now_ms)
            elif isinstance(frame, frames.Envelopes):
                self._on_envelopes(session, frame, now_ms)
            elif isinstance(frame, frames.Ack):
                self._on_ack(session, frame)
            elif isinstance(frame, frames.Fork):
                self._on_fork(frame.existing, frame.incoming, now_ms)
            else:
                self._close(session, "peer-error", f"{frame.code}: {frame.message}", notify=False)
        except (ProtocolError, MembershipError) as exc:
            self._close(session, type(exc).__name__, str(exc))

    def transact(self, doc: str, now_ms: int) -> AbstractContextManager[Doc[Any]]:
        """A local transaction on ``doc`` (it joins the document's open batch)."""
        return self.replica.transact(doc, now_ms)

    def tick(self, now_ms: int) -> None:
        """Time passes: seal batches whose delay is up; close sessions that stopped moving."""
        self.replica.seal_due(now_ms)
        for session in list(self.sessions.values()):
            deadline = self._session_deadline(session)
            if deadline is not None and now_ms >= deadline:
                what = "acknowledgement" if session.ready else "hello"
                self._close(session, "timeout", f"no {what} from peer in time")

    def _session_deadline(self, session: _Session) -> int | None:
        if not session.ready:
            return session.opened_ms + HELLO_TIMEOUT_MS
        if session.unacked:
            return min(session.unacked.values()) + ACK_TIMEOUT_MS
        return None

    def next_deadline(self) -> int | None:
        """The earliest time at which ``tick`` has work to do."""
        deadlines = [self.replica.next_seal_ms()]
        deadlines += [self._session_deadline(s) for s in self.sessions.values()]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    # --- runtime: sequencing membership -----------------------------------------------------

    def _commit_entry(self, action: int, now_ms: int, **kwargs: object) -> LogEntry:
        if self.role != RUNTIME_ROLE:
            raise NotAMember("only the runtime commits membership entries")
        membership = self.replica.membership
        entry = sign_entry(
            self.identity,
            mesh_id=self.replica.mesh_id,
            index=membership.length,
            prev=membership.head,
            committed_ms=max(
                now_ms, membership.entries[-1].committed_ms if membership.entries else 0
            ),
            action=action,
            **kwargs,  # type: ignore[arg-type]
        )
        self.replica.add_log_entry(entry)
        self._after_membership_change(now_ms)
        return entry

    def admit(self, cert: Certificate, now_ms: int) -> LogEntry:
        """Runtime: commit a certificate to the membership log."""
        return self._commit_entry(ACTION_ADMIT, now_ms, record=cert.raw)

    def revoke(self, revocation: Revocation, now_ms: int) -> LogEntry:
        """Runtime: commit a revocation with cutoffs at the chains accepted so far."""
        self.replica.seal_all(now_ms)
        cutoffs = self.replica.cutoffs(revocation.subject)
        return self._commit_entry(ACTION_REVOKE, now_ms, record=revocation.raw, cutoffs=cutoffs)

    def _on_fork(self, existing: bytes, incoming: bytes, now_ms: int) -> None:
        try:
            a, b = decode_proof(existing), decode_proof(incoming)
        except StateError as exc:
            raise ProtocolError(f"bad fork proof: {exc}") from exc
        if not is_fork(a, b) or a.mesh_id != self.replica.mesh_id:
            raise ProtocolError("fork proof does not show two envelopes for one slot")
        key = (a.author, a.incarnation)
        if key in self.replica.membership.quarantined:
            return
        if not self.replica.membership.is_member(a.author):
            # Envelopes of strangers and revoked keys are refused anyway; logging their
            # forks would let any peer grow the (permanent) membership log at will.
            return
        if self.role == RUNTIME_ROLE:
            cutoffs = self.replica.cutoffs(a.author, a.incarnation)
            self._commit_entry(
                ACTION_QUARANTINE,
                now_ms,
                quarantine=(a.author, a.incarnation, existing, incoming),
                cutoffs=cutoffs,
            )
            self._outputs.append(Quarantined(a.author, a.incarnation))
        else:
            for session in self.sessions.values():
                if session.ready:
                    self._send(session, frames.Fork(existing, incoming))

    # --- frame handlers --------------------------------------------------------------------

    def _on_hello(self, session: _Session, hello: frames.Hello) -> None:
        if session.ready:
            raise ProtocolError("second hello")
        if hello.version != frames.PROTOCOL_VERSION:
            raise VersionMismatch(f"peer speaks protocol {hello.version}")
        if hello.mesh_id != self.replica.mesh_id:
            raise VersionMismatch("peer belongs to another mesh")
        session.ready = True
        session.durable = {doc: dict(v) for doc, v in hello.vectors.items()}
        session.known = {doc: dict(v) for doc, v in hello.vectors.items()}
        session.claims = {doc: dict(v) for doc, v in hello.vectors.items()}
        membership = self.replica.membership
        agrees = (
            hello.log_length <= membership.length
            and hello.log_length > 0
            and membership.entries[hello.log_length - 1].hash == hello.log_head
        )
        session.log_known = hello.log_length if agrees else 0
        session.cursor = self._first_missing_lid(session.known)

    def _first_missing_lid(self, known: Vectors) -> int:
        store = self.replica.store
        first: int | None = None
        for (doc, client), chain in self.replica.chains.items():
            have = known.get(doc, {}).get(client, 0)
            if have < chain.seq:
                lid = store.first_lid(doc, client, have + 1)
                if lid is not None and (first is None or lid < first):
                    first = lid
        return 0 if first is None else first - 1

    def _on_records(self, session: _Session, records: frames.Records, now_ms: int) -> None:
        changed = False
        for raw in records.entries:
            entry = decode_entry(raw)
            if entry.index < self.replica.membership.length:
                if self.replica.membership.entries[entry.index].hash != entry.hash:
                    raise ProtocolError("peer's membership log forks from ours")
                continue
            if self.role == RUNTIME_ROLE:
                raise ProtocolError("only the runtime extends the membership log")
            try:
                changed = self.replica.add_log_entry(entry) or changed
            except HoldFull as exc:
                raise ProtocolError(str(exc)) from exc
            session.log_known = max(session.log_known, entry.index + 1)
        if changed:
            self._after_membership_change(now_ms)

    def _after_membership_change(self, now_ms: int) -> None:
        self._outputs.append(MembershipChanged(self.replica.membership.length))
        self._collect_accepted(None)
        for session in list(self.sessions.values()):
            if not self.admissible(session.peer, now_ms):
                if session.ready and self.role == RUNTIME_ROLE:
                    # Tell a revoked device why before closing: it stops and says so.
                    self._send_records(session)
                self._close(session, "not-a-member", "membership no longer admits this session")

    def _on_envelopes(self, session: _Session, batch: frames.Envelopes, now_ms: int) -> None:
        membership = self.replica.membership
        refused: list[frames.Refusal] = []
        touched: set[tuple[str, int]] = set()
        for raw in batch.envelopes:
            env: Envelope | None = None
            try:
                env = decode_envelope(raw)
                _merge(session.known, env.doc, env.client_id, env.seq)
                _merge(session.claims, env.doc, env.client_id, env.seq)
                _merge(session.durable, env.doc, env.client_id, env.seq)
                if self.role == RUNTIME_ROLE:
                    if env.mship > membership.length:
                        # The runtime writes the log: a position beyond it is never honest.
                        raise NotPermitted("envelope names a membership position not yet made")
                    member = membership.member(env.author)
                    live = member is not None and member.revoked_at is None
                    if live and member is not None and now_ms >= member.cert.expires_ms:
                        raise NotPermitted("author's certificate has expired")
                outcome = self.replica.receive(env, now_ms)
                if outcome is not Outcome.HELD:
                    touched.add(env.chain)
            except ForkDetected as exc:
                self._on_fork(exc.existing, exc.incoming, now_ms)
                refused.append(self._refusal(session, env, exc))
            except (EnvelopeRejected, HoldFull) as exc:
                refused.append(self._refusal(session, env, exc))
        for accepted in self._collect_accepted(session.peer):
            touched.add(accepted.chain)
        heads: Vectors = {}
        for doc, client in touched:
            chain = self.replica.chains.get((doc, client))
            if chain is not None:
                heads.setdefault(doc, {})[client] = chain.seq
        session.acks.append(frames.Ack(batch.batch_no, heads, tuple(refused)))
        session.refusals += len(refused)
        if session.refusals > MAX_REFUSALS_PER_SESSION:
            # Membership first: a peer unaware of a cutoff learns it and stops resending.
            self._send_records(session)
            self._close(session, "too-many-refusals", "peer sent too many invalid envelopes")

    def _refusal(self, session: _Session, env: Envelope | None, exc: StateError) -> frames.Refusal:
        doc, client, seq = (env.doc, env.client_id, env.seq) if env else ("", 0, 0)
        code = type(exc).__name__
        self._outputs.append(Refused(session.peer, doc, client, seq, code, str(exc)))
        return frames.Refusal(doc, client, seq, code)

    def _collect_accepted(self, via: bytes | None) -> list[Envelope]:
        accepted = self.replica.take_accepted()
        for env in accepted:
            self._outputs.append(Accepted(env.doc, env.author, env.client_id, env.seq, via))
        return accepted

    def _on_ack(self, session: _Session, ack: frames.Ack) -> None:
        if session.unacked.pop(ack.batch_no, None) is None:
            raise ProtocolError(f"ack for unknown batch {ack.batch_no}")
        for doc, vector in ack.heads.items():
            for client, seq in vector.items():
                _merge(session.durable, doc, client, seq)

    # --- outputs ------------------------------------------------------------------------------

    def _send(self, session: _Session, frame: frames.Frame) -> None:
        self._outputs.append(Send(session.peer, frames.encode(frame)))

    def _close(self, session: _Session, code: str, message: str, *, notify: bool = True) -> None:
        if session.closing:
            return
        session.closing = True
        if notify:
            text = message.encode()[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore")
            self._send(session, frames.Error(code[:MAX_ERROR_CODE_BYTES], text))
        self._outputs.append(Close(session.peer, code, message))
        self.sessions.pop(session.peer, None)

    def flush(self, now_ms: int) -> list[Output]:
        """Commit staged writes, then release every output produced so far."""
        self._collect_accepted(None)
        self.replica.store.commit()
        for session in list(self.sessions.values()):
            if not session.hello_sent:
                session.hello_sent = True
                membership = self.replica.membership
                self._send(
                    session,
                    frames.Hello(
                        frames.PROTOCOL_VERSION,
                        self.replica.mesh_id,
                        membership.length,
                        membership.head,
                        self.replica.vectors(),
                    ),
                )
            for ack in session.acks:
                self._send(session, ack)
            session.acks.clear()
            if session.ready:
                self._pump(session, now_ms)
        outputs, self._outputs = self._outputs, []
        return outputs

    def _pump(self, session: _Session, now_ms: int) -> None:
        self._send_records(session)
        self._send_envelopes(session, now_ms)

    def _send_records(self, session: _Session) -> None:
        """Membership entries the peer lacks, always before any envelope."""
        membership = self.replica.membership
        while session.log_known < membership.length:
            # Bounded in bytes too: a quarantine entry (two fork proofs with their causal
            # contexts) can be ~0.6 MB, and a frame over MAX_FRAME_BYTES would not encode.
            chunk: list[bytes] = []
            size = 0
            end = session.log_known + MAX_RECORDS_PER_FRAME
            for entry in membership.entries[session.log_known : end]:
                if chunk and size + len(entry.raw) > MAX_BATCH_BYTES:
                    break
                chunk.append(entry.raw)
                size += len(entry.raw)
            self._send(session, frames.Records(tuple(chunk)))
            session.log_known += len(chunk)

    def _cut_off(self, doc: str, client: int, seq: int) -> bool:
        """Whether membership cuts this stored envelope off (never send it: it is refused)."""
        chain = self.replica.chains.get((doc, client))
        if chain is None:
            return False
        limit = self.replica.membership.chain_limit(chain.author, chain.incarnation, doc)
        return limit is not None and seq > limit

    def _send_envelopes(self, session: _Session, now_ms: int) -> None:
        store = self.replica.store
        while len(session.unacked) < MAX_UNACKED_BATCHES:
            batch: list[bytes] = []
            size = 0
            full = False
            for row in store.envelopes(session.cursor, MAX_ENVELOPES_PER_BATCH):
                vector = session.known.get(row.doc)
                if (vector is not None and vector.get(row.client, 0) >= row.seq) or self._cut_off(
                    row.doc, row.client, row.seq
                ):
                    session.cursor = row.lid
                    continue
                if batch and size + len(row.raw) > MAX_BATCH_BYTES:
                    full = True
                    break
                batch.append(row.raw)
                size += len(row.raw)
                session.cursor = row.lid
                _merge(session.known, row.doc, row.client, row.seq)
                if len(batch) >= MAX_ENVELOPES_PER_BATCH:
                    full = True
                    break
            if batch:
                number = session.next_batch
                session.next_batch += 1
                session.unacked[number] = now_ms
                self._send(session, frames.Envelopes(number, tuple(batch)))
            elif not full and not self._more_rows(session):
                return

    def _more_rows(self, session: _Session) -> bool:
        return any(True for _ in self.replica.store.envelopes(session.cursor, 1))

    # --- status ----------------------------------------------------------------------------------

    def acknowledged_own(self, peer: bytes) -> int:
        """How many of this node's own envelopes ``peer`` has acknowledged as durable."""
        session = self.sessions.get(peer)
        if session is None:
            return 0
        me = self.identity.public_key
        return sum(
            min(chain.seq, session.durable.get(doc, {}).get(client, 0))
            for (doc, client), chain in self.replica.chains.items()
            if chain.author == me
        )

    def status(self, peer: bytes) -> PeerStatus:
        """Envelopes each side lacks, as of the last exchange with ``peer``."""
        session = self.sessions.get(peer)
        if session is None:
            return PeerStatus(peer, False, 0, 0, 0)
        ours = self.replica.vectors()
        we_lack = sum(
            max(0, seq - ours.get(doc, {}).get(client, 0))
            for doc, vector in session.claims.items()
            for client, seq in vector.items()
        )
        they_lack = sum(
            max(0, seq - session.durable.get(doc, {}).get(client, 0))
            for doc, vector in ours.items()
            for client, seq in vector.items()
        )
        return PeerStatus(peer, session.ready, we_lack, they_lack, len(session.unacked))
