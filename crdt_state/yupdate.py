"""Strict decoder for Yjs v1 updates (lib0 ``UpdateEncoderV1``), as pycrdt emits them.

It lists what an update inserts, references and deletes without applying it.
The accepted subset and every check are specified in ``docs/YJS_UPDATE.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from crdt_state.errors import UpdateDecodeError
from mesh.limits import (
    MAX_ANY_DEPTH,
    MAX_CLOCK,
    MAX_DELETE_RANGES,
    MAX_UPDATE_CLIENTS,
    MAX_UPDATE_STRUCTS,
)

__all__ = ["DecodedUpdate", "ItemInfo", "StructGroup", "UpdateDecodeError", "decode_update"]

# yrs (behind pycrdt) reads clocks and lengths as u32 and wraps silently past 2**32 - 1,
# so anything larger would be read differently by the document than by us.
_CLOCK_LIMIT = min(MAX_CLOCK, 0xFFFF_FFFF)
_CLIENT_LIMIT = MAX_CLOCK

_CONTENT_NAMES = (
    "",
    "deleted",
    "json",
    "binary",
    "string",
    "embed",
    "format",
    "type",
    "any",
    "doc",
)
# Type refs both Yjs and yrs read identically: Array, Map, Text, XmlElement (+ name),
# XmlFragment, XmlText. XmlHook (5) is not: Yjs reads a name after it, yrs does not.
_TYPE_REFS = frozenset({0, 1, 2, 3, 4, 6})
# In flat-schema mode (roots=...) a Map root holds plain values: Any, or Deleted once
# overwritten. String, Embed and Format belong to Text; Type and Doc nest.
_FLAT_REFS = frozenset({1, 8})
# Content refs read: all of Yjs's but JSON (2), which yrs reads differently (n + 1 strings).
_ITEM_REFS = frozenset({1, 3, 4, 5, 6, 7, 8, 9})


@dataclass(frozen=True, slots=True)
class StructGroup:
    """One client's run of structs in an update."""

    client: int
    clock: int
    length: int
    has_skip: bool
    has_gc: bool


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """One struct of an update (only produced with ``detail=True``)."""

    client: int
    clock: int
    length: int
    kind: str
    content: str
    parent: str | tuple[int, int] | None
    key: str | None
    origin: tuple[int, int] | None
    right_origin: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class DecodedUpdate:
    """What an update inserts (groups), references (ref_ends) and deletes."""

    groups: tuple[StructGroup, ...]
    ref_ends: dict[int, int]
    deletes: tuple[tuple[int, int, int], ...]
    items: tuple[ItemInfo, ...] | None


def _fail(what: str, offset: int) -> UpdateDecodeError:
    return UpdateDecodeError(f"{what} at byte {offset}")


def _vu(data: bytes, pos: int, first: int, limit: int) -> tuple[int, int]:
    """Finish a multi-byte varuint whose first byte ``first`` (>= 0x80) ends at ``pos``."""
    value = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                raise _fail("non-canonical varuint", pos - 1)
            if value > limit:
                raise _fail("varuint out of range", pos - 1)
            return value, pos
        shift += 7
        if shift > 49:
            raise _fail("varuint longer than 8 bytes", pos - 1)


def _skip_varint(data: bytes, pos: int) -> int:
    """Skip a lib0 signed varint (sign in bit 6 of the first byte)."""
    b = data[pos]
    pos += 1
    if b < 0x80:
        return pos
    value = b & 0x3F
    shift = 6
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                raise _fail("non-canonical varint", pos - 1)
            if value > MAX_CLOCK:
                raise _fail("varint out of range", pos - 1)
            return pos
        shift += 7
        if shift > 48:
            raise _fail("varint longer than 8 bytes", pos - 1)


def _utf8(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("invalid UTF-8 string", start) from None


def _skip_string(data: bytes, pos: int, n: int, check: bool) -> int:
    ln = data[pos]
    pos += 1
    if ln >= 0x80:
        ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
    end = pos + ln
    if end > n:
        raise _fail("string runs past the end", pos)
    if check:
        _utf8(data, pos, end)
    return end


def _skip_flat_object(data: bytes, pos: int, n: int) -> int:
    """Skip one Any object of short keys and scalar values (a record); -1 if it is not one.

    The common case of the flat schema, walked in one loop: every key and string is
    shorter than 128 bytes (one-byte lengths), every value a string, boolean, null,
    undefined or float. Tags and one-byte lengths are ASCII, so one ``isascii`` per
    stretch between float payloads checks every string. Anything else (or a string
    that is not ASCII) returns -1 and the caller walks the value the general way.
    """
    cnt = data[pos + 1]
    if cnt >= 0x80:
        return -1
    p = mark = pos + 2
    for _ in range(cnt):
        ln = data[p]
        if ln >= 0x80:
            return -1
        p += ln + 1
        tag = data[p]
        p += 1
        if tag == 119:  # string
            ln = data[p]
            if ln >= 0x80:
                return -1
            p += ln + 1
        elif tag in {124, 123}:  # float32, float64: payload left out of the check
            if not data[mark:p].isascii():
                return -1
            p += 4 if tag == 124 else 8
            mark = p
        elif tag not in {120, 121, 126, 127}:  # true, false, null, undefined
            return -1
    if p > n:
        raise _fail("Any value runs past the end", n)
    if not data[mark:p].isascii():
        return -1
    return p


def _skip_any(data: bytes, pos: int, n: int, count: int, check: bool = False) -> int:
    """Skip ``count`` lib0 Any values, checking every string; return the end offset.

    Iterative, with nesting bounded by MAX_ANY_DEPTH. Unless ``check`` is set, strings are
    not decoded one by one: the bytes walked are tested for ASCII in segments that leave out
    number and buffer payloads, and only if some string byte is non-ASCII are the values
    walked again with every string decoded.
    """
    if count == 1 and not check and data[pos] == 118:
        end = _skip_flat_object(data, pos, n)
        if end >= 0:
            return end
    start = mark = pos  # bytes in [mark, pos) are not yet known to be ASCII
    dirty = False
    stack: list[tuple[int, bool]] = []
    remaining = count
    in_object = False
    while True:
        if not remaining:
            if stack:
                remaining, in_object = stack.pop()
                continue
            if not check and (dirty or not data[mark:pos].isascii()):
                _skip_any(data, start, n, count, True)
            return pos
        remaining -= 1
        if in_object:
            if check:
                pos = _skip_string(data, pos, n, True)
            else:
                ln = data[pos]
                pos += 1
                if ln >= 0x80:  # a long key: leave its length's bytes out of the segments
                    if not dirty and not data[mark : pos - 1].isascii():
                        dirty = True
                    ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
                    mark = pos
                pos += ln
                if pos > n:
                    raise _fail("Any key runs past the end", n)
        tag = data[pos]
        pos += 1
        if tag == 119:  # string
            if check:
                pos = _skip_string(data, pos, n, True)
            else:
                ln = data[pos]
                pos += 1
                if ln >= 0x80:  # as for keys
                    if not dirty and not data[mark : pos - 1].isascii():
                        dirty = True
                    ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
                    mark = pos
                pos += ln
                if pos > n:
                    raise _fail("Any string runs past the end", n)
        elif tag in {120, 121, 126, 127}:  # true, false, null, undefined
            pass
        elif tag in {118, 117}:  # object, array
            cnt = data[pos]
            pos += 1
            if cnt >= 0x80:  # as for keys
                if not dirty and not data[mark : pos - 1].isascii():
                    dirty = True
                cnt, pos = _vu(data, pos, cnt, _CLOCK_LIMIT)
                mark = pos
            if (cnt * 2 if tag == 118 else cnt) > n - pos:
                raise _fail("Any container count exceeds the remaining bytes", pos - 1)
            if len(stack) >= MAX_ANY_DEPTH:
                raise _fail("Any nested too deeply", pos - 1)
            if cnt:
                stack.append((remaining, in_object))
                remaining = cnt
                in_object = tag == 118
        else:
            # Numbers and buffers: raw payload bytes, left out of the ASCII segments.
            if not dirty and not data[mark:pos].isascii():
                dirty = True
            if tag == 124:  # float32
                pos += 4
            elif tag in {123, 122}:  # float64, bigint64
                pos += 8
            elif tag == 125:  # varint
                pos = _skip_varint(data, pos)
            elif tag == 116:  # Uint8Array
                ln = data[pos]
                pos += 1
                if ln >= 0x80:
                    ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
                pos += ln
            else:
                raise _fail("unknown Any tag", pos - 1)
            if pos > n:
                raise _fail("Any value runs past the end", n)
            mark = pos


def _refuse_constant(name: str) -> object:
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in {math.inf, -math.inf}:
        raise ValueError(text)
    return value


def _skip_json(data: bytes, pos: int, n: int) -> int:
    """Skip a varstring of JSON text, refusing any that yrs (serde_json) would not parse."""
    at = pos
    end = _skip_string(data, pos, n, False)
    text = _read_string(data, at)
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise _fail("invalid JSON text", at) from None
    # Stricter than serde_json where Python's parser is laxer: nesting, lone surrogates,
    # integers beyond the f64 range.
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise _fail("invalid JSON text", at) from None
        elif isinstance(item, list | dict):
            if depth >= MAX_ANY_DEPTH:
                raise _fail("JSON text nested too deeply", at)
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                raise _fail("invalid JSON text", at) from None
    return end


def _content(data: bytes, pos: int, n: int, ref: int) -> tuple[int, int]:
    """Skip item content of the rarer kinds (not Any, not String); return (end, length)."""
    if ref == 1:  # Deleted
        ln = data[pos]
        pos += 1
        if ln >= 0x80:
            ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
        if not ln:
            raise _fail("zero-length deleted content", pos - 1)
        return pos, ln
    if ref == 7:  # Type
        tref = data[pos]
        pos += 1
        if tref not in _TYPE_REFS:
            raise _fail("unsupported type ref", pos - 1)
        if tref == 3:  # XmlElement node name
            pos = _skip_string(data, pos, n, True)
        return pos, 1
    if ref == 3:  # Binary
        ln = data[pos]
        pos += 1
        if ln >= 0x80:
            ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
        end = pos + ln
        if end > n:
            raise _fail("binary runs past the end", pos)
        return end, 1
    if ref == 5:  # Embed (JSON text)
        return _skip_json(data, pos, n), 1
    if ref == 6:  # Format: key, JSON text
        pos = _skip_string(data, pos, n, True)
        return _skip_json(data, pos, n), 1
    # ref == 9, Doc: guid, options
    pos = _skip_string(data, pos, n, True)
    return _skip_any(data, pos, n, 1, True), 1


def decode_update(
    data: bytes | bytearray | memoryview,
    *,
    detail: bool = False,
    roots: frozenset[bytes] | None = None,
) -> DecodedUpdate:
    """Decode and check a Yjs v1 update; raise UpdateDecodeError if it is not acceptable.

    With ``roots`` (UTF-8 root names), the update must also fit a flat schema: every
    item that names its parent names one of ``roots``, no item names a parent by id,
    and no item holds a nested type or subdocument. Such an update can never make
    pycrdt refuse it halfway through (a parent id naming a non-type item does).
    """
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise TypeError("update must be bytes")
        data = bytes(data)
    try:
        return _decode(data, detail, roots)
    except IndexError:
        raise UpdateDecodeError(f"update truncated at byte {len(data)}") from None


def _decode(data: bytes, detail: bool, roots: frozenset[bytes] | None) -> DecodedUpdate:
    n = len(data)
    ngroups = data[0]
    pos = 1
    if ngroups >= 0x80:
        ngroups, pos = _vu(data, pos, ngroups, _CLOCK_LIMIT)
    if ngroups > MAX_UPDATE_CLIENTS:
        raise _fail("too many client groups", 0)
    # Smallest group: numStructs, client, clock, then a 2-byte struct.
    if ngroups * 5 > n - pos:
        raise _fail("group count exceeds the remaining bytes", 0)

    groups: list[StructGroup] = []
    ref_ends: dict[int, int] = {}
    seen: set[int] = set()
    items: list[ItemInfo] | None = [] if detail else None
    total = 0
    for _ in range(ngroups):
        at = pos
        nstructs = data[pos]
        pos += 1
        if nstructs >= 0x80:
            nstructs, pos = _vu(data, pos, nstructs, _CLOCK_LIMIT)
        if not nstructs:
            raise _fail("empty client group", at)
        total += nstructs
        if total > MAX_UPDATE_STRUCTS:
            raise _fail("too many structs", at)
        cat = pos
        client = data[pos]
        pos += 1
        if client >= 0x80:
            client, pos = _vu(data, pos, client, _CLIENT_LIMIT)
        # Ids in a group mostly name the group's own client: matching its encoded bytes
        # (a prefix-free code) is much cheaper than decoding a 4-8 byte varuint again.
        cbytes = data[cat:pos]
        clen = pos - cat
        if client in seen:
            raise _fail("duplicate client group", at)
        seen.add(client)
        clock = data[pos]
        pos += 1
        if clock >= 0x80:
            clock, pos = _vu(data, pos, clock, _CLOCK_LIMIT)
        if nstructs * 2 > n - pos:
            raise _fail("struct count exceeds the remaining bytes", at)
        start = clock
        has_skip = has_gc = False
        skips: list[tuple[int, int]] = []
        types: set[int] = set()  # clocks of this group's Type items
        dead: list[tuple[int, int]] = []  # this group's GC and Deleted runs

        for _ in range(nstructs):
            at = pos
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref in {0, 10}:
                if info != ref:
                    raise _fail("flags on a GC or skip struct", at)
                length = data[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _vu(data, pos, length, _CLOCK_LIMIT)
                if not length:
                    raise _fail("zero-length GC or skip", at)
                if ref:
                    has_skip = True
                    skips.append((clock, clock + length))
                else:
                    has_gc = True
                    dead.append((clock, clock + length))
                if items is not None:
                    items.append(
                        ItemInfo(
                            client,
                            clock,
                            length,
                            "skip" if ref else "gc",
                            "",
                            None,
                            None,
                            None,
                            None,
                        )
                    )
            else:
                if ref not in _ITEM_REFS:
                    raise _fail("unsupported content ref", at)
                if roots is not None and ref not in _FLAT_REFS:
                    raise _fail("content kind outside the flat schema", at)
                origin: tuple[int, int] | None = None
                right_origin: tuple[int, int] | None = None
                parent_id: tuple[int, int] | None = None
                # The three id reads are inlined on purpose: this is the hot loop.
                if info & 0x80:
                    if data.startswith(cbytes, pos):
                        oc = client
                        pos += clen
                    else:
                        oc = data[pos]
                        pos += 1
                        if oc >= 0x80:
                            oc, pos = _vu(data, pos, oc, _CLIENT_LIMIT)
                    ok = data[pos]
                    pos += 1
                    if ok >= 0x80:
                        ok, pos = _vu(data, pos, ok, _CLOCK_LIMIT)
                    if (
                        oc != client or not start <= ok < clock or (skips and _in(skips, ok))
                    ) and ok >= ref_ends.get(oc, 0):
                        ref_ends[oc] = ok + 1
                    if items is not None:
                        origin = (oc, ok)
                if info & 0x40:
                    if data.startswith(cbytes, pos):
                        oc = client
                        pos += clen
                    else:
                        oc = data[pos]
                        pos += 1
                        if oc >= 0x80:
                            oc, pos = _vu(data, pos, oc, _CLIENT_LIMIT)
                    ok = data[pos]
                    pos += 1
                    if ok >= 0x80:
                        ok, pos = _vu(data, pos, ok, _CLOCK_LIMIT)
                    if (
                        oc != client or not start <= ok < clock or (skips and _in(skips, ok))
                    ) and ok >= ref_ends.get(oc, 0):
                        ref_ends[oc] = ok + 1
                    if items is not None:
                        right_origin = (oc, ok)
                hs = -1  # start of the root name / map key bytes, if any
                name = key = -1
                if not info & 0xC0:
                    pinfo = data[pos]
                    pos += 1
                    if pinfo == 1:
                        hs = name = pos
                        ln = data[pos]
                        pos += 1
                        if ln >= 0x80:
                            ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
                        pos += ln
                        if pos > n:
                            raise _fail("root name runs past the end", n)
                        if roots is not None and data[pos - ln : pos] not in roots:
                            raise _fail("root is not part of the schema", name)
                    elif pinfo == 0:
                        if roots is not None:
                            raise _fail("parent by id is outside the flat schema", pos - 1)
                        if data.startswith(cbytes, pos):
                            oc = client
                            pos += clen
                        else:
                            oc = data[pos]
                            pos += 1
                            if oc >= 0x80:
                                oc, pos = _vu(data, pos, oc, _CLIENT_LIMIT)
                        ok = data[pos]
                        pos += 1
                        if ok >= 0x80:
                            ok, pos = _vu(data, pos, ok, _CLOCK_LIMIT)
                        if oc != client or not start <= ok < clock or (skips and _in(skips, ok)):
                            if ok >= ref_ends.get(oc, 0):
                                ref_ends[oc] = ok + 1
                        elif ok not in types and not _in(dead, ok):
                            # yrs refuses this only while integrating, after earlier structs
                            # are in: a partial apply.
                            raise _fail("parent is not a type", at)
                        parent_id = (oc, ok)
                    else:
                        raise _fail("bad parent info", pos - 1)
                    if info & 0x20:
                        key = pos
                        if hs < 0:
                            hs = pos
                        ln = data[pos]
                        pos += 1
                        if ln >= 0x80:
                            ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
                        pos += ln
                        if pos > n:
                            raise _fail("map key runs past the end", n)
                    # Every string is checked, since yrs takes string bytes as UTF-8 unchecked.
                    # ASCII bytes (the usual case) cannot hold a bad one, so check those first.
                    if hs >= 0 and not data[hs:pos].isascii():
                        if name >= 0:
                            _skip_string(data, name, n, True)
                        if key >= 0:
                            _skip_string(data, key, n, True)
                if ref == 8:  # Any
                    length = data[pos]
                    pos += 1
                    if length >= 0x80:
                        length, pos = _vu(data, pos, length, _CLOCK_LIMIT)
                    if not length or length > n - pos:
                        raise _fail("bad Any count", pos - 1)
                    pos = _skip_any(data, pos, n, length)
                elif ref == 4:  # String; its length is in UTF-16 code units
                    length = data[pos]
                    pos += 1
                    if length >= 0x80:
                        length, pos = _vu(data, pos, length, _CLOCK_LIMIT)
                    if not length:
                        raise _fail("empty string content", pos - 1)
                    sb = pos
                    pos += length
                    if pos > n:
                        raise _fail("string runs past the end", sb)
                    if not data[sb:pos].isascii():
                        length = len(_utf8(data, sb, pos).encode("utf-16-le")) >> 1
                else:
                    pos, length = _content(data, pos, n, ref)
                    if ref == 7:
                        types.add(clock)
                    elif ref == 1:
                        dead.append((clock, clock + length))
                if items is not None:
                    parent: str | tuple[int, int] | None = parent_id
                    if name >= 0:
                        parent = _read_string(data, name)
                    items.append(
                        ItemInfo(
                            client,
                            clock,
                            length,
                            "item",
                            _CONTENT_NAMES[ref],
                            parent,
                            _read_string(data, key) if key >= 0 else None,
                            origin,
                            right_origin,
                        )
                    )
            clock += length
            if clock > _CLOCK_LIMIT:
                raise _fail("clock out of range", at)
        groups.append(StructGroup(client, start, clock - start, has_skip, has_gc))

    deletes = _decode_delete_set(data, pos, n)
    return DecodedUpdate(
        tuple(groups), ref_ends, deletes, tuple(items) if items is not None else None
    )


def _in(skips: list[tuple[int, int]], clock: int) -> bool:
    return any(lo <= clock < hi for lo, hi in skips)


def _read_string(data: bytes, pos: int) -> str:
    ln = data[pos]
    pos += 1
    if ln >= 0x80:
        ln, pos = _vu(data, pos, ln, _CLOCK_LIMIT)
    return _utf8(data, pos, pos + ln)


def _decode_delete_set(data: bytes, pos: int, n: int) -> tuple[tuple[int, int, int], ...]:
    at = pos
    nclients = data[pos]
    pos += 1
    if nclients >= 0x80:
        nclients, pos = _vu(data, pos, nclients, _CLOCK_LIMIT)
    if nclients > MAX_UPDATE_CLIENTS:
        raise _fail("too many delete-set clients", at)
    if nclients * 2 > n - pos:
        raise _fail("delete-set client count exceeds the remaining bytes", at)
    deletes: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for _ in range(nclients):
        at = pos
        client = data[pos]
        pos += 1
        if client >= 0x80:
            client, pos = _vu(data, pos, client, _CLIENT_LIMIT)
        if client in seen:
            raise _fail("duplicate delete-set client", at)
        seen.add(client)
        nranges = data[pos]
        pos += 1
        if nranges >= 0x80:
            nranges, pos = _vu(data, pos, nranges, _CLOCK_LIMIT)
        if nranges * 2 > n - pos:
            raise _fail("delete range count exceeds the remaining bytes", at)
        if len(deletes) + nranges > MAX_DELETE_RANGES:
            raise _fail("too many delete ranges", at)
        for _ in range(nranges):
            at = pos
            clock = data[pos]
            pos += 1
            if clock >= 0x80:
                clock, pos = _vu(data, pos, clock, _CLOCK_LIMIT)
            length = data[pos]
            pos += 1
            if length >= 0x80:
                length, pos = _vu(data, pos, length, _CLOCK_LIMIT)
            if not length:
                raise _fail("zero-length delete range", at)
            if clock + length > _CLOCK_LIMIT:
                raise _fail("delete range out of range", at)
            deletes.append((client, clock, length))
    if pos != n:
        raise _fail("trailing bytes after the delete set", pos)
    return tuple(deletes)
