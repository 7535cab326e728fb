"""Node tests: no subprocess outlives its test, pass or fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.nodes.processes import kill_leftovers


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()
