"""Sync protocol frames: canonical CBOR arrays whose first item is the frame type.

    HELLO     [1, version, mesh_id, log_length, log_head, vectors]
    RECORDS   [2, [log_entry, ...]]
    ENVELOPES [3, batch_no, [envelope, ...]]
    ACK       [4, batch_no, heads, refused]
    FORK      [5, envelope_a, envelope_b]
    ERROR     [6, code, message]

    vectors / heads = [[doc, [[client, seq], ...]], ...]   docs and clients ascending
    refused         = [[doc, client, seq, code], ...]

See docs/PROTOCOL.md for the meaning of each field and the rules of a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh import cbor
from mesh.errors import FrameTooLarge, LimitExceeded, MalformedFrame, UnknownFrameType
from mesh.limits import (
    MAX_CLOCK,
    MAX_DOC_NAME_BYTES,
    MAX_DOCS_PER_FRAME,
    MAX_ENVELOPES_PER_BATCH,
    MAX_FRAME_BYTES,
    MAX_RECORDS_PER_FRAME,
    MAX_VECTOR_ENTRIES,
)

PROTOCOL_VERSION = 1
HELLO = 1
RECORDS = 2
ENVELOPES = 3
ACK = 4
FORK = 5
ERROR = 6

Vectors = dict[str, dict[int, int]]


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    mesh_id: bytes
    log_length: int
    log_head: bytes
    vectors: Vectors


@dataclass(frozen=True, slots=True)
class Records:
    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Envelopes:
    batch_no: int
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    doc: str
    client: int
    seq: int
    code: str


@dataclass(frozen=True, slots=True)
class Ack:
    batch_no: int
    heads: Vectors
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class Fork:
    existing: bytes
    incoming: bytes


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


Frame = Hello | Records | Envelopes | Ack | Fork | Error


def _encode_vectors(vectors: Vectors) -> list[Any]:
    return [
        [doc, [[client, seq] for client, seq in sorted(vector.items())]]
        for doc, vector in sorted(vectors.items())
        if vector
    ]


def _decode_vectors(value: Any) -> Vectors:
    if not isinstance(value, list) or len(value) > MAX_DOCS_PER_FRAME:
        raise MalformedFrame("vectors: expected an array of documents")
    result: Vectors = {}
    entries = 0
    last_doc = ""
    for item in value:
        pair = cbor.expect_list(item, 2, "vector")
        doc = cbor.expect_text(pair[0], "vector doc", MAX_DOC_NAME_BYTES)
        if result and doc <= last_doc:
            raise MalformedFrame("vectors: documents must ascend")
        last_doc = doc
        if not isinstance(pair[1], list) or not pair[1]:
            raise MalformedFrame("vector: expected a non-empty array of [client, seq]")
        entries += len(pair[1])
        if entries > MAX_VECTOR_ENTRIES:
            raise LimitExceeded("too many version-vector entries")
        vector: dict[int, int] = {}
        last_client = -1
        for head in pair[1]:
            client_seq = cbor.expect_list(head, 2, "vector entry")
            client = cbor.expect_uint(client_seq[0], "client", MAX_CLOCK)
            seq = cbor.expect_uint(client_seq[1], "seq", MAX_CLOCK)
            if client <= last_client or seq == 0:
                raise MalformedFrame("vector: clients must ascend and seqs be positive")
            last_client = client
            vector[client] = seq
        result[doc] = vector
    return result


def encode(frame: Frame) -> bytes:
    """Encode a frame, refusing one larger than MAX_FRAME_BYTES."""
    value: list[Any]
    if isinstance(frame, Hello):
        value = [
            HELLO,
            frame.version,
            frame.mesh_id,
            frame.log_length,
            frame.log_head,
            _encode_vectors(frame.vectors),
        ]
    elif isinstance(frame, Records):
        value = [RECORDS, list(frame.entries)]
    elif isinstance(frame, Envelopes):
        value = [ENVELOPES, frame.batch_no, list(frame.envelopes)]
    elif isinstance(frame, Ack):
        refused = [[r.doc, r.client, r.seq, r.code] for r in frame.refused]
        value = [ACK, frame.batch_no, _encode_vectors(frame.heads), refused]
    elif isinstance(frame, Fork):
        value = [FORK, frame.existing, frame.incoming]
    else:
        value = [ERROR, frame.code, frame.message]
    data = cbor.encode(value)
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data


def decode(data: bytes) -> Frame:
    """Decode one frame. Raises a ProtocolError subclass for anything malformed."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        value = cbor.decode(data)
        if not isinstance(value, list) or not value:
            raise MalformedFrame("a frame is a non-empty array")
        kind = value[0]
        if type(kind) is not int:  # not a bool either: True == 1 in Python
            raise UnknownFrameType(f"unknown frame type {kind!r}")
        if kind == HELLO:
            fields = cbor.expect_list(value, 6, "hello")
            return Hello(
                cbor.expect_uint(fields[1], "version"),
                cbor.expect_bytes(fields[2], "mesh id", 32),
                cbor.expect_uint(fields[3], "log length", MAX_CLOCK),
                cbor.expect_bytes(fields[4], "log head", 32),
                _decode_vectors(fields[5]),
            )
        if kind == RECORDS:
            fields = cbor.expect_list(value, 2, "records")
            entries = fields[1]
            if not isinstance(entries, list) or len(entries) > MAX_RECORDS_PER_FRAME:
                raise LimitExceeded("too many records in one frame")
            return Records(tuple(cbor.expect_bytes(e, "record") for e in entries))
        if kind == ENVELOPES:
            fields = cbor.expect_list(value, 3, "envelopes")
            batch_no = cbor.expect_uint(fields[1], "batch", MAX_CLOCK)
            envelopes = fields[2]
            if not isinstance(envelopes, list) or len(envelopes) > MAX_ENVELOPES_PER_BATCH:
                raise LimitExceeded("too many envelopes in one batch")
            # The frame's own size bounds the batch (one envelope may fill a frame).
            return Envelopes(batch_no, tuple(cbor.expect_bytes(e, "envelope") for e in envelopes))
        if kind == ACK:
            fields = cbor.expect_list(value, 4, "ack")
            refused_list = fields[3]
            if not isinstance(refused_list, list) or len(refused_list) > MAX_ENVELOPES_PER_BATCH:
                raise MalformedFrame("ack: bad refusals")
            refused = []
            for item in refused_list:
                r = cbor.expect_list(item, 4, "refusal")
                refused.append(
                    Refusal(
                        cbor.expect_text(r[0], "doc", MAX_DOC_NAME_BYTES),
                        cbor.expect_uint(r[1], "client", MAX_CLOCK),
                        cbor.expect_uint(r[2], "seq", MAX_CLOCK),
                        cbor.expect_text(r[3], "code", 64),
                    )
                )
            return Ack(
                cbor.expect_uint(fields[1], "batch", MAX_CLOCK),
                _decode_vectors(fields[2]),
                tuple(refused),
            )
        if kind == FORK:
            fields = cbor.expect_list(value, 3, "fork")
            return Fork(cbor.expect_bytes(fields[1], "a"), cbor.expect_bytes(fields[2], "b"))
        if kind == ERROR:
            fields = cbor.expect_list(value, 3, "error")
            return Error(
                cbor.expect_text(fields[1], "code", 64),
                cbor.expect_text(fields[2], "message", 1024),
            )
        raise UnknownFrameType(f"unknown frame type {kind!r}")
    except cbor.CanonicalError as exc:
        raise MalformedFrame(str(exc)) from exc
