"""Plain-Python views of replicated documents."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from crdt_state.schema import ROOTS, kind_of


def doc_to_py(ydoc: Doc[Any], name: str) -> dict[str, dict[str, Any]]:
    """Every schema root of ``ydoc`` as plain Python (``{}`` for an empty root)."""
    return {root: ydoc.get(root, type=Map).to_py() or {} for root in ROOTS[kind_of(name)]}


def docs_to_py(docs: dict[str, Doc[Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``doc_to_py`` of every document, by name."""
    return {name: doc_to_py(ydoc, name) for name, ydoc in sorted(docs.items())}
