"""Frame codec: round trips, limits, and hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import cbor
from mesh.errors import (
    FrameTooLarge,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    UnknownFrameType,
)
from mesh.limits import MAX_ENVELOPES_PER_BATCH, MAX_FRAME_BYTES
from mesh.sync import frames

SAMPLES: list[frames.Frame] = [
    frames.Hello(1, b"m" * 32, 3, b"h" * 32, {"shared": {5: 2, 9: 1}, "agent": {7: 4}}),
    frames.Records((b"entry-a", b"entry-b")),
    frames.Envelopes(7, (b"env-1", b"env-2")),
    frames.Ack(7, {"shared": {5: 3}}, (frames.Refusal("agent", 9, 1, "NotPermitted"),)),
    frames.Fork(b"a", b"b"),
    frames.Error("not-a-member", "go away"),
]


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: frames.Frame) -> None:
    assert frames.decode(frames.encode(frame)) == frame


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_every_truncation_is_a_protocol_error(frame: frames.Frame) -> None:
    data = frames.encode(frame)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            frames.decode(data[:cut])


@given(st.binary(max_size=512))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        frames.decode(data)


@given(st.sampled_from(SAMPLES), st.data())
def test_bit_flips_decode_or_raise_protocol_error(frame: frames.Frame, data: st.DataObject) -> None:
    raw = bytearray(frames.encode(frame))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with contextlib.suppress(ProtocolError):
        frames.decode(bytes(raw))


def test_unknown_type() -> None:
    with pytest.raises(UnknownFrameType):
        frames.decode(cbor.encode([99, 1]))


def test_oversized_frame_refused_before_parsing() -> None:
    with pytest.raises(FrameTooLarge):
        frames.decode(b"\x00" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameTooLarge):
        frames.encode(frames.Records((b"x" * MAX_FRAME_BYTES,)))


def test_too_many_envelopes_in_a_batch() -> None:
    data = cbor.encode([frames.ENVELOPES, 1, [b"e"] * (MAX_ENVELOPES_PER_BATCH + 1)])
    with pytest.raises(LimitExceeded):
        frames.decode(data)


def test_non_canonical_encoding_refused() -> None:
    # 0x18 0x03 is a non-minimal encoding of 3.
    with pytest.raises(MalformedFrame):
        frames.decode(bytes([0x82, 0x18, 0x03, 0x80]))


def test_vectors_must_ascend() -> None:
    bad = cbor.encode([frames.HELLO, 1, b"m" * 32, 0, b"h" * 32, [["shared", [[9, 1], [5, 1]]]]])
    with pytest.raises(MalformedFrame):
        frames.decode(bad)
