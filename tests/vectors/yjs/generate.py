"""Regenerate the Yjs v1 update vectors in this directory.

    python tests/vectors/yjs/generate.py

Deterministic: fixed client ids, fixed operations, and no value whose encoding
depends on hash order (yrs writes map-like Any values in HashMap order, so no
object here has more than one key). Every valid update is also applied to a
fresh pycrdt document, and its groups are checked against pycrdt state vectors,
before the decoder's output is written as the expected value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pycrdt import (  # noqa: E402
    Array,
    Doc,
    Map,
    Text,
    TransactionEvent,
    XmlElement,
    XmlFragment,
    XmlText,
    merge_updates,
)

from crdt_state.yupdate import DecodedUpdate, UpdateDecodeError, decode_update  # noqa: E402

# --- lib0 writing, for hand-built updates ----------------------------------------------


def vu(n: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vi(n: int) -> bytes:
    """lib0 signed varint: continuation bit, sign bit, 6 bits, then 7-bit groups."""
    neg = n < 0
    n = -n if neg else n
    out = bytearray([(0x80 if n > 0x3F else 0) | (0x40 if neg else 0) | (n & 0x3F)])
    n >>= 6
    while n:
        out.append((0x80 if n > 0x7F else 0) | (n & 0x7F))
        n >>= 7
    return bytes(out)


def vs(s: str) -> bytes:
    """varstring: byte length, UTF-8 bytes."""
    b = s.encode()
    return vu(len(b)) + b


def vb(b: bytes) -> bytes:
    """varuint8array."""
    return vu(len(b)) + b


def struct_section(*groups: tuple[int, int, list[bytes]]) -> bytes:
    """Groups of (client, first clock, encoded structs)."""
    out = vu(len(groups))
    for client, clock, structs in groups:
        out += vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)
    return out


def delete_set(*clients: tuple[int, list[tuple[int, int]]]) -> bytes:
    out = vu(len(clients))
    for client, ranges in clients:
        out += vu(client) + vu(len(ranges))
        for clock, length in ranges:
            out += vu(clock) + vu(length)
    return out


def root_item(ref: int, name: str, content: bytes, key: str | None = None) -> bytes:
    """An item with no origins whose parent is the root type ``name``."""
    info = ref | (0x20 if key is not None else 0)
    return bytes([info]) + vu(1) + vs(name) + (vs(key) if key is not None else b"") + content


ANY_EVERY_TAG = (
    vu(12)
    + b"\x7f"  # undefined
    + b"\x7e"  # null
    + b"\x7d"
    + vi(-1234567)  # varint, 4 bytes
    + b"\x7c\x3f\xc0\x00\x00"  # float32 1.5
    + b"\x7b\x40\x09\x21\xfb\x54\x44\x2d\x18"  # float64 pi
    + b"\x7a\x80\x00\x00\x00\x00\x00\x00\x01"  # bigint64 -2**63 + 1
    + b"\x79"  # false
    + b"\x78"  # true
    + b"\x77"
    + vs("żółw 🐢")  # string
    + b"\x76"
    + vu(1)
    + vs("k")
    + b"\x75"
    + vu(2)
    + b"\x7d"
    + vi(63)
    + b"\x7d"
    + vi(64)  # object {k: [63, 64]}
    + b"\x75"
    + vu(0)  # empty array
    + b"\x74"
    + vb(b"\x00\x80\xff")  # Uint8Array
)

# --- pycrdt-built updates ----------------------------------------------------------------


def byte_index(text: Text, chars: int) -> int:
    """pycrdt Text indexes UTF-8 bytes; only character boundaries are safe."""
    return len(str(text)[:chars].encode())


def v_map_scalars() -> bytes:
    doc: Doc[Any] = Doc(client_id=1)
    m = doc.get("m", type=Map)
    m["s"] = "hello"
    m["n"] = 42
    m["f"] = -0.1
    m["t"] = True
    m["z"] = None
    m["b"] = b"\x00\xff"
    m["l"] = [1, "two", [3.5, False]]
    m["d"] = {"only": "key"}
    return doc.get_update()


def v_text_unicode() -> bytes:
    doc: Doc[Any] = Doc(client_id=2)
    t = doc.get("t", type=Text)
    t.insert(0, "héllo wörld")
    t.insert(byte_index(t, 5), " 😀")
    t.insert(byte_index(t, 0), "Ж")
    t.insert(byte_index(t, len(str(t))), "!")
    return doc.get_update()


def v_nested_types() -> bytes:
    doc: Doc[Any] = Doc(client_id=300)
    a = doc.get("a", type=Array)
    m = doc.get("m", type=Map)
    a.append(Map({"k": "v"}))
    a.append(Array([1, 2]))
    a.append(Text("inner"))
    m["sub"] = Map({"deep": Array(["x"])})
    return doc.get_update()


def v_gc_and_deletes() -> bytes:
    doc: Doc[Any] = Doc(client_id=4)
    m = doc.get("m", type=Map)
    a = doc.get("a", type=Array)
    t = doc.get("t", type=Text)
    m["nested"] = Map({"x": 1})
    m["nested"] = "replaced"
    a.extend([1, 2, 3, 4, 5])
    del a[1:3]
    t += "abcdef"
    del t[2:4]
    return doc.get_update()


def v_two_clients() -> bytes:
    left: Doc[Any] = Doc(client_id=10)
    right: Doc[Any] = Doc(client_id=20)
    left.get("t", type=Text).insert(0, "left")
    right.get("t", type=Text).insert(0, "right")
    left.apply_update(right.get_update())
    right.apply_update(left.get_update())
    tl = left.get("t", type=Text)
    tl.insert(byte_index(tl, 2), "<L>")
    right.apply_update(left.get_update(right.get_state()))
    return right.get_update()


def v_incremental() -> bytes:
    doc: Doc[Any] = Doc(client_id=6)
    a = doc.get("a", type=Array)
    a.extend(list(range(130)))
    before = doc.get_state()
    a.insert(65, "mid")
    a.append("end")
    return doc.get_update(before)


def v_skip() -> bytes:
    doc: Doc[Any] = Doc(client_id=7)
    t = doc.get("t", type=Text)
    t += "abc"
    first = doc.get_update()
    mid = doc.get_state()
    t += "def"
    gap_end = doc.get_state()
    t += "ghi"
    assert mid != gap_end
    return merge_updates(first, doc.get_update(gap_end))


def v_delete_only() -> bytes:
    doc: Doc[Any] = Doc(client_id=8)
    a = doc.get("a", type=Array)
    a.extend(["a", "b", "c", "d"])
    m = doc.get("m", type=Map)
    m["k"] = "v"
    before = doc.get_state()
    updates: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        updates.append(event.update)

    sub = doc.observe(keep)
    with doc.transaction():
        del a[1]
        del m["k"]
        del a[2]
    doc.unobserve(sub)
    assert doc.get_state() == before
    (update,) = updates
    return update


def v_rich_text() -> bytes:
    doc: Doc[Any] = Doc(client_id=9)
    t = doc.get("t", type=Text)
    t += "hello world"
    t.format(0, 5, {"bold": True})
    t.insert_embed(5, {"img": "x.png"})
    return doc.get_update()


def v_xml() -> bytes:
    doc: Doc[Any] = Doc(client_id=11)
    f = doc.get("x", type=XmlFragment)
    f.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi")]))
    return doc.get_update()


def v_transaction_event() -> bytes:
    doc: Doc[Any] = Doc(client_id=12)
    m = doc.get("m", type=Map)
    m["k"] = "first"
    updates: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        updates.append(event.update)

    sub = doc.observe(keep)
    m["k"] = "second"
    doc.unobserve(sub)
    (update,) = updates
    return update


def v_handmade() -> bytes:
    # Client 5 inserts a map type under root "r", a key under it (parent id), an item whose
    # origin is another client's, Binary and Doc content, and an Any with every tag.
    structs = [
        root_item(7, "r", b"\x01"),  # Type: Map
        b"\x28" + vu(0) + vu(5) + vu(0) + vs("key") + vu(1) + b"\x78",  # parent (5, 0)
        bytes([0x88]) + vu(99) + vu(3) + vu(1) + b"\x7e",  # origin (99, 3)
        root_item(3, "bin", vb(b"\x00\x01\xfe")),
        root_item(9, "docs", vs("sub-guid") + b"\x76" + vu(1) + vs("gc") + b"\x78", key="sub"),
        root_item(8, "any", ANY_EVERY_TAG),
    ]
    return struct_section((5, 0, structs)) + delete_set((99, [(0, 2), (5, 1)]))


VALID: dict[str, tuple[str, Callable[[], bytes]]] = {
    "01-map-scalars": (
        "Map entries with scalar, bytes, list and one-key dict values.",
        v_map_scalars,
    ),
    "02-text-unicode": (
        "Text with non-ASCII and an emoji (surrogate pair): item lengths in UTF-16 units.",
        v_text_unicode,
    ),
    "03-nested-types": ("Nested Map/Array/Text types: parents given by id.", v_nested_types),
    "04-gc-and-deletes": (
        "An overwritten nested map (its contents GC'd), array and text deletes.",
        v_gc_and_deletes,
    ),
    "05-two-clients": ("Two clients' concurrent text edits, merged.", v_two_clients),
    "06-incremental": (
        "get_update(state): group starting past 0, origins before the group.",
        v_incremental,
    ),
    "07-skip": ("merge_updates over a gap: a Skip struct.", v_skip),
    "08-delete-only": ("A transaction that only deletes (TransactionEvent.update).", v_delete_only),
    "09-rich-text": ("Text formatting and an embed: Format and Embed content.", v_rich_text),
    "10-xml": ("XmlFragment / XmlElement (with a name) / XmlText.", v_xml),
    "11-transaction-event": (
        "TransactionEvent.update of a map overwrite: origin and delete of the old value.",
        v_transaction_event,
    ),
    "12-handmade": (
        "Hand-built: parent ids, a foreign origin, Binary, Doc, and every lib0 Any tag.",
        v_handmade,
    ),
}

# --- invalid updates -----------------------------------------------------------------------

_OK_ITEM = root_item(8, "m", vu(1) + b"\x78", key="k")
_OK = struct_section((5, 0, [_OK_ITEM])) + delete_set()


def _nested_arrays(depth: int) -> bytes:
    return vu(1) + b"\x75\x01" * (depth - 1) + b"\x75\x00"


INVALID: list[tuple[str, bytes]] = [
    ("trailing byte after the delete set", _OK + b"\x00"),
    ("truncated: last byte missing", _OK[:-1]),
    ("empty input", b""),
    (
        "JSON content (ref 2), read differently by Yjs and yrs",
        struct_section((5, 0, [root_item(2, "m", vu(1) + vs("1"))])) + delete_set(),
    ),
    (
        "XmlHook type ref (5), read differently by Yjs and yrs",
        struct_section((5, 0, [root_item(7, "m", b"\x05" + vs("h"))])) + delete_set(),
    ),
    ("zero-length delete range", struct_section() + delete_set((5, [(0, 0)]))),
    ("duplicate client group", struct_section((5, 0, [_OK_ITEM]), (5, 1, [_OK_ITEM])) + b"\x00"),
    ("duplicate delete-set client", struct_section() + delete_set((5, [(0, 1)]), (5, [(2, 1)]))),
    (
        "Any nested 65 deep (MAX_ANY_DEPTH is 64)",
        struct_section((5, 0, [root_item(8, "m", _nested_arrays(65))])) + delete_set(),
    ),
    ("struct count above MAX_UPDATE_STRUCTS", vu(1) + vu(2**32 - 1) + vu(5) + vu(0) + b"\x00"),
    ("struct count beyond the bytes left", vu(1) + vu(1000) + vu(5) + vu(0) + _OK_ITEM + b"\x00"),
    (
        "Any count beyond the bytes left",
        struct_section((5, 0, [root_item(8, "m", vu(100) + b"\x78")])),
    ),
    (
        "invalid UTF-8 in an Any string",
        struct_section((5, 0, [root_item(8, "m", vu(1) + b"\x77\x02\xc3\x28")])) + delete_set(),
    ),
    (
        "group clock past 2**32 - 1 (yrs reads clocks as u32)",
        struct_section((5, 2**32, [_OK_ITEM])) + delete_set(),
    ),
    ("non-canonical varuint (0x80 0x00 for 0)", b"\x01\x01\x05\x80\x00" + _OK_ITEM + b"\x00"),
    ("varuint longer than 8 bytes", b"\x00\x01" + b"\xff" * 8 + b"\x01\x00"),
    (
        "parent id naming a String item of the same update",
        struct_section(
            (
                5,
                0,
                [
                    root_item(4, "t", vs("ab")),
                    b"\x28" + vu(0) + vu(5) + vu(0) + vs("k") + b"\x01\x78",
                ],
            )
        )
        + delete_set(),
    ),
    (
        "Embed content that is not JSON",
        struct_section((5, 0, [root_item(5, "t", vs("{img: 1}"))])) + delete_set(),
    ),
    ("GC struct with flag bits", struct_section((5, 0, [b"\x80\x01"])) + delete_set()),
    ("empty string content", struct_section((5, 0, [root_item(4, "t", vs(""))])) + delete_set()),
    (
        "client group with no structs",
        vu(2) + vu(0) + vu(5) + vu(0) + vu(1) + vu(6) + vu(0) + _OK_ITEM + delete_set(),
    ),
]

# --- output ---------------------------------------------------------------------------------


def as_json(decoded: DecodedUpdate) -> dict[str, Any]:
    """The expected-value part of a vector."""
    assert decoded.items is not None
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
        "ref_ends": {str(c): e for c, e in sorted(decoded.ref_ends.items())},
        "deletes": [list(d) for d in decoded.deletes],
        "items": [
            {
                "client": i.client,
                "clock": i.clock,
                "length": i.length,
                "kind": i.kind,
                "content": i.content,
                "parent": list(i.parent) if isinstance(i.parent, tuple) else i.parent,
                "key": i.key,
                "origin": list(i.origin) if i.origin else None,
                "right_origin": list(i.right_origin) if i.right_origin else None,
            }
            for i in decoded.items
        ],
    }


def _state_vector(state: bytes) -> dict[int, int]:
    pos = 0

    def read() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            b = state[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    return {read(): read() for _ in range(read())}


def _sanity(name: str, update: bytes, decoded: DecodedUpdate) -> None:
    doc: Doc[Any] = Doc(client_id=424242)
    doc.apply_update(update)
    if name == "12-handmade":  # references client 99, which it does not contain
        return
    sv = _state_vector(doc.get_state())
    for g in decoded.groups:
        if g.clock == 0 and not g.has_skip:
            assert sv.get(g.client) == g.length, (name, g, sv)


def build() -> dict[str, dict[str, Any]]:
    """Every vector file's content, by file stem."""
    files: dict[str, dict[str, Any]] = {}
    for name, (description, make) in VALID.items():
        update = make()
        decoded = decode_update(update, detail=True)
        _sanity(name, update, decoded)
        files[name] = {"description": description, "update_hex": update.hex(), **as_json(decoded)}
    vectors = []
    for description, update in INVALID:
        try:
            decode_update(update)
        except UpdateDecodeError as exc:
            what, _, offset = str(exc).rpartition(" at byte ")
            vectors.append(
                {
                    "description": description,
                    "update_hex": update.hex(),
                    "error": what,
                    "offset": int(offset),
                }
            )
        else:
            raise AssertionError(f"invalid vector decodes: {description}")
    files["invalid"] = {
        "description": (
            "Updates that must be refused; error and offset are what this decoder reports."
        ),
        "vectors": vectors,
    }
    return files


def main() -> None:
    for stem, content in build().items():
        path = HERE / f"{stem}.json"
        path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
