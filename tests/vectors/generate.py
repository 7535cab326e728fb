"""Deterministic generator of the wire-protocol test vectors (docs/PROTOCOL.md §10).

Run from the repository root::

    .venv/bin/python -m tests.vectors.generate

It rewrites ``tests/vectors/{identity,records,log,envelopes,frames,invalid,pairing}.json``
(never ``tests/vectors/yjs/``). Everything is deterministic: identities come from
fixed seeds (``bytes([n]) * 32``), times and incarnations are fixed, Ed25519
signatures are deterministic, and the envelopes are made by real ``Replica``
objects, so the files only change when the protocol (or pycrdt's encoder) does.
``tests/mesh/test_vectors.py`` regenerates everything in memory and compares it
with the committed files byte for byte.

JSON conventions: every byte string (keys, hashes, bodies, wire forms, ...) is
lowercase hex; integers are JSON numbers; each file states its ``conventions``. In
``frames.json`` a CBOR value is written as JSON with every byte string as
``{"bytes": "<hex>"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text

from crdt_state import lib0
from crdt_state.envelope import (
    _CLIENT_ID_DOMAIN,
    ENVELOPE_DOMAIN,
    GENESIS_PREV,
    Envelope,
    client_id_of,
    decode_envelope,
    proof_of,
    seal,
)
from crdt_state.replica import Replica
from crdt_state.schema import device_doc
from crdt_state.storage.memory import MemoryStore
from crdt_state.yupdate import decode_update
from mesh import cbor
from mesh.identity import _MESH_ID_DOMAIN, Identity, mesh_id_of
from mesh.limits import MAX_FRAME_BYTES
from mesh.membership.log import (
    ACTION_ADMIT,
    ACTION_QUARANTINE,
    ACTION_REVOKE,
    LOG_DOMAIN,
    Cutoff,
    LogEntry,
    genesis,
    sign_entry,
)
from mesh.membership.records import (
    ADMIN,
    APPROVE,
    READ,
    RECORD_DOMAIN,
    RUNTIME,
    WRITE,
    Certificate,
    Revocation,
    issue_certificate,
    issue_revocation,
)
from mesh.membership.state import Membership
from mesh.sync import frames
from mesh.transport.framing import encode_frame

HERE = Path(__file__).resolve().parent
FILES = ("identity", "records", "log", "envelopes", "frames", "invalid", "pairing")

T0 = 1_700_000_000_000
YEAR_MS = 365 * 24 * 3600 * 1000

#: name -> seed byte; the seed is bytes([n]) * 32.
SEEDS = {
    "root": 1,
    "runtime": 2,
    "laptop": 3,
    "phone": 4,
    "admin": 5,
    "tablet": 6,
    "stranger": 7,
    "other-root": 8,
}
#: name -> incarnation (16 bytes).
INCARNATIONS = {
    "runtime": bytes([0x52]) * 16,
    "laptop": bytes([0xA1]) * 16,
    "phone": bytes([0xB1]) * 16,
    "laptop-fork": bytes([0xA2]) * 16,
    "phone-new": bytes([0xB2]) * 16,
}
#: Which identity each incarnation belongs to.
INCARNATION_OWNER = {
    "runtime": "runtime",
    "laptop": "laptop",
    "phone": "phone",
    "laptop-fork": "laptop",
    "phone-new": "phone",
}


def seeded(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


def hx(data: bytes) -> str:
    return data.hex()


# --- JSON helpers -------------------------------------------------------------------------


def cbor_json(value: Any) -> Any:
    """A decoded CBOR value as JSON: byte strings become {"bytes": hex}."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list):
        return [cbor_json(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"unexpected CBOR value {value!r}")
    return value


def cert_fields(cert: Certificate) -> dict[str, Any]:
    return {
        "version": 1,
        "kind": 0,
        "mesh_id": hx(cert.mesh_id),
        "issuer": hx(cert.issuer),
        "subject": hx(cert.subject),
        "issued_ms": cert.issued_ms,
        "caps": sorted(cert.caps),
        "expires_ms": cert.expires_ms,
        "name": cert.name,
    }


def revocation_fields(rev: Revocation) -> dict[str, Any]:
    return {
        "version": 1,
        "kind": 1,
        "mesh_id": hx(rev.mesh_id),
        "issuer": hx(rev.issuer),
        "subject": hx(rev.subject),
        "issued_ms": rev.issued_ms,
    }


def split_wire(raw: bytes) -> tuple[bytes, bytes]:
    """(body, signature) of a ``[body, signature]`` (or envelope ``[body, signature, update]``)."""
    outer = cbor.decode(raw)
    return outer[0], outer[1]


def cutoff_json(c: Cutoff) -> dict[str, Any]:
    return {"doc": c.doc, "incarnation": hx(c.incarnation), "seq": c.seq, "hash": hx(c.hash)}


def update_json(update: bytes) -> dict[str, Any]:
    decoded = decode_update(update)
    return {
        "groups": [
            {
                "client": g.client,
                "clock": g.clock,
                "length": g.length,
                "has_skip": g.has_skip,
                "has_gc": g.has_gc,
            }
            for g in decoded.groups
        ],
        "ref_ends": [[c, e] for c, e in sorted(decoded.ref_ends.items())],
        "deletes": [list(d) for d in decoded.deletes],
    }


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=True) + "\n"


# --- hand-made CBOR for non-canonical inputs ---------------------------------------------------


def cbor_head(major: int, value: int, width: int) -> bytes:
    """A CBOR head with an explicit argument width (0 = in the initial byte)."""
    if width == 0:
        return bytes([(major << 5) | value])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([(major << 5) | info]) + value.to_bytes(width, "big")


def signed_wire(identity: Identity, domain: bytes, body: bytes) -> bytes:
    return cbor.encode([body, identity.sign(domain + body)])


def flip_signature_bit(raw: bytes) -> bytes:
    """A record, entry, envelope or fork-proof half with its signature's first bit flipped."""
    outer = cbor.decode(raw)
    bad = bytearray(outer[1])
    bad[0] ^= 0x01
    return cbor.encode([outer[0], bytes(bad), *outer[2:]])


def signed_envelope(identity: Identity, body: bytes, update: bytes) -> bytes:
    """An envelope wire form ``[body, signature, update]`` around a hand-made body."""
    return cbor.encode([body, identity.sign(ENVELOPE_DOMAIN + body), update])


# --- the scenario -----------------------------------------------------------------------------


class Scenario:
    """One mesh, built step by step with the library's own code."""

    def __init__(self) -> None:
        self.ids = {name: seeded(n) for name, n in SEEDS.items()}
        self.root = self.ids["root"]
        self.mesh_id = mesh_id_of(self.root.public_key)
        self.entries: list[LogEntry] = []
        self.records: dict[str, Certificate | Revocation] = {}
        self.envelopes: dict[str, Envelope] = {}
        self.env_notes: dict[str, str] = {}
        self.entry_notes: list[str] = []
        self.runtime = self.replica("runtime", "runtime")
        self._build()

    # helpers ---------------------------------------------------------------------------

    def key(self, name: str) -> bytes:
        return self.ids[name].public_key

    def client(self, incarnation: str) -> int:
        owner = INCARNATION_OWNER[incarnation]
        return client_id_of(self.key(owner), INCARNATIONS[incarnation])

    def replica(self, identity: str, incarnation: str, log: int = 0) -> Replica:
        rep = Replica(
            mesh_id=self.mesh_id,
            store=MemoryStore(),
            author=self.ids[identity],
            incarnation=INCARNATIONS[incarnation],
        )
        for entry in self.entries[:log]:
            rep.add_log_entry(entry)
        return rep

    def commit(self, note: str, committed_ms: int, action: int, **kwargs: Any) -> LogEntry:
        membership = self.runtime.membership
        entry = sign_entry(
            self.ids["runtime"],
            mesh_id=self.mesh_id,
            index=membership.length,
            prev=membership.head,
            committed_ms=committed_ms,
            action=action,
            **kwargs,
        )
        self.runtime.add_log_entry(entry)
        self.entries.append(entry)
        self.entry_notes.append(note)
        return entry

    def certify(self, name: str, issuer: str, caps: frozenset[str], at: int, note: str) -> LogEntry:
        cert = issue_certificate(
            self.ids[issuer], self.mesh_id, self.key(name), caps, at, at + YEAR_MS, name
        )
        self.records[f"certificate-{name}"] = cert
        return self.commit(note, at, ACTION_ADMIT, record=cert.raw)

    def write(
        self, rep: Replica, doc: str, now: int, name: str, note: str, *, edit: Any
    ) -> Envelope:
        with rep.transact(doc, now) as ydoc:
            edit(ydoc)
        env = rep.seal(doc, now)
        assert env is not None
        self.envelopes[name] = env
        self.env_notes[name] = note
        return env

    @staticmethod
    def deliver(rep: Replica, env: Envelope, now: int) -> str:
        return rep.receive(decode_envelope(env.raw), now).value

    # the story ---------------------------------------------------------------------------------

    def _build(self) -> None:
        ids = self.ids
        # Log 0..4: genesis, three root certificates, one certificate issued by an admin.
        entry0 = genesis(self.root, ids["runtime"], now_ms=T0, expires_ms=T0 + YEAR_MS)
        self.runtime.add_log_entry(entry0)
        self.entries.append(entry0)
        self.entry_notes.append("genesis: the root certifies the runtime; the runtime signs")
        cert = self.runtime.membership.member(self.key("runtime"))
        assert cert is not None
        self.records["certificate-runtime"] = cert.cert
        self.certify(
            "laptop", "root", frozenset({READ, WRITE, APPROVE}), T0 + 1000, "admit laptop (root)"
        )
        self.certify("phone", "root", frozenset({READ, WRITE}), T0 + 2000, "admit phone (root)")
        self.certify(
            "admin",
            "root",
            frozenset({ADMIN, APPROVE, READ, WRITE}),
            T0 + 3000,
            "admit an admin (root)",
        )
        self.certify(
            "tablet", "admin", frozenset({APPROVE, READ}), T0 + 4000, "admit tablet (by the admin)"
        )

        # The laptop writes twice to `shared`.
        laptop = self.replica("laptop", "laptop", log=5)
        self.write(
            laptop,
            "shared",
            T0 + 5000,
            "A1",
            "laptop seq 1: one Map insert",
            edit=lambda d: d.get("messages", type=Map).__setitem__("m1", "hello"),
        )

        def a2(d: Doc) -> None:
            d.get("messages", type=Map)["m1"] = "hello, edited"
            d.get("tasks", type=Map)["t1"] = "open"

        self.write(laptop, "shared", T0 + 5001, "A2", "laptop seq 2: overwrite + insert", edit=a2)
        for name in ("A1", "A2"):
            self.deliver(self.runtime, self.envelopes[name], T0 + 5002)

        # The runtime writes `agent`, then overwrites and deletes laptop items in `shared`.
        self.write(
            self.runtime,
            "agent",
            T0 + 6000,
            "R1",
            "runtime seq 1 on agent",
            edit=lambda d: d.get("replies", type=Map).__setitem__("r1", "hi there"),
        )
        self.write(
            self.runtime,
            "shared",
            T0 + 6001,
            "R2",
            "runtime seq 1 on shared: overwrites a laptop item (reference + delete)",
            edit=lambda d: d.get("tasks", type=Map).__setitem__("t1", "done"),
        )
        self.write(
            self.runtime,
            "shared",
            T0 + 6002,
            "R3",
            "runtime seq 2 on shared: delete-only update",
            edit=lambda d: d.get("messages", type=Map).pop("m1"),
        )

        # The phone catches up, writes its device document and `shared`.
        phone = self.replica("phone", "phone", log=5)
        for name in ("A1", "A2", "R2", "R3"):
            self.deliver(phone, self.envelopes[name], T0 + 7000)
        phone_doc = device_doc(ids["phone"].peer_id)
        self.write(
            phone,
            phone_doc,
            T0 + 7001,
            "P1",
            "phone seq 1 on its own device document",
            edit=lambda d: d.get("decisions", type=Map).__setitem__("d1", "approve"),
        )
        self.write(
            phone,
            "shared",
            T0 + 7002,
            "P2",
            "phone seq 1 on shared, context covers laptop and runtime",
            edit=lambda d: d.get("messages", type=Map).__setitem__("m2", "from the phone"),
        )
        # Sealed while offline, never reaches the runtime before the revocation.
        self.write(
            phone,
            "shared",
            T0 + 7003,
            "P3",
            "phone seq 2 on shared: beyond the revocation cutoff",
            edit=lambda d: d.get("messages", type=Map).__setitem__("m3", "too late"),
        )
        self.envelopes_after_cutoff = ["P3"]
        for name in ("P1", "P2"):
            self.deliver(self.runtime, self.envelopes[name], T0 + 7004)

        # Log 5: the admin revokes the phone; the runtime signs its cutoffs.
        revocation = issue_revocation(ids["admin"], self.mesh_id, self.key("phone"), T0 + 9000)
        self.records["revocation-phone"] = revocation
        self.commit(
            "revoke phone (issued by the admin) with the runtime's cutoffs",
            T0 + 10_000,
            ACTION_REVOKE,
            record=revocation.raw,
            cutoffs=self.runtime.cutoffs(self.key("phone")),
        )

        # Two replicas of one laptop incarnation fork at seq 1.
        fork_a = self.replica("laptop", "laptop-fork", log=6)
        fork_b = self.replica("laptop", "laptop-fork", log=6)
        self.write(
            fork_a,
            "shared",
            T0 + 11_000,
            "F1",
            "laptop-fork seq 1 (accepted by the runtime)",
            edit=lambda d: d.get("memory", type=Map).__setitem__("f", "one"),
        )
        self.write(
            fork_b,
            "shared",
            T0 + 11_000,
            "F2",
            "laptop-fork seq 1 again, different content: a fork",
            edit=lambda d: d.get("memory", type=Map).__setitem__("f", "two"),
        )
        self.deliver(self.runtime, self.envelopes["F1"], T0 + 11_001)

        # Log 6: quarantine of the forked incarnation; the proof is F1's and F2's signed bodies.
        f1, f2 = self.envelopes["F1"], self.envelopes["F2"]
        self.commit(
            "quarantine the forked laptop incarnation (fork proof: F1 and F2)",
            T0 + 20_000,
            ACTION_QUARANTINE,
            quarantine=(
                self.key("laptop"),
                INCARNATIONS["laptop-fork"],
                proof_of(f1),
                proof_of(f2),
            ),
            cutoffs=self.runtime.cutoffs(self.key("laptop"), INCARNATIONS["laptop-fork"]),
        )

    # verifiers ---------------------------------------------------------------------------------

    def verifier(self, log: int) -> Replica:
        """A replica with no author key that only receives."""
        rep = Replica(mesh_id=self.mesh_id, store=MemoryStore(), author=None, incarnation=bytes(16))
        for entry in self.entries[:log]:
            rep.add_log_entry(entry)
        return rep


# --- identity.json ----------------------------------------------------------------------------


def identity_json(s: Scenario) -> dict[str, Any]:
    identities = []
    for name, n in SEEDS.items():
        ident = s.ids[name]
        prefix = b"\x00\x24\x08\x01\x12\x20"
        identities.append(
            {
                "name": name,
                "seed": hx(bytes([n]) * 32),
                "public_key": hx(ident.public_key),
                "peer_id_bytes": hx(prefix + ident.public_key),
                "peer_id": ident.peer_id,
                "device_doc": device_doc(ident.peer_id),
            }
        )
    meshes = []
    for name in ("root", "other-root"):
        key = s.key(name)
        meshes.append(
            {
                "root": name,
                "root_public_key": hx(key),
                "sha256_input": hx(_MESH_ID_DOMAIN + key),
                "mesh_id": hx(mesh_id_of(key)),
            }
        )
    clients = []
    for inc_name, inc in INCARNATIONS.items():
        author = s.key(INCARNATION_OWNER[inc_name])
        digest = hashlib.sha256(_CLIENT_ID_DOMAIN + author + inc).digest()
        clients.append(
            {
                "incarnation_name": inc_name,
                "author": INCARNATION_OWNER[inc_name],
                "author_public_key": hx(author),
                "incarnation": hx(inc),
                "sha256_input": hx(_CLIENT_ID_DOMAIN + author + inc),
                "digest": hx(digest),
                "first8_big_endian": int.from_bytes(digest[:8], "big"),
                "client_id": client_id_of(author, inc),
            }
        )
    return {
        "about": "Ed25519 identities from seeds bytes([n])*32, PeerIds, mesh ids, Yjs client ids.",
        "conventions": "byte strings are lowercase hex; integers are JSON numbers",
        "mesh_id_domain": hx(_MESH_ID_DOMAIN),
        "client_id_domain": hx(_CLIENT_ID_DOMAIN),
        "client_id_mask": (1 << 53) - 1,
        "identities": identities,
        "meshes": meshes,
        "client_ids": clients,
    }


# --- records.json -----------------------------------------------------------------------------


def record_json(name: str, record: Certificate | Revocation) -> dict[str, Any]:
    body, sig = split_wire(record.raw)
    if isinstance(record, Certificate):
        kind, fields = "certificate", cert_fields(record)
    else:
        kind, fields = "revocation", revocation_fields(record)
    return {
        "name": name,
        "type": kind,
        "fields": fields,
        "body": hx(body),
        "signing_input": hx(RECORD_DOMAIN + body),
        "signature": hx(sig),
        "wire": hx(record.raw),
        "sha256_wire": hx(record.record_hash),
    }


def records_json(s: Scenario) -> dict[str, Any]:
    return {
        "about": "Signed membership records: [body, signature], Ed25519 over RECORD_DOMAIN+body.",
        "conventions": "byte strings are lowercase hex; caps are sorted text",
        "record_domain": hx(RECORD_DOMAIN),
        "mesh_id": hx(s.mesh_id),
        "records": [record_json(name, rec) for name, rec in s.records.items()],
    }


# --- log.json ---------------------------------------------------------------------------------


def entry_json(entry: LogEntry, note: str, proofs: dict[bytes, str]) -> dict[str, Any]:
    body, sig = split_wire(entry.raw)
    fields: dict[str, Any] = {
        "version": 1,
        "mesh_id": hx(entry.mesh_id),
        "index": entry.index,
        "prev": hx(entry.prev),
        "committed_ms": entry.committed_ms,
        "signer": hx(entry.signer),
        "action": entry.action,
    }
    if entry.action in (ACTION_ADMIT, ACTION_REVOKE):
        fields["record"] = hx(entry.record)
    if entry.quarantine is not None:
        author, incarnation, proof_a, proof_b = entry.quarantine
        fields["author"] = hx(author)
        fields["incarnation"] = hx(incarnation)
        fields["proof_a"] = hx(proof_a)
        fields["proof_b"] = hx(proof_b)
    if entry.action in (ACTION_REVOKE, ACTION_QUARANTINE):
        fields["cutoffs"] = [cutoff_json(c) for c in entry.cutoffs]
    extra: dict[str, Any] = {}
    if entry.quarantine is not None:
        # Which envelopes of envelopes.json the two fork-proof halves are the signed bodies of.
        extra["proof_of"] = [proofs[entry.quarantine[2]], proofs[entry.quarantine[3]]]
    return {
        "note": note,
        "fields": fields,
        **extra,
        "body": hx(body),
        "signing_input": hx(LOG_DOMAIN + body),
        "signature": hx(sig),
        "wire": hx(entry.raw),
        "hash": hx(entry.hash),
    }


def membership_json(s: Scenario, membership: Membership) -> dict[str, Any]:
    members = []
    for name in SEEDS:
        key = s.key(name)
        member = membership.member(key)
        members.append(
            {
                "name": name,
                "public_key": hx(key),
                "is_member": membership.is_member(key),
                "caps": sorted(membership.caps(key)),
                "revoked_at": None if member is None else member.revoked_at,
                "caps_at": [sorted(membership.caps_at(key, p)) for p in range(len(s.entries) + 1)],
            }
        )
    limits = []
    for inc_name, incarnation in INCARNATIONS.items():
        author = s.key(INCARNATION_OWNER[inc_name])
        for doc in ("shared", "agent", device_doc(s.ids["phone"].peer_id)):
            limits.append(
                {
                    "incarnation_name": inc_name,
                    "author": hx(author),
                    "incarnation": hx(incarnation),
                    "doc": doc,
                    "chain_limit": membership.chain_limit(author, incarnation, doc),
                }
            )
    return {
        "length": membership.length,
        "head": hx(membership.head),
        "runtime_key": hx(membership.runtime_key or b""),
        "quarantined": sorted([hx(a), hx(i)] for a, i in membership.quarantined),
        "members": members,
        "chain_limits": limits,
    }


def log_json(s: Scenario) -> dict[str, Any]:
    folded = Membership(s.mesh_id)
    for entry in s.entries:
        folded.add(entry)
    proofs = {proof_of(env): name for name, env in s.envelopes.items()}
    return {
        "about": "The runtime's membership log: [body, signature], Ed25519 over LOG_DOMAIN+body; "
        "hash = SHA-256(body); prev = hash of the previous entry (zeros for entry 0). "
        "A quarantine's proof_a/proof_b are fork-proof halves [body, signature] of envelopes.",
        "conventions": "byte strings are lowercase hex; caps_at[p] = caps_at(key, p)",
        "log_domain": hx(LOG_DOMAIN),
        "mesh_id": hx(s.mesh_id),
        "entries": [
            entry_json(e, n, proofs) for e, n in zip(s.entries, s.entry_notes, strict=True)
        ],
        "after_fold": membership_json(s, folded),
    }


# --- envelopes.json -------------------------------------------------------------------------------


def envelope_json(s: Scenario, name: str, env: Envelope) -> dict[str, Any]:
    body, sig = split_wire(env.raw)
    assert cbor.decode(env.raw)[2] == env.update
    inc_name = next(k for k, v in INCARNATIONS.items() if v == env.incarnation)
    return {
        "name": name,
        "note": s.env_notes[name],
        "author": INCARNATION_OWNER[inc_name],
        "incarnation_name": inc_name,
        "fields": {
            "version": 1,
            "mesh_id": hx(env.mesh_id),
            "doc": env.doc,
            "author": hx(env.author),
            "incarnation": hx(env.incarnation),
            "seq": env.seq,
            "hlc": env.hlc,
            "mship": env.mship,
            "context": [list(pair) for pair in env.context],
            "prev": hx(env.prev),
            "update_hash": hashlib.sha256(env.update).hexdigest(),
        },
        "update": hx(env.update),
        "body": hx(body),
        "signing_input": hx(ENVELOPE_DOMAIN + body),
        "signature": hx(sig),
        "wire": hx(env.raw),
        "hash": hx(env.hash),
        "proof": hx(proof_of(env)),
        "client_id": env.client_id,
        "update_decoded": update_json(env.update),
    }


def receive_steps(s: Scenario, log: int, steps: list[Any]) -> dict[str, Any]:
    """Run ``steps`` (envelope names or ["log", index]) on a fresh verifier."""
    rep = s.verifier(log)
    out: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, list):
            rep.add_log_entry(s.entries[step[1]])
            out.append({"log_entry": step[1]})
            continue
        try:
            outcome = s.deliver(rep, s.envelopes[step], T0 + 50_000)
        except Exception as exc:  # recorded as the expected refusal
            outcome = type(exc).__name__
        out.append({"envelope": step, "outcome": outcome})
    return {
        "log_prefix": log,
        "steps": out,
        "vectors_after": {
            doc: [[c, q] for c, q in sorted(v.items())] for doc, v in sorted(rep.vectors().items())
        },
        "held_after": len(rep.held),
    }


def envelopes_json(s: Scenario) -> dict[str, Any]:
    order = ["A1", "A2", "R1", "R2", "R3", "P1", "P2", "P3", "F1", "F2"]
    full = s.verifier(len(s.entries))
    accepted = []
    for name in ["A1", "A2", "R1", "R2", "R3", "P1", "P2", "F1"]:
        s.deliver(full, s.envelopes[name], T0 + 50_000)
    for (doc, client), chain in sorted(full.chains.items()):
        accepted.append(
            {"doc": doc, "client": client, "seq": chain.seq, "clock_end": chain.clock_end}
        )
    states = {}
    for doc in sorted(full.docs):
        ydoc = full.docs[doc]
        states[doc] = {
            "state_vector": [
                [c, k] for c, k in sorted(lib0.decode_state_vector(ydoc.get_state()).items())
            ],
            "roots": {root: ydoc.get(root, type=Map).to_py() or {} for root in sorted(ydoc.keys())},
        }
    cases = {
        "in order, full log": receive_steps(
            s, len(s.entries), ["A1", "A2", "R1", "R2", "R3", "P1", "P2", "P3", "F1", "F2"]
        ),
        "out of order: held until the predecessor arrives": receive_steps(
            s, len(s.entries), ["A2", "A1"]
        ),
        "duplicate": receive_steps(s, len(s.entries), ["A1", "A1"]),
        "held for causal context": receive_steps(s, len(s.entries), ["R2", "A1", "A2"]),
        "held for membership (mship beyond the log)": receive_steps(
            s, 1, ["A1", ["log", 1], ["log", 2], ["log", 3], ["log", 4]]
        ),
        "log entries after a gap are held too": receive_steps(
            s, 1, ["A1", ["log", 3], ["log", 4], ["log", 2], ["log", 1]]
        ),
        "a fork is detected while one half is held": receive_steps(s, 1, ["F1", "F2"]),
    }
    return {
        "about": "Envelopes made by real Replicas: wire = [body, signature, update], Ed25519 "
        "over ENVELOPE_DOMAIN+body, body field 10 = SHA-256(update); hash = SHA-256(body); "
        "proof = [body, signature], one half of a fork proof.",
        "conventions": "byte strings are lowercase hex; context = [[client, clock], ...]; "
        "update_decoded.deletes = [[client, clock, length], ...]; "
        "ref_ends = [[client, end], ...]",
        "envelope_domain": hx(ENVELOPE_DOMAIN),
        "mesh_id": hx(s.mesh_id),
        "envelopes": [envelope_json(s, n, s.envelopes[n]) for n in order],
        "after_receiving_all_valid": {"chains": accepted, "docs": states},
        "receive_cases": cases,
    }


# --- frames.json ----------------------------------------------------------------------------------


def frames_json(s: Scenario) -> dict[str, Any]:
    rt = s.runtime
    laptop = s.client("laptop")
    phone = s.client("phone")
    samples: list[tuple[str, frames.Frame]] = [
        (
            "HELLO",
            frames.Hello(
                frames.PROTOCOL_VERSION,
                s.mesh_id,
                rt.membership.length,
                rt.membership.head,
                rt.vectors(),
            ),
        ),
        ("RECORDS", frames.Records((s.entries[0].raw, s.entries[1].raw))),
        ("ENVELOPES", frames.Envelopes(1, (s.envelopes["A1"].raw, s.envelopes["A2"].raw))),
        (
            "ACK",
            frames.Ack(1, {"shared": {laptop: 2}}, (frames.Refusal("shared", phone, 2, "CutOff"),)),
        ),
        ("FORK", frames.Fork(proof_of(s.envelopes["F1"]), proof_of(s.envelopes["F2"]))),
        ("ERROR", frames.Error("VersionMismatch", "peer speaks protocol 2")),
    ]
    out = []
    for name, frame in samples:
        data = frames.encode(frame)
        out.append(
            {
                "type": name,
                "value": cbor_json(cbor.decode(data)),
                "hex": hx(data),
                "framed": hx(encode_frame(data)),
            }
        )
    return {
        "about": "One frame of each type: canonical CBOR arrays whose first item is the type.",
        "conventions": 'value is the CBOR value as JSON with byte strings as {"bytes": hex}; '
        "framed = unsigned LEB128 length prefix + frame, as sent on a stream",
        "protocol_version": frames.PROTOCOL_VERSION,
        "frames": out,
    }


# --- invalid.json ---------------------------------------------------------------------------------


def _cert_body(s: Scenario, **override: Any) -> list[Any]:
    base: dict[str, Any] = {
        "version": 1,
        "kind": 0,
        "mesh_id": s.mesh_id,
        "issuer": s.key("root"),
        "subject": s.key("stranger"),
        "issued": T0,
        "caps": [READ, WRITE],
        "expires": T0 + YEAR_MS,
        "name": "x",
    }
    base.update(override)
    return list(base.values())


def _entry(
    s: Scenario,
    signer: str = "runtime",
    *,
    mesh_id: bytes | None = None,
    index: int | None = None,
    prev: bytes | None = None,
    committed_ms: int = T0 + 30_000,
    action: int = ACTION_ADMIT,
    record: bytes = b"",
    cutoffs: tuple[Cutoff, ...] = (),
    quarantine: tuple[bytes, bytes, bytes, bytes] | None = None,
) -> bytes:
    n = len(s.entries)
    return sign_entry(
        s.ids[signer],
        mesh_id=s.mesh_id if mesh_id is None else mesh_id,
        index=n if index is None else index,
        prev=s.entries[-1].hash if prev is None else prev,
        committed_ms=committed_ms,
        action=action,
        record=record,
        cutoffs=cutoffs,
        quarantine=quarantine,
    ).raw


EMPTY_UPDATE = b"\x00\x00"  # no struct groups, empty delete set


def _env_body(s: Scenario, author: str, inc: str, **override: Any) -> list[Any]:
    base: dict[str, Any] = {
        "version": 1,
        "mesh_id": s.mesh_id,
        "doc": "shared",
        "author": s.key(author),
        "incarnation": INCARNATIONS.get(inc, bytes(16)),
        "seq": 1,
        "hlc": T0 << 16,
        "mship": 5,
        "context": [],
        "prev": GENESIS_PREV,
        "update_hash": hashlib.sha256(EMPTY_UPDATE).digest(),
    }
    base.update(override)
    return list(base.values())


def _reseal(s: Scenario, name: str, **override: Any) -> bytes:
    """Re-sign the envelope ``name`` with some fields changed (a valid signature)."""
    env = s.envelopes[name]
    owner = next(k for k, v in INCARNATIONS.items() if v == env.incarnation)
    fields: dict[str, Any] = {
        "mesh_id": env.mesh_id,
        "doc": env.doc,
        "incarnation": env.incarnation,
        "seq": env.seq,
        "hlc": env.hlc,
        "mship": env.mship,
        "context": env.context,
        "prev": env.prev,
        "update": env.update,
    }
    fields.update(override)
    return seal(s.ids[INCARNATION_OWNER[owner]], **fields).raw


def _foreign_update() -> bytes:
    doc = Doc(client_id=12_345)
    doc.get("messages", type=Map)["x"] = "y"
    return doc.get_update(b"\x00")


def _flat_violation(client: int, how: str) -> bytes:
    """An update by ``client`` from clock 0 that breaks the flat schema of ``shared``."""
    doc = Doc(client_id=client)
    if how == "root":
        doc.get("notes", type=Map)["x"] = "y"
        return doc.get_update(b"\x00")
    if how in ("string", "format", "embed"):
        # A root that the schema declares a Map, written as Text: the update names only the root.
        text = doc.get("messages", type=Text)
        if how == "string":
            text.insert(0, "hi")
        elif how == "format":
            text.insert(0, "hi", {"bold": True})
        else:
            text.insert_embed(0, {"image": "x.png"})
        return doc.get_update(b"\x00")
    doc.get("messages", type=Map)["box"] = Map()
    if how == "nested":
        return doc.get_update(b"\x00")
    state = doc.get_state()
    doc.get("messages", type=Map)["box"]["x"] = "y"
    item = doc.get_update(state)  # one item at clock 1 whose parent is the id (client, 0)
    out = bytearray([1, 1])  # the same item, moved to clock 0 so the clocks continue
    lib0.write_varuint(out, client)
    prefix = bytes(out[:2]) + bytes(out[2:])
    assert item.startswith(prefix)
    rest = item[len(prefix) :]
    assert rest[0] == 1  # its clock
    return prefix + b"\x00" + rest[1:]


def _skip_update(client: int) -> bytes:
    out = bytearray([1, 1])  # one group, one struct
    lib0.write_varuint(out, client)
    out += bytes([0, 10, 1, 0])  # clock 0, Skip of length 1, empty delete set
    return bytes(out)


def invalid_json(s: Scenario) -> dict[str, Any]:
    cases: list[dict[str, Any]] = []

    def add(kind: str, name: str, data: bytes, error: str, **extra: Any) -> None:
        cases.append({"kind": kind, "name": name, "hex": hx(data), "error": error, **extra})

    cert = s.records["certificate-laptop"]
    rev = s.records["revocation-phone"]
    other_mesh = mesh_id_of(s.key("other-root"))
    root = s.root

    # cbor --------------------------------------------------------------------------------
    add("cbor", "integer 1 in two bytes", b"\x18\x01", "CanonicalError")
    add("cbor", "indefinite-length array", b"\x9f\x01\xff", "CanonicalError")
    add("cbor", "trailing byte", b"\x01\x00", "CanonicalError")
    add("cbor", "byte string length in two bytes", b"\x58\x01\x00", "CanonicalError")
    add("cbor", "truncated", b"\x82\x01", "CanonicalError")

    # records -------------------------------------------------------------------------------
    add("record", "bit-flipped signature", flip_signature_bit(cert.raw), "BadSignature")
    body, sig = split_wire(cert.raw)
    add(
        "record",
        "body changed after signing",
        cbor.encode([body[:-1] + b"y", sig]),
        "BadSignature",
    )
    add("record", "signature of 63 bytes", cbor.encode([body, sig[:63]]), "MalformedRecord")
    indefinite = b"\x9f" + cbor.encode(body) + cbor.encode(sig) + b"\xff"
    add("record", "outer array of indefinite length", indefinite, "MalformedRecord")

    def signed_record(value: list[Any], signer: Identity = root) -> bytes:
        return signed_wire(signer, RECORD_DOMAIN, cbor.encode(value))

    add(
        "record",
        "caps not sorted",
        signed_record(_cert_body(s, caps=[WRITE, READ])),
        "MalformedRecord",
    )
    add(
        "record",
        "caps repeated",
        signed_record(_cert_body(s, caps=[READ, READ])),
        "MalformedRecord",
    )
    add(
        "record",
        "unknown capability",
        signed_record(_cert_body(s, caps=["owner"])),
        "MalformedRecord",
    )
    add("record", "unknown kind 2", signed_record(_cert_body(s, kind=2)), "MalformedRecord")
    add("record", "version 2", signed_record(_cert_body(s, version=2)), "MalformedRecord")
    add(
        "record",
        "version as CBOR float 1.0",
        signed_record(_cert_body(s, version=1.0)),
        "MalformedRecord",
    )
    add("record", "kind as CBOR false", signed_record(_cert_body(s, kind=False)), "MalformedRecord")
    add(
        "record", "name of 65 bytes", signed_record(_cert_body(s, name="n" * 65)), "MalformedRecord"
    )
    add(
        "record",
        "mesh id of 31 bytes",
        signed_record(_cert_body(s, mesh_id=s.mesh_id[:31])),
        "MalformedRecord",
    )
    add(
        "record",
        "certificate with 8 fields",
        signed_record(_cert_body(s)[:8]),
        "MalformedRecord",
    )
    add(
        "record",
        "revocation with 7 fields",
        signed_record([1, 1, s.mesh_id, root.public_key, s.key("phone"), T0, 0]),
        "MalformedRecord",
    )
    add(
        "record",
        "negative issued time",
        signed_record(_cert_body(s, issued=-1)),
        "MalformedRecord",
    )
    noncanon = (
        cbor_head(4, 9, 0)
        + cbor_head(0, 1, 1)  # version 1 written as 0x18 0x01
        + b"".join(cbor.encode(v) for v in _cert_body(s)[1:])
    )
    add(
        "record",
        "body not canonical (version in two bytes), correctly signed",
        signed_wire(root, RECORD_DOMAIN, noncanon),
        "MalformedRecord",
    )

    # log entries -------------------------------------------------------------------------------
    stranger = issue_certificate(
        root, s.mesh_id, s.key("stranger"), frozenset({READ}), T0, T0 + YEAR_MS, "stranger"
    )
    add("log_entry", "bit-flipped signature", flip_signature_bit(s.entries[1].raw), "BadSignature")
    ebody = [1, s.mesh_id, 7, s.entries[-1].hash, T0 + 30_000, s.key("runtime"), 3, b""]
    add(
        "log_entry",
        "unknown action 3",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode(ebody)),
        "MalformedRecord",
    )
    head7 = [s.mesh_id, 7, s.entries[-1].hash, T0 + 30_000, s.key("runtime")]
    add(
        "log_entry",
        "action as CBOR false",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode([1, *head7, False, stranger.raw])),
        "MalformedRecord",
    )
    add(
        "log_entry",
        "version as CBOR true",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode([True, *head7, 0, stranger.raw])),
        "MalformedRecord",
    )
    phone_inc = INCARNATIONS["phone"]
    unsorted = [["shared", phone_inc, 1, bytes(32)], ["agent", phone_inc, 1, bytes(32)]]
    ebody = [1, s.mesh_id, 7, s.entries[-1].hash, T0 + 30_000, s.key("runtime"), 1, rev.raw]
    add(
        "log_entry",
        "cutoffs not sorted",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode([*ebody, unsorted])),
        "MalformedRecord",
    )
    dup = [["shared", phone_inc, 1, bytes(32)], ["shared", phone_inc, 2, bytes(32)]]
    add(
        "log_entry",
        "cutoffs repeat a (doc, incarnation)",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode([*ebody, dup])),
        "MalformedRecord",
    )
    short = [["shared", phone_inc[:15], 1, bytes(32)]]
    add(
        "log_entry",
        "cutoff incarnation of 15 bytes",
        signed_wire(s.ids["runtime"], LOG_DOMAIN, cbor.encode([*ebody, short])),
        "MalformedRecord",
    )
    add(
        "log_entry",
        "version 2",
        signed_wire(
            s.ids["runtime"],
            LOG_DOMAIN,
            cbor.encode([2, s.mesh_id, 7, s.entries[-1].hash, T0, s.key("runtime"), 0, cert.raw]),
        ),
        "MalformedRecord",
    )
    add(
        "log_entry",
        "admit entry with 9 fields",
        signed_wire(
            s.ids["runtime"],
            LOG_DOMAIN,
            cbor.encode(
                [1, s.mesh_id, 7, s.entries[-1].hash, T0, s.key("runtime"), 0, cert.raw, []]
            ),
        ),
        "MalformedRecord",
    )

    # membership (fold log_prefix entries of log.json, then add this entry) ------------------------
    n = len(s.entries)
    stranger_cert = issue_certificate(
        root, s.mesh_id, s.key("stranger"), frozenset({READ}), T0, T0 + YEAR_MS, "stranger"
    )

    def member(name: str, data: bytes, error: str, prefix: int = n) -> None:
        add("membership", name, data, error, log_prefix=prefix)

    member(
        "entry of another mesh",
        _entry(s, mesh_id=other_mesh, record=stranger_cert.raw),
        "WrongMesh",
    )
    member("index beyond the next one", _entry(s, index=n + 1, record=stranger_cert.raw), "LogGap")
    member(
        "another entry at an existing index",
        _entry(
            s, index=3, prev=s.entries[2].hash, committed_ms=T0 + 3000, record=stranger_cert.raw
        ),
        "LogFork",
    )
    member("prev is not the head", _entry(s, prev=bytes(32), record=stranger_cert.raw), "LogFork")
    member(
        "signed by an admin, not the runtime",
        _entry(s, "admin", record=stranger_cert.raw),
        "NotAuthorized",
    )
    member(
        "committed time goes backwards",
        _entry(s, committed_ms=T0 + 19_999, record=stranger_cert.raw),
        "MalformedRecord",
    )
    by_device = issue_certificate(
        s.ids["laptop"], s.mesh_id, s.key("stranger"), frozenset({READ}), T0, T0 + YEAR_MS
    )
    member("certificate issued by a non-admin", _entry(s, record=by_device.raw), "NotAuthorized")
    escalation = issue_certificate(
        s.ids["admin"], s.mesh_id, s.key("stranger"), frozenset({READ, RUNTIME}), T0, T0 + YEAR_MS
    )
    member("admin grants runtime", _entry(s, record=escalation.raw), "CapabilityEscalation")
    by_tablet = issue_certificate(
        s.ids["tablet"], s.mesh_id, s.key("stranger"), frozenset({READ}), T0, T0 + YEAR_MS
    )
    member(
        "certificate issued by a member without admin",
        _entry(s, record=by_tablet.raw),
        "NotAuthorized",
    )
    expired = issue_certificate(
        root, s.mesh_id, s.key("stranger"), frozenset({READ}), T0, T0 + 30_000
    )
    member("certificate expired when committed", _entry(s, record=expired.raw), "Expired")
    early = issue_certificate(
        root, s.mesh_id, s.key("stranger"), frozenset({READ}), T0 + 30_001, T0 + YEAR_MS
    )
    member("certificate not yet valid when committed", _entry(s, record=early.raw), "Expired")
    foreign = issue_certificate(
        root, other_mesh, s.key("stranger"), frozenset({READ}), T0, T0 + YEAR_MS
    )
    member("certificate of another mesh", _entry(s, record=foreign.raw), "WrongMesh")
    again = issue_certificate(root, s.mesh_id, s.key("phone"), frozenset({READ}), T0, T0 + YEAR_MS)
    member("a revoked key certified again", _entry(s, record=again.raw), "NotAuthorized")
    member(
        "admit entry holding a revocation",
        _entry(s, record=issue_revocation(root, s.mesh_id, s.key("tablet"), T0).raw),
        "MalformedRecord",
    )
    revoke_admin = issue_revocation(s.ids["admin"], s.mesh_id, s.key("admin"), T0)
    member(
        "an admin revokes an admin",
        _entry(s, action=ACTION_REVOKE, record=revoke_admin.raw),
        "NotAuthorized",
    )
    member(
        "revoke a key already revoked",
        _entry(
            s,
            action=ACTION_REVOKE,
            record=issue_revocation(root, s.mesh_id, s.key("phone"), T0).raw,
        ),
        "NotAuthorized",
    )
    member(
        "revoke a key that is not a member",
        _entry(
            s,
            action=ACTION_REVOKE,
            record=issue_revocation(root, s.mesh_id, s.key("stranger"), T0).raw,
        ),
        "NotAuthorized",
    )
    member(
        "revocation by a device without admin",
        _entry(
            s,
            action=ACTION_REVOKE,
            record=issue_revocation(s.ids["laptop"], s.mesh_id, s.key("tablet"), T0).raw,
        ),
        "NotAuthorized",
    )
    member(
        "revoke entry holding a certificate",
        _entry(s, action=ACTION_REVOKE, record=stranger_cert.raw),
        "MalformedRecord",
    )
    a1, a2 = s.envelopes["A1"], s.envelopes["A2"]
    f1, f2 = s.envelopes["F1"], s.envelopes["F2"]
    pf1, pf2 = proof_of(f1), proof_of(f2)

    def quarantine(proof_a: bytes, proof_b: bytes, **kwargs: Any) -> bytes:
        author = kwargs.pop("author", f1.author)
        incarnation = kwargs.pop("incarnation", f1.incarnation)
        return _entry(
            s,
            action=ACTION_QUARANTINE,
            quarantine=(author, incarnation, proof_a, proof_b),
            **kwargs,
        )

    member(
        "a proof pair that is not a fork: the same envelope twice",
        quarantine(proof_of(a1), proof_of(a1), author=a1.author, incarnation=a1.incarnation),
        "MalformedRecord",
    )
    member(
        "a proof pair that is not a fork: two seqs of one chain",
        quarantine(proof_of(a1), proof_of(a2), author=a1.author, incarnation=a1.incarnation),
        "MalformedRecord",
    )
    member(
        "a proof pair that is not a fork: two incarnations",
        quarantine(proof_of(a1), pf2),
        "MalformedRecord",
    )
    member(
        "a fork proof half with a bad signature",
        quarantine(pf1, flip_signature_bit(pf2)),
        "MalformedRecord",
    )
    member(
        "a fork proof half that is a whole envelope (with its update)",
        quarantine(pf1, f2.raw),
        "MalformedRecord",
    )
    member(
        "quarantine cutoff names another incarnation",
        quarantine(pf1, pf2, cutoffs=(Cutoff("shared", INCARNATIONS["laptop"], 1, f1.hash),)),
        "MalformedRecord",
    )
    member(
        "quarantine naming another author than the proof",
        quarantine(pf1, pf2, author=s.key("phone")),
        "MalformedRecord",
    )
    foreign_a = proof_of(decode_envelope(_reseal(s, "F1", mesh_id=other_mesh)))
    foreign_b = proof_of(decode_envelope(_reseal(s, "F2", mesh_id=other_mesh)))
    member(
        "quarantine whose fork proof belongs to another mesh",
        quarantine(foreign_a, foreign_b),
        "WrongMesh",
    )
    shrunk = issue_certificate(
        root, s.mesh_id, s.key("laptop"), frozenset({READ, WRITE}), T0, T0 + YEAR_MS, "laptop"
    )
    member(
        "a certificate shrinking caps (the root drops the laptop's approve)",
        _entry(s, record=shrunk.raw),
        "NotAuthorized",
    )
    demoted = issue_certificate(
        root, s.mesh_id, s.key("admin"), frozenset({READ}), T0, T0 + YEAR_MS, "admin"
    )
    member(
        "a certificate shrinking caps (the root demotes the admin to a device)",
        _entry(s, record=demoted.raw),
        "NotAuthorized",
    )
    admin_again = issue_certificate(
        s.ids["admin"],
        s.mesh_id,
        s.key("admin"),
        frozenset({ADMIN, APPROVE, READ, WRITE}),
        T0,
        T0 + YEAR_MS,
    )
    member(
        "an admin re-certifies an admin (same caps)",
        _entry(s, record=admin_again.raw),
        "NotAuthorized",
    )
    late = T0 + 3000 + YEAR_MS  # the admin's certificate expires at this time
    member(
        "revocation by an admin whose certificate has expired",
        _entry(
            s,
            committed_ms=late,
            action=ACTION_REVOKE,
            record=issue_revocation(s.ids["admin"], s.mesh_id, s.key("tablet"), late).raw,
        ),
        "Expired",
    )
    # genesis (log_prefix 0)
    rt = s.ids["runtime"]

    def gen(cert_raw: bytes, signer: str = "runtime", action: int = ACTION_ADMIT) -> bytes:
        return sign_entry(
            s.ids[signer],
            mesh_id=s.mesh_id,
            index=0,
            prev=GENESIS_PREV,
            committed_ms=T0,
            action=action,
            record=cert_raw,
        ).raw

    all_caps = frozenset({READ, WRITE, APPROVE, ADMIN, RUNTIME})
    no_runtime = issue_certificate(
        root, s.mesh_id, rt.public_key, frozenset({READ, ADMIN}), T0, T0 + YEAR_MS
    )
    member("genesis without the runtime capability", gen(no_runtime.raw), "NotAuthorized", 0)
    good = issue_certificate(root, s.mesh_id, rt.public_key, all_caps, T0, T0 + YEAR_MS)
    member("genesis signed by another key", gen(good.raw, "laptop"), "NotAuthorized", 0)
    not_root = issue_certificate(s.ids["admin"], s.mesh_id, rt.public_key, all_caps, T0, T0 + 1)
    member("genesis certificate not issued by the root", gen(not_root.raw), "NotAuthorized", 0)
    stale = issue_certificate(root, s.mesh_id, rt.public_key, all_caps, T0 - 10, T0)
    member("genesis certificate expired", gen(stale.raw), "Expired", 0)
    other = issue_certificate(
        s.ids["other-root"], other_mesh, rt.public_key, all_caps, T0, T0 + YEAR_MS
    )
    member("genesis certificate of another mesh", gen(other.raw), "WrongMesh", 0)
    member(
        "genesis that is not an admit",
        gen(issue_revocation(root, s.mesh_id, rt.public_key, T0).raw, action=ACTION_REVOKE),
        "MalformedRecord",
        0,
    )

    # envelopes (decode only) -------------------------------------------------------------------
    add("envelope", "bit-flipped signature", flip_signature_bit(a1.raw), "BadEnvelopeSignature")
    laptop = s.ids["laptop"]

    def env(value: list[Any], update: bytes = EMPTY_UPDATE, signer: Identity = laptop) -> bytes:
        return signed_envelope(signer, cbor.encode(value), update)

    a1_body, a1_sig = split_wire(a1.raw)
    add(
        "envelope",
        "update does not match update_hash (another update after signing)",
        cbor.encode([a1_body, a1_sig, a2.update]),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "update does not match update_hash (one byte appended)",
        cbor.encode([a1_body, a1_sig, a1.update + b"\x00"]),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "bad signature and an update not matching its hash (signature checked first)",
        cbor.encode([a1_body, bytes([a1_sig[0] ^ 0x01]) + a1_sig[1:], a2.update]),
        "BadEnvelopeSignature",
    )
    add(
        "envelope",
        "the fork-proof form [body, signature] without the update",
        proof_of(a1),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "outer array of 4 items",
        cbor.encode([a1_body, a1_sig, a1.update, b""]),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "update (outer item 2) is text",
        cbor.encode([a1_body, a1_sig, a1.update.hex()]),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "the update inside the body instead of its hash",
        env(_env_body(s, "laptop", "laptop", update_hash=EMPTY_UPDATE)),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "update_hash is text",
        env(_env_body(s, "laptop", "laptop", update_hash="00" * 32)),
        "MalformedEnvelope",
    )
    add("envelope", "seq 0", env(_env_body(s, "laptop", "laptop", seq=0)), "MalformedEnvelope")
    add(
        "envelope",
        "version 2",
        env(_env_body(s, "laptop", "laptop", version=2)),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "version as CBOR true",
        env(_env_body(s, "laptop", "laptop", version=True)),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "context clients not ascending",
        env(_env_body(s, "laptop", "laptop", context=[[5, 1], [4, 1]])),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "context client repeated",
        env(_env_body(s, "laptop", "laptop", context=[[5, 1], [5, 2]])),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "context clock 0",
        env(_env_body(s, "laptop", "laptop", context=[[5, 0]])),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "context client above 2^53-1",
        env(_env_body(s, "laptop", "laptop", context=[[1 << 53, 1]])),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "doc name of 129 bytes",
        env(_env_body(s, "laptop", "laptop", doc="d" * 129)),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "incarnation of 15 bytes",
        env(_env_body(s, "laptop", "laptop", incarnation=bytes(15))),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "prev of 31 bytes",
        env(_env_body(s, "laptop", "laptop", prev=bytes(31))),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "body with 10 fields",
        env(_env_body(s, "laptop", "laptop")[:10]),
        "MalformedEnvelope",
    )
    values = _env_body(s, "laptop", "laptop")
    noncanon_body = (
        cbor_head(4, 11, 0)
        + b"".join(cbor.encode(v) for v in values[:5])
        + cbor_head(0, 1, 1)  # seq 1 written as 0x18 0x01
        + b"".join(cbor.encode(v) for v in values[6:])
    )
    add(
        "envelope",
        "body not canonical (seq in two bytes), correctly signed",
        signed_envelope(laptop, noncanon_body, EMPTY_UPDATE),
        "MalformedEnvelope",
    )
    add(
        "envelope",
        "signature over the body without the domain prefix",
        cbor.encode([a1_body, laptop.sign(a1_body), a1.update]),
        "BadEnvelopeSignature",
    )

    # fork-proof halves (decode one half: [body, signature]) -------------------------------------
    add(
        "fork_proof",
        "bit-flipped signature",
        flip_signature_bit(proof_of(f2)),
        "BadEnvelopeSignature",
    )
    f2_fields = cbor.decode(f2.body)
    f2_fields[6] += 1  # hlc
    add(
        "fork_proof",
        "F2's body changed after signing (hlc + 1)",
        cbor.encode([cbor.encode(f2_fields), f2.signature]),
        "BadEnvelopeSignature",
    )
    add("fork_proof", "a whole envelope (with its update)", f2.raw, "MalformedEnvelope")
    add(
        "fork_proof",
        "signature of 63 bytes",
        cbor.encode([split_wire(f2.raw)[0], split_wire(f2.raw)[1][:63]]),
        "MalformedEnvelope",
    )
    add(
        "fork_proof",
        "body with 10 fields, correctly signed",
        cbor.encode(
            [
                cbor.encode(_env_body(s, "laptop", "laptop")[:10]),
                laptop.sign(ENVELOPE_DOMAIN + cbor.encode(_env_body(s, "laptop", "laptop")[:10])),
            ]
        ),
        "MalformedEnvelope",
    )

    # receive: fold log_prefix entries, receive `accepted` in order, then this one
    def recv(name: str, data: bytes, error: str, accepted: list[str], prefix: int = n) -> None:
        add("receive", name, data, error, log_prefix=prefix, accepted=accepted)

    recv(
        "envelope of another mesh",
        _reseal(s, "A1", mesh_id=other_mesh),
        "MalformedEnvelope",
        [],
    )
    recv("unknown document", _reseal(s, "A1", doc="notes"), "NotPermitted", [])
    recv(
        "device document with a malformed peer id",
        _reseal(s, "A1", doc="device/xyz"),
        "NotPermitted",
        [],
    )
    recv(
        "device writes another device's document",
        _reseal(s, "A1", doc=device_doc(s.ids["phone"].peer_id)),
        "NotPermitted",
        [],
    )
    recv("device without runtime writes agent", _reseal(s, "A1", doc="agent"), "NotPermitted", [])
    recv("mship 0 (no certificate yet)", _reseal(s, "A1", mship=0), "NotPermitted", [])
    recv(
        "mship before the author's certificate",
        _reseal(s, "A1", mship=1),
        "NotPermitted",
        [],
    )
    recv(
        "tablet (read, approve) writes shared",
        signed_envelope(
            s.ids["tablet"], cbor.encode(_env_body(s, "tablet", "x", mship=5)), EMPTY_UPDATE
        ),
        "NotPermitted",
        [],
    )
    recv(
        "stranger writes shared",
        signed_envelope(
            s.ids["stranger"], cbor.encode(_env_body(s, "stranger", "x", mship=5)), EMPTY_UPDATE
        ),
        "NotPermitted",
        [],
    )
    recv(
        "revoked phone beyond its cutoff",
        s.envelopes["P3"].raw,
        "CutOff",
        ["A1", "A2", "R2", "R3", "P1", "P2"],
    )
    recv(
        "revoked phone, incarnation unknown to the runtime",
        _reseal(s, "P2", incarnation=INCARNATIONS["phone-new"], context=()),
        "CutOff",
        [],
    )
    recv(
        "quarantined incarnation on a document without a cutoff",
        _reseal(s, "F1", doc="device/" + s.ids["laptop"].peer_id),
        "CutOff",
        [],
    )
    recv("second envelope of a fork", f2.raw, "ForkDetected", ["F1"])

    recv(
        "another seq 1 on an accepted chain",
        _reseal(s, "A1", hlc=a1.hlc + 1),
        "ForkDetected",
        ["A1"],
    )
    recv(
        "seq 1 with a non-zero prev",
        _reseal(s, "A1", prev=b"\x01" * 32),
        "ClockDiscontinuity",
        [],
    )
    recv(
        "seq 2 whose prev is not seq 1's hash",
        _reseal(s, "A2", prev=bytes(32)),
        "ClockDiscontinuity",
        ["A1"],
    )
    recv(
        "context omits the author's own clock",
        _reseal(s, "A2", context=()),
        "ClockDiscontinuity",
        ["A1"],
    )
    recv(
        "context claims an own clock the chain never reached (refused, not held for context)",
        _reseal(
            s, "R2", context=tuple(sorted((*s.envelopes["R2"].context, (s.client("runtime"), 5))))
        ),
        "ClockDiscontinuity",
        [],
    )
    recv(
        "items do not start where the chain ends",
        _reseal(s, "A2", seq=1, prev=GENESIS_PREV, context=()),
        "ClockDiscontinuity",
        [],
    )
    recv(
        "update with a Skip struct",
        _reseal(s, "A1", update=_skip_update(s.client("laptop"))),
        "ClockDiscontinuity",
        [],
    )
    recv(
        "update inserts as another client",
        _reseal(s, "A1", update=_foreign_update()),
        "ForeignClient",
        [],
    )
    r2 = s.envelopes["R2"]
    recv(
        "reference outside the context",
        _reseal(s, "R2", context=tuple(p for p in r2.context if p[0] != s.client("laptop"))),
        "OutsideContext",
        ["A1", "A2"],
    )
    r3 = s.envelopes["R3"]
    recv(
        "delete outside the context",
        _reseal(s, "R3", context=tuple(p for p in r3.context if p[0] != s.client("laptop"))),
        "OutsideContext",
        ["A1", "A2", "R2"],
    )
    recv(
        "update with a trailing byte",
        _reseal(s, "A1", update=a1.update + b"\x00"),
        "MalformedEnvelope",
        [],
    )
    recv("update truncated", _reseal(s, "A1", update=a1.update[:-3]), "MalformedEnvelope", [])
    laptop_client = s.client("laptop")
    recv(
        "update writes a root outside the schema",
        _reseal(s, "A1", update=_flat_violation(laptop_client, "root")),
        "MalformedEnvelope",
        [],
    )
    recv(
        "update holds a nested type",
        _reseal(s, "A1", update=_flat_violation(laptop_client, "nested")),
        "MalformedEnvelope",
        [],
    )
    recv(
        "update names a parent by id",
        _reseal(s, "A1", update=_flat_violation(laptop_client, "parent-id")),
        "MalformedEnvelope",
        [],
    )
    for how, what in (
        ("string", "a String item (text content) in a Map root"),
        ("format", "a Format item (rich-text attribute) in a Map root"),
        ("embed", "an Embed item in a Map root"),
    ):
        recv(
            f"update holds {what}",
            _reseal(s, "A1", update=_flat_violation(laptop_client, how)),
            "MalformedEnvelope",
            [],
        )

    # frames --------------------------------------------------------------------------------------
    add("frame", "unknown frame type 7", cbor.encode([7]), "UnknownFrameType")
    add("frame", "frame type as text", cbor.encode(["hello"]), "UnknownFrameType")
    hello_true = cbor.encode([True, 1, s.mesh_id, 0, bytes(32), []])
    add("frame", "frame type as CBOR true (a HELLO otherwise)", hello_true, "UnknownFrameType")
    hello_float = cbor.encode([1.0, 1, s.mesh_id, 0, bytes(32), []])
    add("frame", "frame type as CBOR float 1.0", hello_float, "UnknownFrameType")
    add("frame", "not an array", cbor.encode(1), "MalformedFrame")
    add("frame", "empty array", cbor.encode([]), "MalformedFrame")
    add("frame", "non-canonical integer", bytes([0x82, 0x18, 0x02, 0x80]), "MalformedFrame")
    hello = [1, 1, s.mesh_id, 0, bytes(32), []]
    add("frame", "hello with 5 fields", cbor.encode(hello[:5]), "MalformedFrame")
    add(
        "frame",
        "hello mesh id of 31 bytes",
        cbor.encode([1, 1, s.mesh_id[:31], 0, bytes(32), []]),
        "MalformedFrame",
    )
    add(
        "frame",
        "hello vectors: documents not ascending",
        cbor.encode([1, 1, s.mesh_id, 0, bytes(32), [["shared", [[1, 1]]], ["agent", [[1, 1]]]]]),
        "MalformedFrame",
    )
    add(
        "frame",
        "hello vectors: empty vector for a document",
        cbor.encode([1, 1, s.mesh_id, 0, bytes(32), [["shared", []]]]),
        "MalformedFrame",
    )
    add(
        "frame",
        "hello vectors: seq 0",
        cbor.encode([1, 1, s.mesh_id, 0, bytes(32), [["shared", [[1, 0]]]]]),
        "MalformedFrame",
    )
    add(
        "frame",
        "hello vectors: clients not ascending",
        cbor.encode([1, 1, s.mesh_id, 0, bytes(32), [["shared", [[2, 1], [1, 1]]]]]),
        "MalformedFrame",
    )
    add(
        "frame",
        "records: 257 entries",
        cbor.encode([2, [b""] * 257]),
        "LimitExceeded",
    )
    add("frame", "records: entry is text", cbor.encode([2, ["x"]]), "MalformedFrame")
    add(
        "frame",
        "envelopes: 257 envelopes",
        cbor.encode([3, 1, [b""] * 257]),
        "LimitExceeded",
    )
    add("frame", "envelopes: batch number -1", cbor.encode([3, -1, []]), "MalformedFrame")
    add(
        "frame",
        "ack: 257 refusals",
        cbor.encode([4, 1, [], [["shared", 1, 1, "CutOff"]] * 257]),
        "MalformedFrame",
    )
    add(
        "frame",
        "ack: refusal code of 65 bytes",
        cbor.encode([4, 1, [], [["shared", 1, 1, "c" * 65]]]),
        "MalformedFrame",
    )
    add(
        "frame",
        "error: message of 1025 bytes",
        cbor.encode([6, "x", "m" * 1025]),
        "MalformedFrame",
    )
    add("frame", "fork with 2 fields", cbor.encode([5, b""]), "MalformedFrame")

    # stream framing: feed these bytes to a fresh frame decoder ---------------------------------
    add("framing", "length prefix 0 (empty frame)", b"\x00", "MalformedFrame")
    add("framing", "length prefix not minimal (0x81 0x00)", b"\x81\x00" + b"\x01", "MalformedFrame")
    add("framing", "length prefix of 5 bytes", b"\x80\x80\x80\x80\x01", "FrameTooLarge")
    too_long = MAX_FRAME_BYTES + 1
    prefix = bytearray()
    while too_long > 0x7F:
        prefix.append((too_long & 0x7F) | 0x80)
        too_long >>= 7
    prefix.append(too_long)
    add("framing", "length MAX_FRAME_BYTES + 1 (prefix only)", bytes(prefix), "FrameTooLarge")

    return {
        "about": "Inputs that must be refused, each with the library's error class.",
        "conventions": "see docs/PROTOCOL.md section 10 for how each kind is checked",
        "kinds": {
            "cbor": "canonical CBOR decode of hex",
            "record": "decode a membership record",
            "log_entry": "decode a membership-log entry",
            "membership": "fold the first log_prefix entries of log.json, then add this entry",
            "envelope": "decode an envelope [body, signature, update], checking the signature "
            "and then SHA-256(update) against the body's update_hash",
            "fork_proof": "decode one fork-proof half [body, signature], checking the signature",
            "receive": "fold the first log_prefix entries of log.json, receive the envelopes "
            "named in accepted (envelopes.json) in order, then receive this envelope",
            "frame": "decode a sync frame",
            "framing": "feed the bytes to a fresh stream frame decoder",
        },
        "cases": cases,
    }


# --- pairing.json ---------------------------------------------------------------------------------


def pairing_json(s: Scenario) -> dict[str, Any]:
    """Invite code, join and admin messages (docs/PROTOCOL.md §11)."""
    from mesh.pairing.admin import (
        AdminReply,
        ApproveJoin,
        ListWaiting,
        OpenInvite,
        SequenceRecord,
        encode_request,
    )
    from mesh.pairing.invite import (
        Invite,
        invite_id,
        join_proof,
        short_authentication_string,
    )
    from mesh.pairing.protocol import JOINED, PENDING, REFUSED, JoinReply, JoinRequest

    runtime_key, device_key = s.key("runtime"), s.key("tablet")
    secret = bytes(range(16))
    address = f"/ip4/127.0.0.1/tcp/4001/p2p/{s.ids['runtime'].peer_id}"
    invite = Invite(s.mesh_id, runtime_key, (address,), secret, T0 + 600_000)
    body = cbor.encode([1, s.mesh_id, runtime_key, [address], secret, T0 + 600_000])
    proof = join_proof(secret, s.mesh_id, runtime_key, device_key)
    request = JoinRequest(invite.id, proof, "tablet").encode()
    genesis_only = (s.entries[0].raw,)
    replies = {
        "joined": JoinReply(JOINED, genesis_only).encode(),
        "pending": JoinReply(
            PENDING, sas=short_authentication_string(secret, runtime_key, device_key)
        ).encode(),
        "refused": JoinReply(
            REFUSED, code="invalid-invite", message="unknown or invalid invite"
        ).encode(),
    }
    admin_requests = {
        "invite": encode_request(OpenInvite(frozenset({READ, WRITE}), 600_000, "tablet", True)),
        "record": encode_request(SequenceRecord(s.records["certificate-tablet"].raw)),
        "approve": encode_request(ApproveJoin(device_key)),
        "waiting": encode_request(ListWaiting()),
    }
    admin_replies = {
        "invite": AdminReply(True, [invite.code(), invite.expires_ms]).encode(),
        "record": AdminReply(True, 4).encode(),
        "approve": AdminReply(True, invite.id).encode(),
        "waiting": AdminReply(True, [[device_key, "tablet", "123456"]]).encode(),
        "refused": AdminReply(False, code="not-admin", message="not an admin member").encode(),
    }
    code = invite.code()
    return {
        "conventions": "byte strings are lowercase hex; CBOR is canonical (PROTOCOL.md §2)",
        "invite": {
            "mesh_id": hx(s.mesh_id),
            "runtime_key": hx(runtime_key),
            "addresses": [address],
            "secret": hx(secret),
            "expires_ms": T0 + 600_000,
            "body": hx(body),
            "code": code,
            "invite_id": hx(invite_id(secret)),
        },
        "join": {
            "device_key": hx(device_key),
            "proof": hx(proof),
            "sas": short_authentication_string(secret, runtime_key, device_key),
            "request_name": "tablet",
            "request": hx(request),
            "replies": {name: hx(raw) for name, raw in replies.items()},
            "joined_entries": [hx(raw) for raw in genesis_only],
        },
        "admin": {
            "requests": {name: hx(raw) for name, raw in admin_requests.items()},
            "replies": {name: hx(raw) for name, raw in admin_replies.items()},
        },
        "invalid_codes": [
            "",
            "am2-" + code[4:],
            code[:-3],
            "am1-!!!!",
            "am1-"
            + base64.b32encode(cbor.encode([1, s.mesh_id, runtime_key, [address], secret[:15], 1]))
            .decode()
            .rstrip("=")
            .lower(),
        ],
    }


# --- entry points ---------------------------------------------------------------------------------


def build() -> dict[str, str]:
    """Every vector file's exact text, keyed by file name."""
    s = Scenario()
    documents = {
        "identity": identity_json(s),
        "records": records_json(s),
        "log": log_json(s),
        "envelopes": envelopes_json(s),
        "frames": frames_json(s),
        "invalid": invalid_json(s),
        "pairing": pairing_json(s),
    }
    return {f"{name}.json": dump(documents[name]) for name in FILES}


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="ascii")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
