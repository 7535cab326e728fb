"""Signed envelopes: a batch of one author's local transactions on one document.

Wire form: canonical CBOR ``[body, signature]``; ``body`` is the canonical CBOR
array below and the signature is Ed25519 over ``ENVELOPE_DOMAIN + body`` by
``author``. An envelope's hash (its id, and the next envelope's ``prev``) is
SHA-256 of ``body``. See docs/PROTOCOL.md for the byte layout.

    body = [version, mesh_id, doc, author, incarnation, seq, hlc, mship,
            context, prev, update]
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
            update,
        ]
    )
    raw = cbor.encode([body, author.sign(ENVELOPE_DOMAIN + body)])
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


def decode_envelope(raw: bytes, *, check_signature: bool = True) -> Envelope:
    """Decode an envelope, checking its encoding and (by default) its signature."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise MalformedEnvelope(f"envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        outer = cbor.expect_list(cbor.decode(raw), 2, "envelope")
        body = cbor.expect_bytes(outer[0], "envelope body")
        signature = cbor.expect_bytes(outer[1], "envelope signature", SIGNATURE_BYTES)
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
        update = cbor.expect_bytes(fields[10], "update")
    except cbor.CanonicalError as exc:
        raise MalformedEnvelope(str(exc)) from exc
    if check_signature:
        try:
            verify(author, ENVELOPE_DOMAIN + body, signature)
        except BadSignature as exc:
            raise BadEnvelopeSignature(f"{doc} seq {seq}: signature does not verify") from exc
    return Envelope(
        mesh_id,
        doc,
        author,
        incarnation,
        seq,
        hlc,
        mship,
        context,
        prev,
        update,
        raw,
        hashlib.sha256(body).digest(),
    )
