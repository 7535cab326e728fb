"""Signed envelopes: a batch of one author's local transactions on one document.

Wire form: canonical CBOR ``[body, signature, update]``; ``body`` is the
canonical CBOR array below, holding the SHA-256 of ``update``, and the signature
is Ed25519 over ``ENVELOPE_DOMAIN + body`` by ``author``. An envelope's hash (its
id, and the next envelope's ``prev``) is SHA-256 of ``body``. Keeping the update
out of the signed body lets a fork proof carry two small bodies instead of two
whole updates. See docs/PROTOCOL.md for the byte layout.

    body = [version, mesh_id, doc, author, incarnation, seq, hlc, mship,
            context, prev, update_hash]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from crdt_state.errors import BadEnvelopeSignature, MalformedEnvelope
from mesh import cbor
from mesh.errors import BadSignature
from mesh.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify
from mesh.limits import (
    MAX_CLOCK,
    MAX_CONTEXT_ENTRIES,
    MAX_DOC_NAME_BYTES,
    MAX_ENVELOPE_BYTES,
)

ENVELOPE_DOMAIN = b"agentmesh/envelope/v1\x00"
ENVELOPE_VERSION = 1
INCARNATION_BYTES = 16
HASH_BYTES = 32
GENESIS_PREV = bytes(HASH_BYTES)
_CLIENT_ID_DOMAIN = b"agentmesh/client-id/v1\x00"
_CLIENT_ID_MASK = (1 << 53) - 1

Context = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class _Header:
    mesh_id: bytes
    doc: str
    author: bytes
    incarnation: bytes
    seq: int
    hlc: int
    mship: int
    context: Context
    prev: bytes
    update_hash: bytes


@dataclass(frozen=True, slots=True)
class SignedHeader:
    """What a fork proof shows of one envelope: its slot and hash, under the author's signature."""

    mesh_id: bytes
    doc: str
    author: bytes
    incarnation: bytes
    seq: int
    hash: bytes


def client_id_of(author: bytes, incarnation: bytes) -> int:
    """The Yjs client id of one author incarnation (53 bits, as Yjs allows)."""
    digest = hashlib.sha256(_CLIENT_ID_DOMAIN + author + incarnation).digest()
    return int.from_bytes(digest[:8], "big") & _CLIENT_ID_MASK


@dataclass(frozen=True, slots=True)
class Envelope:
    """One signed, decoded envelope. ``raw`` is its exact wire form."""

    mesh_id: bytes
    doc: str
    author: bytes
    incarnation: bytes
    seq: int
    hlc: int
    mship: int
    context: Context
    prev: bytes
    update: bytes
    raw: bytes
    hash: bytes
    body: bytes
    signature: bytes
    client_id: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_id", client_id_of(self.author, self.incarnation))

    @property
    def chain(self) -> tuple[str, int]:
        """(document, client id): the chain this envelope extends."""
        return (self.doc, self.client_id)


def seal(
    author: Identity,
    *,
    mesh_id: bytes,
    doc: str,
    incarnation: bytes,
    seq: int,
    hlc: int,
    mship: int,
    context: Context,
    prev: bytes,
    update: bytes,
) -> Envelope:
    """Build and sign an envelope."""
    body = cbor.encode(
        [
            ENVELOPE_VERSION,
            mesh_id,
            doc,
            author.public_key,
            incarnation,
            seq,
            hlc,
            mship,
            [list(pair) for pair in context],
            prev,
            hashlib.sha256(update).digest(),
        ]
    )
    signature = author.sign(ENVELOPE_DOMAIN + body)
    raw = cbor.encode([body, signature, update])
    return Envelope(
        mesh_id,
        doc,
        author.public_key,
        incarnation,
        seq,
        hlc,
        mship,
        context,
        prev,
        update,
        raw,
        hashlib.sha256(body).digest(),
        body,
        signature,
    )


def _context(value: object) -> Context:
    if not isinstance(value, list) or len(value) > MAX_CONTEXT_ENTRIES:
        raise cbor.CanonicalError("context: expected an array of [client, clock]")
    pairs: list[tuple[int, int]] = []
    last = -1
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise cbor.CanonicalError("context: expected [client, clock] pairs")
        client = cbor.expect_uint(item[0], "context client", MAX_CLOCK)
        clock = cbor.expect_uint(item[1], "context clock", MAX_CLOCK)
        if client <= last or clock == 0:
            raise cbor.CanonicalError("context: clients must ascend and clocks be positive")
        last = client
        pairs.append((client, clock))
    return tuple(pairs)


def _decode_body(body: bytes, signature: bytes, *, check_signature: bool) -> _Header:
    try:
        fields = cbor.expect_list(cbor.decode(body), 11, "envelope body")
        if cbor.expect_uint(fields[0], "version") != ENVELOPE_VERSION:
            raise cbor.CanonicalError(f"envelope version {fields[0]!r} unsupported")
        mesh_id = cbor.expect_bytes(fields[1], "mesh id", 32)
        doc = cbor.expect_text(fields[2], "doc", MAX_DOC_NAME_BYTES)
        author = cbor.expect_bytes(fields[3], "author", PUBLIC_KEY_BYTES)
        incarnation = cbor.expect_bytes(fields[4], "incarnation", INCARNATION_BYTES)
        seq = cbor.expect_uint(fields[5], "seq", MAX_CLOCK)
        if seq == 0:
            raise cbor.CanonicalError("seq starts at 1")
        hlc = cbor.expect_uint(fields[6], "hlc")
        mship = cbor.expect_uint(fields[7], "mship", MAX_CLOCK)
        context = _context(fields[8])
        prev = cbor.expect_bytes(fields[9], "prev", HASH_BYTES)
        update_hash = cbor.expect_bytes(fields[10], "update hash", HASH_BYTES)
    except cbor.CanonicalError as exc:
        raise MalformedEnvelope(str(exc)) from exc
    if check_signature:
        try:
            verify(author, ENVELOPE_DOMAIN + body, signature)
        except BadSignature as exc:
            raise BadEnvelopeSignature(f"{doc} seq {seq}: signature does not verify") from exc
    return _Header(mesh_id, doc, author, incarnation, seq, hlc, mship, context, prev, update_hash)


def decode_envelope(raw: bytes, *, check_signature: bool = True) -> Envelope:
    """Decode an envelope, checking its encoding, update hash and (by default) signature."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise MalformedEnvelope(f"envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        outer = cbor.expect_list(cbor.decode(raw), 3, "envelope")
        body = cbor.expect_bytes(outer[0], "envelope body")
        signature = cbor.expect_bytes(outer[1], "envelope signature", SIGNATURE_BYTES)
        update = cbor.expect_bytes(outer[2], "update")
    except cbor.CanonicalError as exc:
        raise MalformedEnvelope(str(exc)) from exc
    header = _decode_body(body, signature, check_signature=check_signature)
    if hashlib.sha256(update).digest() != header.update_hash:
        raise MalformedEnvelope(f"{header.doc} seq {header.seq}: update does not match its hash")
    return Envelope(
        header.mesh_id,
        header.doc,
        header.author,
        header.incarnation,
        header.seq,
        header.hlc,
        header.mship,
        header.context,
        header.prev,
        update,
        raw,
        hashlib.sha256(body).digest(),
        body,
        signature,
    )


def decode_signed_header(body: bytes, signature: bytes) -> SignedHeader:
    """Decode and signature-check an envelope's body alone (as carried by a fork proof)."""
    header = _decode_body(body, signature, check_signature=True)
    return SignedHeader(
        header.mesh_id,
        header.doc,
        header.author,
        header.incarnation,
        header.seq,
        hashlib.sha256(body).digest(),
    )


def proof_of(env: Envelope) -> bytes:
    """An envelope's signed body alone, ``[body, signature]``: one half of a fork proof."""
    return cbor.encode([env.body, env.signature])


def decode_proof(data: bytes) -> SignedHeader:
    """Decode one half of a fork proof (``[body, signature]``), checking the signature."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedEnvelope("fork proof too large")
    try:
        outer = cbor.expect_list(cbor.decode(data), 2, "fork proof")
        body = cbor.expect_bytes(outer[0], "fork proof body")
        signature = cbor.expect_bytes(outer[1], "fork proof signature", SIGNATURE_BYTES)
    except cbor.CanonicalError as exc:
        raise MalformedEnvelope(str(exc)) from exc
    return decode_signed_header(body, signature)


def is_fork(a: SignedHeader, b: SignedHeader) -> bool:
    """Two different signed envelopes for one (mesh, author, incarnation, doc, seq)."""
    slot_a = (a.mesh_id, a.author, a.incarnation, a.doc, a.seq)
    return slot_a == (b.mesh_id, b.author, b.incarnation, b.doc, b.seq) and a.hash != b.hash
