"""Tests of the Yjs v1 update decoder, against pycrdt and the vectors in tests/vectors/yjs."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, TransactionEvent, merge_updates

from crdt_state import yupdate
from crdt_state.errors import StateError
from crdt_state.yupdate import DecodedUpdate, UpdateDecodeError, decode_update
from mesh.errors import AgentmeshError
from mesh.limits import MAX_ANY_DEPTH

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "yjs"
VALID_FILES = sorted(p for p in VECTORS.glob("*.json") if p.stem != "invalid")
INVALID = json.loads((VECTORS / "invalid.json").read_text())["vectors"]
VALID_UPDATES = [bytes.fromhex(json.loads(p.read_text())["update_hex"]) for p in VALID_FILES]

# --- lib0 writing for hand-built updates ----------------------------------------------------


def vu(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vs(s: str) -> bytes:
    b = s.encode()
    return vu(len(b)) + b


def update(groups: list[tuple[int, int, list[bytes]]], deletes: bytes = b"\x00") -> bytes:
    out = vu(len(groups))
    for client, clock, structs in groups:
        out += vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)
    return out + deletes


def root_any(name: str = "m", key: str | None = "k", value: bytes = b"\x78") -> bytes:
    """An Any item (one value, default true) under root ``name``."""
    info = 8 | (0x20 if key is not None else 0)
    return (
        bytes([info]) + b"\x01" + vs(name) + (vs(key) if key is not None else b"") + b"\x01" + value
    )


def with_origin(client: int, clock: int, flag: int = 0x80) -> bytes:
    """An Any item whose origin (or, with flag 0x40, right origin) is (client, clock)."""
    return bytes([flag | 8]) + vu(client) + vu(clock) + b"\x01\x78"


def with_parent(client: int, clock: int) -> bytes:
    """A map entry whose parent is the type item (client, clock)."""
    return b"\x28\x00" + vu(client) + vu(clock) + vs("k") + b"\x01\x78"


TYPE_MAP = b"\x07\x01" + vs("r") + b"\x01"

# --- pycrdt helpers -------------------------------------------------------------------------


def state_vector(doc: Doc[Any]) -> dict[int, int]:
    data = doc.get_state()
    pos = 0

    def read() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    return {read(): read() for _ in range(read())}


def grown(before: dict[int, int], after: dict[int, int]) -> dict[int, tuple[int, int]]:
    """(first clock, length) of what each client added between two state vectors."""
    return {
        c: (before.get(c, 0), end - before.get(c, 0))
        for c, end in after.items()
        if end > before.get(c, 0)
    }


def group_ranges(decoded: DecodedUpdate) -> dict[int, tuple[int, int]]:
    return {g.client: (g.clock, g.length) for g in decoded.groups}


def merged(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for client, clock, length in sorted(ranges):
        if out and out[-1][0] == client and clock <= out[-1][1] + out[-1][2]:
            c, k, ln = out[-1]
            out[-1] = (c, k, max(ln, clock + length - k))
        else:
            out.append((client, clock, length))
    return out


def checked(data: bytes) -> DecodedUpdate:
    """Decode with and without detail; check the two agree and the items tile the groups."""
    fast = decode_update(data)
    full = decode_update(data, detail=True)
    assert fast.items is None
    assert full.items is not None
    assert (fast.groups, fast.ref_ends, fast.deletes) == (full.groups, full.ref_ends, full.deletes)
    items = iter(full.items)
    for group in full.groups:
        clock = group.clock
        kinds = set()
        while clock < group.clock + group.length:
            item = next(items)
            assert (item.client, item.clock) == (group.client, clock)
            assert item.length > 0
            kinds.add(item.kind)
            clock += item.length
        assert clock == group.clock + group.length
        assert group.has_gc == ("gc" in kinds)
        assert group.has_skip == ("skip" in kinds)
    assert next(items, None) is None
    for _, clock, length in full.deletes:
        assert length > 0
        assert clock >= 0
    return full


def outcome(data: bytes, detail: bool) -> str | DecodedUpdate:
    try:
        return decode_update(data, detail=detail)
    except UpdateDecodeError as exc:
        return str(exc)


def decode_or_refuse(data: bytes) -> None:
    """Only UpdateDecodeError may escape, and detail must not change the verdict."""
    fast, full = outcome(data, False), outcome(data, True)
    if isinstance(fast, str) or isinstance(full, str):
        assert fast == full
    else:
        assert (fast.groups, fast.ref_ends, fast.deletes) == (
            full.groups,
            full.ref_ends,
            full.deletes,
        )


# --- vectors --------------------------------------------------------------------------------


def as_json(decoded: DecodedUpdate) -> dict[str, Any]:
    assert decoded.items is not None

    def pair(value: tuple[int, int] | None) -> list[int] | None:
        return None if value is None else [value[0], value[1]]

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
        "ref_ends": {str(c): e for c, e in decoded.ref_ends.items()},
        "deletes": [[c, k, n] for c, k, n in decoded.deletes],
        "items": [
            {
                "client": i.client,
                "clock": i.clock,
                "length": i.length,
                "kind": i.kind,
                "content": i.content,
                "parent": pair(i.parent) if isinstance(i.parent, tuple) else i.parent,
                "key": i.key,
                "origin": pair(i.origin),
                "right_origin": pair(i.right_origin),
            }
            for i in decoded.items
        ],
    }


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_valid_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    decoded = checked(bytes.fromhex(vector.pop("update_hex")))
    vector.pop("description")
    assert as_json(decoded) == vector


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["description"])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["update_hex"])
    for detail in (False, True):
        with pytest.raises(UpdateDecodeError) as info:
            decode_update(data, detail=detail)
        assert str(info.value) == f"{vector['error']} at byte {vector['offset']}"


def test_vectors_match_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("yjs_vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    on_disk = {p.stem: json.loads(p.read_text()) for p in VECTORS.glob("*.json")}
    assert built == on_disk


def test_vectors_cover_every_kind() -> None:
    kinds = set()
    contents = set()
    for path in VALID_FILES:
        for item in json.loads(path.read_text())["items"]:
            kinds.add(item["kind"])
            contents.add(item["content"])
    assert kinds == {"item", "gc", "skip"}
    assert contents == {"", "deleted", "binary", "string", "embed", "format", "type", "any", "doc"}


# --- exact decodes of known scenarios ---------------------------------------------------------


def transaction_updates(doc: Doc[Any]) -> tuple[list[bytes], Callable[[], None]]:
    updates: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        updates.append(event.update)

    sub = doc.observe(keep)
    return updates, lambda: doc.unobserve(sub)


def test_map_overwrite_deletes_the_old_value() -> None:
    doc: Doc[Any] = Doc(client_id=77)
    m = doc.get("m", type=Map)
    m["k"] = "a"
    updates, stop = transaction_updates(doc)
    m["k"] = "b"
    stop()
    decoded = checked(updates[0])
    assert decoded.groups == (yupdate.StructGroup(77, 1, 1, False, False),)
    assert decoded.deletes == ((77, 0, 1),)
    assert decoded.ref_ends == {77: 1}  # origin: the old value, before the group
    assert decoded.items is not None
    assert decoded.items[0].origin == (77, 0)
    assert decoded.items[0].parent is None and decoded.items[0].key is None


def test_text_delete_of_an_emoji_counts_utf16_units() -> None:
    doc: Doc[Any] = Doc(client_id=78)
    t = doc.get("t", type=Text)
    t += "a😀b"
    assert state_vector(doc) == {78: 4}
    updates, stop = transaction_updates(doc)
    del t[1:5]  # pycrdt indexes UTF-8 bytes
    stop()
    assert str(t) == "ab"
    decoded = checked(updates[0])
    assert decoded.groups == ()
    assert decoded.deletes == ((78, 1, 2),)


def test_deleting_a_nested_type_deletes_its_contents() -> None:
    doc: Doc[Any] = Doc(client_id=79)
    m = doc.get("m", type=Map)
    m["x"] = Map({"y": Array([1, 2])})  # clocks 0 (map), 1 (y), 2-3 (values)
    updates, stop = transaction_updates(doc)
    m["x"] = 1
    stop()
    assert checked(updates[0]).deletes == ((79, 0, 4),)
    full = checked(doc.get_update())
    assert full.deletes == ((79, 0, 4),)
    assert full.groups[0].has_gc  # pycrdt collects the deleted map's contents


def test_array_range_delete() -> None:
    doc: Doc[Any] = Doc(client_id=80)
    a = doc.get("a", type=Array)
    a.extend([1, 2, 3, 4, 5])
    updates, stop = transaction_updates(doc)
    del a[1:3]
    stop()
    assert checked(updates[0]).deletes == ((80, 1, 2),)


def test_merge_updates_over_a_gap_makes_a_skip() -> None:
    doc: Doc[Any] = Doc(client_id=81)
    t = doc.get("t", type=Text)
    t += "abc"
    first = doc.get_update()
    t += "def"
    gap_end = doc.get_state()
    t += "ghi"
    decoded = checked(merge_updates(first, doc.get_update(gap_end)))
    assert decoded.groups == (yupdate.StructGroup(81, 0, 9, True, False),)
    assert decoded.ref_ends == {81: 6}  # origin (81, 5) lies in the skipped range
    assert decoded.items is not None
    assert [i.kind for i in decoded.items] == ["item", "skip", "item"]


def test_empty_update() -> None:
    doc: Doc[Any] = Doc(client_id=82)
    assert doc.get_update() == b"\x00\x00"
    assert checked(b"\x00\x00") == DecodedUpdate((), {}, (), ())


# --- ref_ends --------------------------------------------------------------------------------


def test_ref_to_a_lower_clock_of_the_group_is_not_recorded() -> None:
    data = update([(5, 0, [root_any(), with_origin(5, 0), with_origin(5, 1, 0x40)])])
    assert decode_update(data).ref_ends == {}


def test_ref_to_the_item_itself_or_later_is_recorded() -> None:
    assert decode_update(update([(5, 0, [with_origin(5, 0)])])).ref_ends == {5: 1}
    data = update([(5, 0, [root_any(), with_origin(5, 7, 0x40)])])
    assert decode_update(data).ref_ends == {5: 8}


def test_ref_below_the_group_start_is_recorded() -> None:
    data = update([(5, 10, [with_origin(5, 3), with_origin(5, 10)])])
    assert decode_update(data).ref_ends == {5: 4}


def test_refs_to_other_clients_keep_the_highest_end() -> None:
    data = update(
        [
            (5, 0, [with_origin(9, 4), with_origin(9, 2, 0x40), with_origin(8, 0)]),
            (9, 0, [root_any()]),
        ]
    )
    assert decode_update(data).ref_ends == {9: 5, 8: 1}


def test_parent_id_refs() -> None:
    inside = update([(5, 0, [b"\x07\x01" + vs("r") + b"\x01", with_parent(5, 0)])])
    assert decode_update(inside).ref_ends == {}
    outside = update([(5, 0, [with_parent(6, 12)])])
    assert decode_update(outside).ref_ends == {6: 13}
    decoded = decode_update(outside, detail=True)
    assert decoded.items is not None
    assert decoded.items[0].parent == (6, 12)
    assert decoded.items[0].key == "k"


def test_parent_inside_the_group_must_be_a_type_or_deleted() -> None:
    gc_then_child = update([(5, 0, [b"\x00\x02", with_parent(5, 1)])])
    assert decode_update(gc_then_child).groups[0].has_gc
    deleted_then_child = update(
        [(5, 0, [b"\x21\x01" + vs("m") + vs("k") + b"\x03", with_parent(5, 2)])]
    )
    assert decode_update(deleted_then_child).groups[0].length == 4
    string_then_child = update([(5, 0, [b"\x04\x01" + vs("t") + vs("ab"), with_parent(5, 0)])])
    with pytest.raises(UpdateDecodeError, match="parent is not a type"):
        decode_update(string_then_child)


# --- hostile input ---------------------------------------------------------------------------


def some_pycrdt_updates() -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=123456789)
    m = doc.get("m", type=Map)
    t = doc.get("t", type=Text)
    a = doc.get("a", type=Array)
    m["k"] = {"x": [1, 2.5, None, True, "s"], "é": b"\x01"}
    t += "héllo😀"
    a.extend([1, "two", Map({"z": 1}), Array([1])])
    del a[0]
    m["k"] = "over"
    return [doc.get_update(), *VALID_UPDATES]


@pytest.mark.parametrize("data", some_pycrdt_updates(), ids=lambda d: f"{len(d)}B")
def test_every_truncation_is_refused_cleanly(data: bytes) -> None:
    for end in range(len(data)):
        decode_or_refuse(data[:end])


@pytest.mark.parametrize("data", VALID_UPDATES, ids=lambda d: f"{len(d)}B")
def test_trailing_garbage_is_refused(data: bytes) -> None:
    for tail in (b"\x00", b"\xff", data):
        with pytest.raises(UpdateDecodeError, match="trailing bytes"):
            decode_update(data + tail)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID_UPDATES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_byte_flips_decode_or_are_refused(data: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(data)
    for where, value in flips:
        mutated[where % len(mutated)] = value
    decode_or_refuse(bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID_UPDATES), st.integers(0, 10_000), st.binary(min_size=1, max_size=9))
def test_inserted_bytes_decode_or_are_refused(data: bytes, where: int, extra: bytes) -> None:
    at = where % (len(data) + 1)
    decode_or_refuse(data[:at] + extra + data[at:])
    decode_or_refuse(data[:at] + data[at + len(extra) :])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_are_refused(data: bytes) -> None:
    decode_or_refuse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID_UPDATES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_accepted_mutations_mean_the_same_to_pycrdt(
    data: bytes, flips: list[tuple[int, int]]
) -> None:
    """What we accept, yrs reads the same way: a self-contained update integrates exactly."""
    mutated = bytearray(data)
    for where, value in flips:
        mutated[where % len(mutated)] = value
    try:
        decoded = decode_update(bytes(mutated))
    except UpdateDecodeError:
        return
    doc: Doc[Any] = Doc(client_id=1)
    try:
        doc.apply_update(bytes(mutated))
    except RuntimeError:
        # Integration errors need document state we do not have (a parent id outside the
        # update that names a non-type); a self-contained update must not raise them.
        assert decoded.ref_ends or any(g.has_skip or g.clock for g in decoded.groups)
        return
    if decoded.ref_ends or any(g.has_skip or g.clock for g in decoded.groups):
        return
    assert state_vector(doc) == {g.client: g.length for g in decoded.groups}


def test_huge_declared_counts_are_refused_before_looping() -> None:
    big = vu(2**32 - 1)
    cases = [
        big,  # client groups
        b"\x01" + vu(1_000_000) + b"\x05\x00\x08",  # structs
        update([(5, 0, [b"\x08\x01\x01m" + big])]),  # Any values
        update([(5, 0, [b"\x08\x01\x01m\x01\x75" + big])]),  # Any array
        update([(5, 0, [b"\x08\x01\x01m\x01\x76" + vu(1000) + b"\x00"])]),  # Any object
        update([(5, 0, [b"\x04\x01\x01t" + vu(2**31)])]),  # string bytes
        update([(5, 0, [b"\x03\x01\x01b" + vu(2**31)])]),  # binary bytes
        b"\x00" + big,  # delete-set clients
        b"\x00\x01\x05" + vu(1_000_000) + b"\x00\x01",  # delete ranges
    ]
    for data in cases:
        with pytest.raises(UpdateDecodeError):
            decode_update(data)


def test_lengths_and_clocks_are_bounded() -> None:
    near = 2**32 - 2
    assert decode_update(update([(5, near, [root_any()])])).groups[0].length == 1
    with pytest.raises(UpdateDecodeError, match="clock out of range"):
        decode_update(update([(5, near, [root_any(), root_any()])]))
    with pytest.raises(UpdateDecodeError, match="out of range"):
        decode_update(b"\x00\x01\x05\x01" + vu(near) + vu(2))
    with pytest.raises(UpdateDecodeError, match="out of range"):
        decode_update(update([(2**53, 0, [root_any()])]))
    assert decode_update(update([(2**53 - 1, 0, [root_any()])])).groups[0].client == 2**53 - 1


def test_zero_length_runs_are_refused() -> None:
    for struct in (
        b"\x00\x00",
        b"\x0a\x00",
        b"\x01\x01\x01m\x00",
        root_any(value=b"")[:-1] + b"\x00",
    ):
        with pytest.raises(UpdateDecodeError):
            decode_update(update([(5, 0, [struct])]))


def nested_arrays(depth: int) -> bytes:
    return update([(5, 0, [b"\x08\x01\x01m\x01" + b"\x75\x01" * (depth - 1) + b"\x75\x00"])])


def test_any_depth_limit() -> None:
    assert decode_update(nested_arrays(MAX_ANY_DEPTH)).groups[0].length == 1
    with pytest.raises(UpdateDecodeError, match="nested too deeply"):
        decode_update(nested_arrays(MAX_ANY_DEPTH + 1))
    with pytest.raises(UpdateDecodeError, match="nested too deeply"):
        decode_update(nested_arrays(100_000))
    objects = b"\x76\x01\x01k" * 100_000 + b"\x7e"
    with pytest.raises(UpdateDecodeError, match="nested too deeply"):
        decode_update(update([(5, 0, [b"\x08\x01\x01m\x01" + objects])]))


def test_any_values_of_every_tag() -> None:
    values = [
        b"\x7f",
        b"\x7e",
        b"\x7d\x00",
        b"\x7d\x40",  # -0
        b"\x7d\xff\xff\xff\xff\xff\xff\xff\x7f",  # -(2**55 - 1) > MAX_CLOCK
        b"\x7c\x00\x00\x80\x7f",
        b"\x7b" + b"\xff" * 8,
        b"\x7a" + b"\x80" * 8,
        b"\x79",
        b"\x78",
        b"\x77" + vs("✓"),
        b"\x76\x00",
        b"\x75\x00",
        b"\x74\x02\xff\xfe",
    ]
    for i, value in enumerate(values):
        data = update([(5, 0, [root_any(value=value)])])
        if i == 4:
            with pytest.raises(UpdateDecodeError, match="varint out of range"):
                decode_update(data)
        else:
            assert decode_update(data).groups[0].length == 1
    for tag in (0x73, 0x00, 0x80, 0xFF):
        with pytest.raises(UpdateDecodeError, match="unknown Any tag"):
            decode_update(update([(5, 0, [root_any(value=bytes([tag]))])]))


@pytest.mark.parametrize(
    "text",
    ["plain", "é", "😀", "a😀b€", "\u0800\uffff\U00010000\U0010ffff", "x" * 200 + "é" * 100],
)
def test_string_length_is_utf16_units(text: str) -> None:
    data = update([(5, 0, [b"\x04\x01" + vs("t") + vs(text)])])
    assert decode_update(data).groups[0].length == len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"a\x80"],
)
def test_invalid_utf8_is_refused_wherever_it_is(bad: bytes) -> None:
    raw = vu(len(bad)) + bad
    places = [
        b"\x04\x01" + vs("t") + raw,  # String content
        b"\x08\x01" + raw + b"\x01\x78",  # root name
        b"\x28\x01" + vs("m") + raw + b"\x01\x78",  # map key
        b"\x08\x01" + vs("m") + b"\x01\x77" + raw,  # Any string
        b"\x08\x01" + vs("m") + b"\x01\x76\x01" + raw + b"\x78",  # Any object key
        b"\x08\x01" + vs("m") + b"\x02\x7b" + b"\x80" * 8 + b"\x77" + raw,  # after a number
        b"\x05\x01" + vs("t") + raw,  # Embed
        b"\x06\x01" + vs("t") + raw + vs("true"),  # Format key
        b"\x07\x01" + vs("x") + b"\x03" + raw,  # XmlElement name
        b"\x09\x01" + vs("m") + raw + b"\x7e",  # Doc guid
    ]
    for struct in places:
        for detail in (False, True):
            with pytest.raises(UpdateDecodeError, match="invalid UTF-8"):
                decode_update(update([(5, 0, [struct])]), detail=detail)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("true", True),
        ('{"img": "x.png", "n": [1, -0, 1.5e308, null]}', True),
        ('"\\ud83d\\ude00 \\u0000"', True),
        ("[" * MAX_ANY_DEPTH + "]" * MAX_ANY_DEPTH, True),
        ("[" * (MAX_ANY_DEPTH + 1) + "]" * (MAX_ANY_DEPTH + 1), False),
        ("[" * 100_000, False),
        ("", False),
        ("{", False),
        ("NaN", False),
        ("-Infinity", False),
        ("1e400", False),
        ("1" * 400, False),
        ('"\\ud800"', False),
        ("\ufeff1", False),
        ('"\x01"', False),
        ("1 2", False),
        ("undefined", False),
    ],
)
def test_embed_and_format_json_text(text: str, ok: bool) -> None:
    for struct in (
        b"\x05\x01" + vs("t") + vs(text),
        b"\x06\x01" + vs("t") + vs("bold") + vs(text),
    ):
        data = update([(5, 0, [struct])])
        if ok:
            assert decode_update(data).groups[0].length == 1
        else:
            with pytest.raises(UpdateDecodeError, match="JSON text"):
                decode_update(data)


def test_refused_forms() -> None:
    cases = {
        "unsupported content ref": [b"\x02\x01\x01m\x01\x01x", b"\x0b\x01\x01m\x01", b"\x14"],
        "unsupported type ref": [b"\x07\x01\x01m" + bytes([ref]) for ref in (5, 7, 9, 15, 128)],
        "flags on a GC or skip": [b"\x20\x01", b"\x4a\x01"],
        "bad parent info": [b"\x08\x02\x01m\x01\x78"],
    }
    for message, structs in cases.items():
        for struct in structs:
            with pytest.raises(UpdateDecodeError, match=message):
                decode_update(update([(5, 0, [struct, root_any()])]))


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yupdate, "MAX_UPDATE_STRUCTS", 3)
    monkeypatch.setattr(yupdate, "MAX_UPDATE_CLIENTS", 2)
    monkeypatch.setattr(yupdate, "MAX_DELETE_RANGES", 2)
    decode_update(update([(5, 0, [root_any()] * 2), (6, 0, [root_any()])]))
    with pytest.raises(UpdateDecodeError, match="too many structs"):
        decode_update(update([(5, 0, [root_any()] * 2), (6, 0, [root_any()] * 2)]))
    with pytest.raises(UpdateDecodeError, match="too many client groups"):
        decode_update(update([(5, 0, [root_any()]), (6, 0, [root_any()]), (7, 0, [root_any()])]))
    with pytest.raises(UpdateDecodeError, match="too many delete-set clients"):
        decode_update(b"\x00\x03" + b"\x05\x01\x00\x01" + b"\x06\x01\x00\x01" + b"\x07\x01\x00\x01")
    decode_update(b"\x00\x02\x05\x01\x00\x01\x06\x01\x00\x01")
    with pytest.raises(UpdateDecodeError, match="too many delete ranges"):
        decode_update(b"\x00\x02\x05\x01\x00\x01\x06\x02\x00\x01\x03\x01")


def test_input_types_and_error_hierarchy() -> None:
    assert issubclass(UpdateDecodeError, StateError)
    assert issubclass(StateError, AgentmeshError)
    data = VALID_UPDATES[0]
    assert decode_update(bytearray(data)) == decode_update(memoryview(data)) == decode_update(data)
    with pytest.raises(TypeError):
        decode_update(data.hex())  # type: ignore[arg-type]


def test_delete_set_with_an_empty_client_entry_is_accepted() -> None:
    assert decode_update(b"\x00\x01\x05\x00").deletes == ()


# --- round trips against pycrdt ----------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "ключ", "🔑"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
INDEX = st.integers(0, 50)
OPS = st.one_of(
    st.tuples(st.just("map_set"), KEYS, VALUES),
    st.tuples(
        st.just("map_set_map"), KEYS, st.dictionaries(st.text(max_size=3), VALUES, max_size=2)
    ),
    st.tuples(st.just("map_set_array"), KEYS, st.lists(VALUES, max_size=3)),
    st.tuples(st.just("map_del"), KEYS),
    st.tuples(st.just("array_insert"), INDEX, VALUES),
    st.tuples(st.just("array_insert_array"), INDEX, st.lists(VALUES, max_size=3)),
    st.tuples(st.just("array_delete"), INDEX, st.integers(1, 4)),
    st.tuples(st.just("text_insert"), INDEX, st.text(min_size=1, max_size=6)),
    st.tuples(st.just("text_delete"), INDEX, st.integers(1, 4)),
    st.tuples(st.just("nested"), KEYS, INDEX, VALUES),
)


def apply_op(doc: Doc[Any], op: tuple[Any, ...]) -> None:
    m = doc.get("m", type=Map)
    a = doc.get("a", type=Array)
    t = doc.get("t", type=Text)
    kind = op[0]
    if kind == "map_set":
        m[op[1]] = op[2]
    elif kind == "map_set_map":
        m[op[1]] = Map(op[2])
    elif kind == "map_set_array":
        m[op[1]] = Array(op[2])
    elif kind == "map_del":
        if op[1] in m:
            del m[op[1]]
    elif kind == "array_insert":
        a.insert(op[1] % (len(a) + 1), op[2])
    elif kind == "array_insert_array":
        a.insert(op[1] % (len(a) + 1), Array(op[2]))
    elif kind == "array_delete":
        if len(a):
            start = op[1] % len(a)
            del a[start : min(len(a), start + op[2])]
    elif kind in {"text_insert", "text_delete"}:
        s = str(t)
        start = op[1] % (len(s) + 1)
        at = len(s[:start].encode())  # pycrdt indexes UTF-8 bytes: stay on boundaries
        if kind == "text_insert":
            t.insert(at, op[2])
        elif start < len(s):
            del t[at : at + len(s[start : start + op[2]].encode())]
    else:  # nested: write into a nested container if the key holds one
        inner = m.get(op[1])
        if isinstance(inner, Map):
            inner[str(op[2])] = op[3]
        elif isinstance(inner, Array):
            inner.insert(op[2] % (len(inner) + 1), op[3])


def check_transaction(
    decoded: DecodedUpdate, client: int, before: dict[int, int], after: dict[int, int]
) -> None:
    assert group_ranges(decoded) == grown(before, after)
    assert all(g.client == client and not g.has_skip and not g.has_gc for g in decoded.groups)
    for c, end in decoded.ref_ends.items():  # only what existed before the transaction
        assert end <= before.get(c, 0)
    for c, clock, length in decoded.deletes:
        assert clock + length <= before.get(c, 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=25), st.integers(1, 2**53 - 1))
def test_round_trip_one_client(ops: list[tuple[Any, ...]], client: int) -> None:
    doc: Doc[Any] = Doc(client_id=client)
    updates, stop = transaction_updates(doc)
    states = [state_vector(doc)]
    for op in ops:
        count = len(updates)
        with doc.transaction():
            apply_op(doc, op)
        states.append(state_vector(doc))
        assert len(updates) - count <= 1
        if len(updates) > count:
            check_transaction(checked(updates[-1]), client, states[-2], states[-1])
        else:
            assert states[-1] == states[-2]
    stop()
    end = states[-1]

    full = checked(doc.get_update())
    assert group_ranges(full) == grown({}, end)
    assert full.ref_ends == {}
    all_deletes = [d for u in updates for d in decode_update(u).deletes]
    assert merged(list(full.deletes)) == merged(all_deletes)

    middle = states[len(states) // 2]
    part = checked(doc.get_update(doc_state(middle)))
    assert group_ranges(part) == grown(middle, end)
    for c, ref_end in part.ref_ends.items():
        assert ref_end <= end.get(c, 0)

    if updates:
        merged_update = checked(merge_updates(*updates))
        assert group_ranges(merged_update) == grown({}, end)
        replica: Doc[Any] = Doc(client_id=1)
        for u in updates:
            replica.apply_update(u)
        assert state_vector(replica) == end


def doc_state(sv: dict[int, int]) -> bytes:
    out = vu(len(sv))
    for c, clock in sv.items():
        out += vu(c) + vu(clock)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), OPS, st.booleans()), min_size=1, max_size=20))
def test_round_trip_two_clients(steps: list[tuple[bool, tuple[Any, ...], bool]]) -> None:
    docs: tuple[Doc[Any], Doc[Any]] = (Doc(client_id=1111), Doc(client_id=2_222_222_222))
    for on_second, op, sync in steps:
        doc = docs[on_second]
        with doc.transaction():
            apply_op(doc, op)
        if sync:
            sender, receiver = doc, docs[not on_second]
            have, want = state_vector(receiver), state_vector(sender)
            data = sender.get_update(receiver.get_state())
            decoded = checked(data)
            assert group_ranges(decoded) == grown(have, want)
            for c, end in decoded.ref_ends.items():
                assert end <= want.get(c, 0)
            receiver.apply_update(data)
            after = state_vector(receiver)
            assert after == {c: max(have.get(c, 0), want.get(c, 0)) for c in have | want}
    for doc in docs:
        full = checked(doc.get_update())
        assert group_ranges(full) == grown({}, state_vector(doc))
        for c, end in full.ref_ends.items():  # cross-client refs, all inside the update
            assert end <= state_vector(doc)[c]


# --- the record fast path (_skip_flat_object) against the general walk -----------------------

_FLAT_VALUES = st.one_of(
    st.text(max_size=140),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.integers(-(2**60), 2**60),
)


def _verdict(data: bytes) -> str | tuple[Any, ...]:
    try:
        decoded = decode_update(data, roots=frozenset({b"m"}))
    except UpdateDecodeError:
        return "refused"
    return (decoded.groups, decoded.ref_ends, decoded.deletes)


def _both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    fast = _verdict(data)
    with monkeypatch.context() as patched:
        patched.setattr(yupdate, "_skip_flat_object", lambda data, pos, n: -1)
        general = _verdict(data)
    return fast, general


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(st.text(max_size=140), _FLAT_VALUES, max_size=8),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    st.integers(0, 40),
)
def test_the_record_fast_path_agrees_with_the_general_walk(
    monkeypatch: pytest.MonkeyPatch,
    record: dict[str, Any],
    flips: list[tuple[int, int]],
    cut: int,
) -> None:
    doc: Doc[Any] = Doc(client_id=7)
    doc.get("m", type=Map)["k"] = record
    data = doc.get_update()
    fast, general = _both_ways(data, monkeypatch)
    assert fast == general != "refused"
    damaged = bytearray(data)
    for at, value in flips:
        damaged[at % len(damaged)] = value
    fast, general = _both_ways(bytes(damaged[: len(damaged) - cut]), monkeypatch)
    assert fast == general


def test_the_fast_path_refuses_bad_utf8_and_overruns() -> None:
    good = b"\x76\x01" + vs("a") + b"\x77" + vs("ok")  # {"a": "ok"}
    assert decode_update(update([(1, 0, [root_any(value=good)])]))
    for value in (
        b"\x76\x01" + vs("a") + b"\x77\x02\xff\xfe",  # a string that is not UTF-8
        b"\x76\x01\x02\xc3\x28" + b"\x78",  # a key that is not UTF-8
        b"\x76\x02" + vs("a") + b"\x78",  # one entry short
        b"\x76\x01" + vs("a") + b"\x77\x05ab",  # a string past the end
        b"\x76\x01" + vs("a") + b"\x7b\x00",  # a float64 past the end
    ):
        with pytest.raises(UpdateDecodeError):
            decode_update(update([(1, 0, [root_any(value=value)])], deletes=b""))
