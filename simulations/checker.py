"""Invariants, evaluated during a run (after every flush, crash and restart) and after it.

During: the membership log never forks; no node accepts a forbidden crafted
envelope, a change beyond its author's revocation or quarantine cutoff, or a
change its author never had the capability to make; nothing a node released
(sent or acknowledged) is lost across a crash; nothing is pending in any
document. After the heal and quiet: every honest node has identical documents,
version vectors, envelopes and membership log. The reference membership is
folded here from the log entries the nodes show, with the production
``Membership`` class but independently of every node's own fold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from crdt_state import lib0
from crdt_state.envelope import Envelope
from crdt_state.schema import may_write
from crdt_state.views import docs_to_py
from mesh.engine import Accepted, Output, Send
from mesh.errors import MembershipError
from mesh.membership.state import Membership
from mesh.sync import frames
from simulations.hostile import EVIL_PREFIX
from simulations.node import SimNode

Slot = tuple[str, int, int]
#: Most violations kept per run (a broken run can produce thousands).
MAX_VIOLATIONS = 50


@dataclass(frozen=True)
class Violation:
    """One broken invariant: when, which, where, and what was seen."""

    time_ms: int
    invariant: str
    node: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.time_ms}ms {self.invariant} at {self.node}: {self.detail}"


def snapshot(node: SimNode) -> dict[str, Any]:
    """Plain-Python content of every document that has at least one envelope."""
    replica = node.replica
    return {
        name: content for name, content in docs_to_py(replica.docs).items() if replica.vector(name)
    }


def envelope_digest(node: SimNode) -> bytes:
    """A hash over every stored envelope's slot and hash, in slot order."""
    rows = sorted((r.doc, r.client, r.seq, r.hash) for r in node.store.envelopes())
    digest = hashlib.blake2b(digest_size=16)
    for doc, client, seq, hash_ in rows:
        digest.update(f"{doc}/{client}/{seq}".encode() + hash_)
    return digest.digest()


class Checker:
    """Collects violations; ``now`` is set by the cluster before each event."""

    def __init__(self, mesh_id: bytes) -> None:
        self.reference = Membership(mesh_id)
        self.log_hashes: list[bytes] = []
        self.forbidden: dict[Slot, set[bytes]] = {}
        self.violations: list[Violation] = []
        self.now = 0
        self._may: dict[tuple[bytes, str, int], bool] = {}

    @property
    def failed(self) -> bool:
        return bool(self.violations)

    def fail(self, invariant: str, node: SimNode | None, detail: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            name = node.name if node is not None else "cluster"
            self.violations.append(Violation(self.now, invariant, name, detail))

    def forbid(self, env: Envelope) -> None:
        """``env`` must never be accepted by anyone."""
        self.forbidden.setdefault((env.doc, env.client_id, env.seq), set()).add(env.hash)

    # --- during the run --------------------------------------------------------------

    def observe_log(self, node: SimNode) -> None:
        """New membership-log entries at ``node``: same as everyone's, and valid."""
        entries = node.replica.membership.entries
        for index in range(node.log_seen, len(entries)):
            entry = entries[index]
            if index < len(self.log_hashes):
                if self.log_hashes[index] != entry.hash:
                    self.fail("log-fork", node, f"entry {index} differs from the one seen first")
                continue
            try:
                self.reference.add(entry)
            except MembershipError as exc:
                self.fail("log-invalid", node, f"entry {index}: {type(exc).__name__}: {exc}")
                return
            self.log_hashes.append(entry.hash)
        node.log_seen = len(entries)

    def after_flush(self, node: SimNode, outputs: list[Output]) -> None:
        """Record what ``node`` released; check what it accepted."""
        released = False
        touched: set[str] = set()
        for out in outputs:
            if isinstance(out, Send):
                released = True
                data = out.data
                if len(data) > 1 and data[1] == frames.ACK:
                    ack = frames.decode(data)
                    assert isinstance(ack, frames.Ack)
                    for doc, vector in ack.heads.items():
                        for client, seq in vector.items():
                            if node.acked.get((doc, client), 0) < seq:
                                node.acked[(doc, client)] = seq
            elif isinstance(out, Accepted):
                self._accepted(node, out)
                if out.author != node.key:
                    touched.add(out.doc)
        if released:
            node.floor = node.store.envelope_count()
        for doc in sorted(touched):
            self.check_pending(node, doc)

    def _ever_may_write(self, author: bytes, doc: str) -> bool:
        key = (author, doc, self.reference.length)
        cached = self._may.get(key)
        if cached is None:
            member = self.reference.member(author)
            cached = member is not None and any(
                may_write(doc, author, cert.caps) for _, cert in member.certs
            )
            self._may[key] = cached
        return cached

    def _accepted(self, node: SimNode, out: Accepted) -> None:
        slot = (out.doc, out.client, out.seq)
        bad = self.forbidden.get(slot)
        if bad:
            row = node.store.get_envelope(*slot)
            if row is not None and row.hash in bad:
                self.fail("forbidden-accepted", node, f"crafted envelope {slot} was accepted")
        if out.author == node.key:
            return  # its own write
        chain = node.replica.chains.get((out.doc, out.client))
        if chain is None:
            return
        limit = self.reference.chain_limit(out.author, chain.incarnation, out.doc)
        if limit is not None and out.seq > limit:
            self.fail("beyond-cutoff", node, f"{slot} accepted past cutoff seq {limit}")
        if not self._ever_may_write(out.author, out.doc):
            self.fail("no-capability", node, f"{slot} by an author that may not write it")

    def check_durable(self, node: SimNode) -> None:
        """Nothing ``node`` released before is missing from its store now."""
        chains = node.replica.chains
        for (doc, client), seq in sorted(node.acked.items()):
            chain = chains.get((doc, client))
            have = chain.seq if chain is not None else 0
            if have < seq:
                self.fail(
                    "lost-acked-write", node, f"acknowledged {doc}/{client} seq {seq}, has {have}"
                )
        count = node.store.envelope_count()
        if count < node.floor:
            self.fail(
                "lost-released-write",
                node,
                f"store holds {count} envelopes, {node.floor} when it last sent or acknowledged",
            )

    def check_pending(self, node: SimNode, only: str | None = None) -> None:
        """Each document's Yjs state vector is exactly what its accepted envelopes imply."""
        replica = node.replica
        for name, ydoc in replica.docs.items():
            if only is not None and name != only:
                continue
            state = lib0.decode_state_vector(ydoc.get_state())
            expected = replica.expected_state(name)
            if state != expected:
                self.fail("pending", node, f"{name}: state {state} != accepted {expected}")

    def check_chains(self, node: SimNode) -> None:
        """Every chain within its cutoff and capability; no forbidden envelope stored."""
        for (doc, _client), chain in sorted(node.replica.chains.items()):
            if chain.author == node.key:
                continue
            limit = self.reference.chain_limit(chain.author, chain.incarnation, doc)
            if limit is not None and chain.seq > limit:
                self.fail("beyond-cutoff", node, f"{doc} chain at seq {chain.seq} > {limit}")
            if not self._ever_may_write(chain.author, doc):
                self.fail("no-capability", node, f"{doc} chain by an author without rights")
        for slot, hashes in sorted(self.forbidden.items()):
            row = node.store.get_envelope(*slot)
            if row is not None and row.hash in hashes:
                self.fail("forbidden-accepted", node, f"crafted envelope {slot} is stored")

    def during(self, nodes: list[SimNode]) -> None:
        for node in nodes:
            if node.up and not node.hostile:
                self.check_durable(node)
                self.check_pending(node)
                self.check_chains(node)

    # --- after the heal -----------------------------------------------------------------

    @staticmethod
    def vectors_agree(nodes: list[SimNode]) -> bool:
        """The cheap convergence test: honest nodes up, same vectors and log, no open batch."""
        honest = [n for n in nodes if n.honest]
        if not all(n.up for n in honest):
            return False
        reference = honest[0].replica.vectors()
        head = honest[0].replica.membership.head
        return all(
            n.replica.next_seal_ms() is None
            and n.replica.membership.head == head
            and n.replica.vectors() == reference
            for n in honest
        )

    def final(self, nodes: list[SimNode]) -> None:
        """Identical documents, vectors, envelopes and log on every honest node."""
        honest = [n for n in nodes if n.honest and n.up]
        if not honest:
            return
        first = honest[0]
        vectors = first.replica.vectors()
        content = snapshot(first)
        envelopes = envelope_digest(first)
        log = first.replica.membership.head
        for node in honest:
            self.check_durable(node)
            self.check_pending(node)
            self.check_chains(node)
            if node is first:
                continue
            if node.replica.vectors() != vectors:
                self.fail("diverged-vectors", node, f"vectors differ from {first.name}'s")
            elif envelope_digest(node) != envelopes:
                self.fail("diverged-envelopes", node, f"envelopes differ from {first.name}'s")
            if snapshot(node) != content:
                self.fail("diverged-documents", node, f"documents differ from {first.name}'s")
            if node.replica.membership.head != log:
                self.fail("diverged-log", node, f"membership log differs from {first.name}'s")
        for node in honest:
            for name, roots in snapshot(node).items():
                for root, items in roots.items():
                    evil = sorted(k for k in items if k.startswith(EVIL_PREFIX))
                    if evil:
                        self.fail("forbidden-content", node, f"{name}/{root} holds {evil[:3]}")
