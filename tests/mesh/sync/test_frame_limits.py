"""Frame decoding at its exact limits, and the error each malformed field gets.

Each limit is tested on both sides of its boundary, and each refusal by its class
and the words a user or a second implementation will see (mutation testing found
limits off by one and messages that nothing checked: docs/SIMULATION.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from mesh import cbor
from mesh.errors import FrameTooLarge, LimitExceeded, MalformedFrame, ProtocolError
from mesh.limits import MAX_CLOCK, MAX_DOCS_PER_FRAME, MAX_FRAME_BYTES, MAX_VECTOR_ENTRIES
from mesh.sync import frames

MESH = b"m" * 32
HEAD = b"h" * 32


def hello(vectors: Any = (), *, mesh: Any = MESH, length: Any = 0, head: Any = HEAD) -> bytes:
    return cbor.encode([frames.HELLO, 1, mesh, length, head, list(vectors)])


def docs(n: int, entries_each: int = 1) -> list[list[Any]]:
    return [[f"d{i:05d}", [[c + 1, 1] for c in range(entries_each)]] for i in range(n)]


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (cbor.encode([]), MalformedFrame, "a frame is a non-empty array"),
        (cbor.encode(5), MalformedFrame, "a frame is a non-empty array"),
        (
            cbor.encode([frames.HELLO, 1, MESH, 0, HEAD, 5]),
            MalformedFrame,
            "vectors: expected an array of documents",
        ),
        (
            hello(docs(MAX_DOCS_PER_FRAME + 1)),
            MalformedFrame,
            "vectors: expected an array of documents",
        ),
        (hello([["b", [[1, 1]]], ["a", [[1, 1]]]]), MalformedFrame, "documents must ascend"),
        (hello([["a", [[1, 1]]], ["a", [[2, 1]]]]), MalformedFrame, "documents must ascend"),
        (hello([["a", []]]), MalformedFrame, "non-empty array of [client, seq]"),
        (hello([["a", [[1]]]]), MalformedFrame, "vector entry"),
        (hello([["a", [[MAX_CLOCK + 1, 1]]]]), MalformedFrame, "client"),
        (hello([["a", [[1, MAX_CLOCK + 1]]]]), MalformedFrame, "seq"),
        (hello([["a", [[2, 1], [1, 1]]]]), MalformedFrame, "clients must ascend"),
        (hello([["a", [[1, 0]]]]), MalformedFrame, "seqs be positive"),
        (hello([[5, [[1, 1]]]]), MalformedFrame, "vector doc"),
        (hello(mesh=b"m" * 31), MalformedFrame, "mesh id"),
        (hello(head=b"h" * 31), MalformedFrame, "log head"),
        (hello(length=MAX_CLOCK + 1), MalformedFrame, "log length"),
        (cbor.encode([frames.HELLO, 1, MESH, 0, HEAD]), MalformedFrame, "hello"),
        (cbor.encode([frames.ENVELOPES, MAX_CLOCK + 1, []]), MalformedFrame, "batch"),
        (cbor.encode([frames.ACK, MAX_CLOCK + 1, [], []]), MalformedFrame, "batch"),
        (
            cbor.encode([frames.ACK, 1, [], [["a", MAX_CLOCK + 1, 1, "x"]]]),
            MalformedFrame,
            "client",
        ),
        (cbor.encode([frames.ACK, 1, [], [["a", 1, MAX_CLOCK + 1, "x"]]]), MalformedFrame, "seq"),
        (cbor.encode([frames.ACK, 1, [], [["a", 1, 1, "x" * 65]]]), MalformedFrame, "code"),
        (cbor.encode([frames.ERROR, "x" * 65, "m"]), MalformedFrame, "code"),
        (cbor.encode([frames.ERROR, "c", "m" * 1025]), MalformedFrame, "message"),
    ],
)
def test_each_malformed_field_gets_its_error(
    data: bytes, error: type[ProtocolError], words: str
) -> None:
    with pytest.raises(error) as raised:
        frames.decode(data)
    assert type(raised.value) is error
    assert words in str(raised.value)


def test_documents_per_frame_up_to_the_limit() -> None:
    decoded = frames.decode(hello(docs(MAX_DOCS_PER_FRAME)))
    assert isinstance(decoded, frames.Hello) and len(decoded.vectors) == MAX_DOCS_PER_FRAME


def test_vector_entries_are_counted_over_all_documents() -> None:
    per_doc = MAX_VECTOR_ENTRIES // 4
    exactly = docs(4, per_doc)
    decoded = frames.decode(hello(exactly))
    assert isinstance(decoded, frames.Hello)
    assert sum(len(v) for v in decoded.vectors.values()) == MAX_VECTOR_ENTRIES
    one_more = [*exactly, ["z", [[1, 1]]]]
    with pytest.raises(LimitExceeded, match="too many version-vector entries"):
        frames.decode(hello(one_more))


def test_a_frame_of_exactly_the_maximum_size_decodes() -> None:
    empty = len(cbor.encode([frames.ENVELOPES, 1, [b""]]))
    # A byte string's CBOR head grows by 4 bytes past 65,535: account for it.
    payload = MAX_FRAME_BYTES - empty - 4
    data = cbor.encode([frames.ENVELOPES, 1, [b"x" * payload]])
    assert len(data) == MAX_FRAME_BYTES
    decoded = frames.decode(data)
    assert isinstance(decoded, frames.Envelopes) and len(decoded.envelopes[0]) == payload
    with pytest.raises(FrameTooLarge, match="exceeds"):
        frames.decode(data + b"\x00")


def test_text_fields_up_to_their_limits() -> None:
    ack = frames.decode(cbor.encode([frames.ACK, MAX_CLOCK, [], [["a", 1, 1, "x" * 64]]]))
    assert isinstance(ack, frames.Ack) and ack.refused[0].code == "x" * 64
    error = frames.decode(cbor.encode([frames.ERROR, "c" * 64, "m" * 1024]))
    assert isinstance(error, frames.Error) and len(error.message) == 1024


def test_a_client_may_appear_once_per_vector() -> None:
    with pytest.raises(MalformedFrame, match="clients must ascend"):
        frames.decode(hello([["a", [[1, 1], [1, 2]]]]))
    decoded = frames.decode(hello([["a", [[0, 1], [1, 2]]]]))  # client 0 is a client
    assert isinstance(decoded, frames.Hello) and decoded.vectors == {"a": {0: 1, 1: 2}}


def test_records_and_refusals_per_frame_up_to_their_limits() -> None:
    from mesh.limits import MAX_ENVELOPES_PER_BATCH, MAX_RECORDS_PER_FRAME

    records = frames.decode(cbor.encode([frames.RECORDS, [b"r"] * MAX_RECORDS_PER_FRAME]))
    assert isinstance(records, frames.Records)
    assert len(records.entries) == MAX_RECORDS_PER_FRAME
    with pytest.raises(LimitExceeded):
        frames.decode(cbor.encode([frames.RECORDS, [b"r"] * (MAX_RECORDS_PER_FRAME + 1)]))
    refusal = ["a", 1, 1, "CutOff"]
    ack = frames.decode(cbor.encode([frames.ACK, 1, [], [refusal] * MAX_ENVELOPES_PER_BATCH]))
    assert isinstance(ack, frames.Ack) and len(ack.refused) == MAX_ENVELOPES_PER_BATCH
    with pytest.raises(MalformedFrame, match="bad refusals"):
        frames.decode(cbor.encode([frames.ACK, 1, [], [refusal] * (MAX_ENVELOPES_PER_BATCH + 1)]))


def test_a_frame_of_exactly_the_maximum_size_encodes() -> None:
    empty = len(frames.encode(frames.Envelopes(1, (b"",))))
    payload = MAX_FRAME_BYTES - empty - 4  # the byte string's head grows by 4 bytes
    data = frames.encode(frames.Envelopes(1, (b"x" * payload,)))
    assert len(data) == MAX_FRAME_BYTES
    with pytest.raises(FrameTooLarge):
        frames.encode(frames.Envelopes(1, (b"x" * (payload + 1),)))
