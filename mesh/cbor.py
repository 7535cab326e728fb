"""Canonical CBOR: one encoding per value, checked on decode.

Signed structures are CBOR arrays of integers, byte strings, text strings and
nested arrays. Encoding uses definite lengths and the shortest integer form
(RFC 8949 section 4.2.1). A decoded value is re-encoded and must reproduce the
input byte for byte, so no two encodings of one value can both verify.
"""

from __future__ import annotations

from typing import Any

import cbor2


class CanonicalError(ValueError):
    """Bytes that are not the canonical CBOR encoding of a value."""


def encode(value: Any) -> bytes:
    """Canonical CBOR encoding of ``value``."""
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes) -> Any:
    """Decode canonical CBOR, raising CanonicalError for anything else."""
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CanonicalError(f"not CBOR: {exc}") from exc
    except MemoryError as exc:  # a declared length far beyond the data
        raise CanonicalError("declared length too large") from exc
    try:
        again = encode(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError) as exc:
        raise CanonicalError(f"not canonical: {exc}") from exc
    if again != data:
        raise CanonicalError("not the canonical encoding")
    return value


def expect_list(value: Any, length: int, what: str) -> list[Any]:
    """``value`` as a list of exactly ``length`` items, or CanonicalError."""
    if not isinstance(value, list) or len(value) != length:
        raise CanonicalError(f"{what}: expected an array of {length}")
    return value


def expect_bytes(value: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        want = "a byte string" if length is None else f"{length} bytes"
        raise CanonicalError(f"{what}: expected {want}")
    return value


def expect_uint(value: Any, what: str, maximum: int = (1 << 64) - 1) -> int:
    if type(value) is not int or value < 0 or value > maximum:
        raise CanonicalError(f"{what}: expected an unsigned integer <= {maximum}")
    return value


def expect_text(value: Any, what: str, max_bytes: int) -> str:
    if not isinstance(value, str) or len(value.encode("utf-8")) > max_bytes:
        raise CanonicalError(f"{what}: expected text of at most {max_bytes} bytes")
    return value
