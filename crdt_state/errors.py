"""Errors of the replicated state layer."""

from __future__ import annotations

from mesh.errors import AgentmeshError


class StateError(AgentmeshError):
    """Base of errors about documents, envelopes and storage."""


class UpdateDecodeError(StateError):
    """A Yjs v1 update is malformed or exceeds a decoder limit."""


class UnknownDocument(StateError):
    """A document name is not part of the schema."""


class EnvelopeRejected(StateError):
    """An envelope fails a receive check and is refused for good."""


class MalformedEnvelope(EnvelopeRejected):
    """An envelope does not decode, is not canonical, or is too large."""


class BadEnvelopeSignature(EnvelopeRejected):
    """An envelope's signature does not verify."""


class NotPermitted(EnvelopeRejected):
    """The author lacks the capability to write this document."""


class CutOff(EnvelopeRejected):
    """The author's chain was cut off by a revocation or quarantine."""


class ForkDetected(EnvelopeRejected):
    """Two different envelopes claim the same author, incarnation, document and seq.

    ``existing`` and ``incoming`` are the two envelopes' wire forms: the proof.
    """

    def __init__(self, message: str, existing: bytes, incoming: bytes) -> None:
        super().__init__(message)
        self.existing = existing
        self.incoming = incoming


class ClientIdClash(EnvelopeRejected):
    """The envelope's Yjs client id is already bound to another author incarnation."""


class ContentViolation(EnvelopeRejected):
    """The update's content does not match what its author may write."""


class ForeignClient(ContentViolation):
    """The update inserts items under a client id other than the author's."""


class ClockDiscontinuity(ContentViolation):
    """The update's items do not continue exactly where the author's chain ended."""


class OutsideContext(ContentViolation):
    """The update deletes or references ids outside its causal context."""


class Held(StateError):
    """An envelope cannot be applied yet (missing predecessor, context or membership)."""


class HoldFull(StateError):
    """No room to hold another early envelope; it will be sent again on the next sync."""


class StorageError(StateError):
    """The store cannot be opened or written."""


class CorruptStore(StorageError):
    """The store's file or one of its rows is corrupt."""


class StoreLocked(StorageError):
    """Another process owns this data directory."""
