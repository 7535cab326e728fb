"""Storage behind a small interface with explicit commit points."""

from crdt_state.storage.base import EnvelopeRow, Store

__all__ = ["EnvelopeRow", "Store"]
