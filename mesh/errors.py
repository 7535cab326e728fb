"""Errors of the mesh layer: identity, membership, wire protocol."""

from __future__ import annotations


class AgentmeshError(Exception):
    """Base of every agentmesh error."""


class KeyFileError(AgentmeshError):
    """A key file is missing, malformed, or readable by others."""


class MembershipError(AgentmeshError):
    """A membership record or certificate chain is not valid."""


class BadSignature(MembershipError):
    """A signature does not verify."""


class WrongMesh(MembershipError):
    """A record belongs to another mesh."""


class Expired(MembershipError):
    """A certificate or invite is outside its validity period."""


class NotAuthorized(MembershipError):
    """The signer may not issue this record (not root, not admin, revoked, ...)."""


class CapabilityEscalation(NotAuthorized):
    """A certificate grants capabilities its issuer does not hold."""


class MalformedRecord(MembershipError):
    """A record does not decode or breaks the canonical encoding."""


class LogGap(MembershipError):
    """A membership-log entry arrived before its predecessor."""


class LogFork(MembershipError):
    """Two different membership-log entries claim the same index."""


class ProtocolError(AgentmeshError):
    """A peer broke the sync protocol; the session with that peer is closed."""


class FrameTooLarge(ProtocolError):
    """A frame exceeds MAX_FRAME_BYTES."""


class MalformedFrame(ProtocolError):
    """A frame does not decode to a known message."""


class UnknownFrameType(MalformedFrame):
    """A frame names a message type this version does not know."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version or belongs to another mesh."""


class LimitExceeded(ProtocolError):
    """A peer exceeded a flow-control or size limit."""


class NotAMember(ProtocolError):
    """The peer is not a current member of this mesh."""
