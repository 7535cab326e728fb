"""Delete-set arithmetic used when sealing a batch (its own deletes only)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt_state import lib0

Range = tuple[int, int, int]
ranges = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(1, 8)), max_size=12)


def cells(value: list[Range]) -> set[tuple[int, int]]:
    return {(c, x) for c, k, n in value for x in range(k, k + n)}


@given(ranges, ranges)
def test_subtraction_is_set_difference(after: list[Range], before: list[Range]) -> None:
    result = lib0.subtract_delete_sets(after, before)
    flat = [(c, k, n) for c, rs in result.items() for k, n in rs]
    assert all(n > 0 for _, _, n in flat)
    assert cells(flat) == cells(after) - cells(before)


@given(ranges)
def test_delete_set_encoding_round_trips(value: list[Range]) -> None:
    from crdt_state.yupdate import decode_update

    grouped = lib0.subtract_delete_sets(value, [])
    decoded = decode_update(b"\x00" + lib0.encode_delete_set(grouped)).deletes
    assert cells(list(decoded)) == cells(value)
