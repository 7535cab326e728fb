"""Record ids: time-sortable, unique, and in order within one writer's millisecond."""

from __future__ import annotations

import itertools
import re

from nodes.app import MAX_ID_BYTES, acceptable_id, finite_int, new_id


def test_ids_made_in_one_millisecond_sort_in_the_order_they_were_made() -> None:
    ids = [new_id(1_700_000_000_000) for _ in range(300)]
    assert all(re.fullmatch(r"\d{13}-[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # In order, except across the 16-bit counter's wrap (at most once in 300).
    descents = sum(1 for a, b in itertools.pairwise(ids) if b < a)
    assert descents <= 1
    assert new_id(1_700_000_000_001) > max(ids)  # a later millisecond sorts after
    assert acceptable_id(ids[0]) and len(ids[0].encode()) <= MAX_ID_BYTES


def test_finite_int_reads_only_finite_numbers() -> None:
    assert finite_int(5) == 5 and finite_int(5.0) == 5
    for bad in (True, None, "5", float("inf"), float("-inf"), float("nan")):
        assert finite_int(bad) is None
