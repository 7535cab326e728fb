"""Approvals: the runtime asks, devices holding ``approve`` decide, the runtime resolves.

* The runtime writes each request to ``agent/approvals/<id>`` (only holders of
  ``runtime`` write ``agent``): ``{"id", "action", "details", "ts", "state"}``,
  ``state`` being ``pending``, then ``approved`` or ``denied`` with
  ``decided_by`` (a device's PeerId) and ``decided_ts`` (the runtime's clock).
  A request for a tool call (nodes/agent) also names ``args_sha256`` (the hash
  of the call's exact arguments), a random ``nonce`` and ``expires_ts``: past
  it, a pending request becomes ``expired`` (denied: fail closed), whatever
  arrives later. ``used_ts`` is set, and committed, before the approved action
  runs, so a restarted runtime never runs it twice.
* A device decides in its own document, ``device/<peer id>/decisions/<id>`` =
  ``{"decision": "approve" | "deny", "ts"}``. The receive path already makes
  sure that only that device authors it; it does not look at ``approve``,
  since every member may write its own device document (acks, dismissals).
* So whether a decision *counts* is judged when it is read, by every peer, from
  the replica alone (membership and documents, never a clock):
  ``counted_decisions``. A device lacking ``approve`` can write whatever it
  likes into its own document; it is listed as ignored and never resolves
  anything.

Functions take a ``transact`` callable (``nodes.app.Transact``), so a running
node and a direct store open share one code path. No click, trio or libp2p here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycrdt import Map

from crdt_state.schema import AGENT, DEVICE_PREFIX, device_doc
from mesh.identity import peer_id_of, public_key_of_peer_id
from mesh.membership.records import APPROVE, RUNTIME
from nodes.app import MAX_TEXT_BYTES, Transact, finite_int, new_id
from nodes.errors import NodeError, NotFound

if TYPE_CHECKING:
    from crdt_state.replica import Replica

#: Root of ``agent`` holding the requests, and of ``device/<id>`` holding the decisions.
APPROVALS_ROOT = "approvals"
DECISIONS_ROOT = "decisions"

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"
APPROVE_DECISION = "approve"
DENY_DECISION = "deny"
DECISIONS = (APPROVE_DECISION, DENY_DECISION)
#: Longest action name (details may be up to ``MAX_TEXT_BYTES``).
MAX_ACTION_BYTES = 1024


class UnknownApproval(NotFound):
    """No approval with that id in this replica."""


@dataclass(frozen=True, order=True)
class Decision:
    """One device's decision on one approval (ordered by time, then device)."""

    ts: int
    device: str  # PeerId
    decision: str

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "decision": self.decision, "ts": self.ts}


# --- the runtime asks -----------------------------------------------------------------------


def request_approval(
    transact: Transact,
    action: str,
    details: str,
    now_ms: int,
    *,
    expires_ms: int | None = None,
    args_sha256: str | None = None,
    nonce: str | None = None,
) -> str:
    """Runtime: add a pending approval to ``agent/approvals``; returns its id."""
    if not action.strip():
        raise NodeError("the action is empty")
    if len(action.encode()) > MAX_ACTION_BYTES:
        raise NodeError(f"action longer than {MAX_ACTION_BYTES} bytes")
    if len(details.encode()) > MAX_TEXT_BYTES:
        raise NodeError(f"details longer than {MAX_TEXT_BYTES} bytes")
    approval_id = new_id(now_ms)
    value: dict[str, Any] = {
        "id": approval_id,
        "action": action,
        "details": details,
        "ts": now_ms,
        "state": PENDING,
    }
    if expires_ms is not None:
        value["expires_ts"] = expires_ms
    if args_sha256 is not None:
        value["args_sha256"] = args_sha256
    if nonce is not None:
        value["nonce"] = nonce
    with transact(AGENT) as ydoc:
        ydoc.get(APPROVALS_ROOT, type=Map)[approval_id] = value
    return approval_id


def deadline(value: dict[str, Any]) -> int | None:
    """When a request expires (runtime clock, ms), if it does."""
    return finite_int(value.get("expires_ts"))


def expired(value: dict[str, Any], now_ms: int) -> bool:
    """Whether a pending approval's deadline has passed (judged by the runtime's clock)."""
    ends = deadline(value)
    return ends is not None and now_ms >= ends


def mark_used(transact: Transact, replica: Replica, approval_id: str, now_ms: int) -> None:
    """Runtime: spend an approved request's nonce before its action runs (never twice)."""
    current = approval(replica, approval_id)
    if current is None:
        raise UnknownApproval(f"no approval {approval_id!r}")
    if current.get("state") != APPROVED:
        raise NodeError(f"approval {approval_id!r} is {current.get('state')}, not approved")
    if current.get("used_ts") is not None:
        raise NodeError(f"approval {approval_id!r} was already used")
    with transact(AGENT) as ydoc:
        ydoc.get(APPROVALS_ROOT, type=Map)[approval_id] = {**current, "used_ts": now_ms}


# --- a device decides -----------------------------------------------------------------------


def approval(replica: Replica, approval_id: str) -> dict[str, Any] | None:
    """The approval ``approval_id`` as this replica holds it, if any."""
    value = _approvals_map(replica).get(approval_id)
    return value if isinstance(value, dict) else None


def decide(
    transact: Transact,
    replica: Replica,
    me_key: bytes,
    approval_id: str,
    decision: str,
    now_ms: int,
) -> None:
    """Device: record this device's ``decision`` on a pending approval in its own document.

    Refused (``NodeError``) when this device does not hold ``approve`` now (no peer
    would count it), when the approval is unknown here (``UnknownApproval``) or no
    longer pending, and when this device already decided it.
    """
    if decision not in DECISIONS:
        raise NodeError(f"a decision is {' or '.join(DECISIONS)}, not {decision!r}")
    member = replica.membership.member(me_key)
    if member is not None and member.revoked_at is not None:
        raise NodeError("this device has been revoked; it no longer decides approvals")
    if APPROVE not in replica.membership.caps(me_key):
        raise NodeError("this device lacks the approve capability")
    current = approval(replica, approval_id)
    if current is None:
        raise UnknownApproval(f"no approval {approval_id!r} (not requested, or not synced yet)")
    if current.get("state") != PENDING:
        raise NodeError(f"approval {approval_id!r} is no longer pending: {current.get('state')}")
    doc = device_doc(peer_id_of(me_key))
    mine = _decisions_map(replica, doc)
    earlier = mine.get(approval_id) if mine is not None else None
    if isinstance(earlier, dict):
        raise NodeError(
            f"this device already decided {earlier.get('decision')!r} on {approval_id!r}"
        )
    with transact(doc) as ydoc:
        ydoc.get(DECISIONS_ROOT, type=Map)[approval_id] = {"decision": decision, "ts": now_ms}


# --- which decisions count ------------------------------------------------------------------


def counts(replica: Replica, doc: str) -> bool:
    """Whether decisions in the device document ``doc`` count on this replica.

    They count when the document's device holds ``approve`` by its latest
    certificate in the membership log. Revocation (and expiry) do not take back
    decisions already accepted: every peer refuses a revoked device's envelopes
    past the cutoff the runtime sequenced (and the runtime, which alone judges
    expiry, never accepts one from an expired certificate), so every decision a
    peer holds from such a device was made while it was a member with
    ``approve``, and the approvals it resolved stay resolved with their reason
    visible. The one replica that may hold writes past a cutoff is the cut-off
    device's own (written before it learnt of it): there, a document with a chain
    beyond its cutoff counts for nothing, since no other peer has those writes.

    Capabilities only grow (ARCHITECTURE.md), so a device's latest certificate
    holds everything it ever held: a device certified with ``approve`` later has
    its earlier decisions counted too, which gives it nothing it could not get by
    deciding again. Nothing here depends on a clock: every peer with the same
    documents and log counts the same decisions.
    """
    try:
        key = public_key_of_peer_id(doc[len(DEVICE_PREFIX) :])
    except ValueError:
        return False
    member = replica.membership.member(key)
    if member is None or not member.certs or APPROVE not in member.cert.caps:
        return False
    for (chain_doc, _client), chain in replica.chains.items():
        if chain_doc == doc:
            limit = replica.membership.chain_limit(chain.author, chain.incarnation, doc)
            if limit is not None and chain.seq > limit:
                return False
    return True


def _parse(device: str, value: Any) -> Decision | None:
    if not isinstance(value, dict):
        return None
    decision, ts = value.get("decision"), value.get("ts")
    if decision not in DECISIONS or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if not math.isfinite(ts):
        return None
    return Decision(int(ts), device, str(decision))


def _tally(replica: Replica) -> dict[str, tuple[list[Decision], int]]:
    """Per approval id: (counted decisions in order, number of ignored ones)."""
    tally: dict[str, tuple[list[Decision], int]] = {}
    for doc in _device_docs(replica):
        counted = counts(replica, doc)
        device = doc[len(DEVICE_PREFIX) :]
        decisions = _decisions_map(replica, doc)
        for approval_id, value in decisions.items() if decisions is not None else ():
            found, ignored = tally.setdefault(approval_id, ([], 0))
            parsed = _parse(device, value)
            if counted and parsed is not None:
                found.append(parsed)
            else:
                tally[approval_id] = (found, ignored + 1)
    for found, _ignored in tally.values():
        found.sort()
    return tally


def counted_decisions(replica: Replica, approval_id: str) -> list[Decision]:
    """The decisions on ``approval_id`` that count (see ``counts``), oldest first.

    Reads every ``device/*`` document of the replica; a decision counts only when
    its document's device holds ``approve`` and the value is well formed.
    """
    found: list[Decision] = []
    for doc in _device_docs(replica):
        decisions = _decisions_map(replica, doc)
        value = decisions.get(approval_id) if decisions is not None else None
        if value is None or not counts(replica, doc):
            continue
        parsed = _parse(doc[len(DEVICE_PREFIX) :], value)
        if parsed is not None:
            found.append(parsed)
    return sorted(found)


def outcome(decisions: list[Decision]) -> tuple[str, Decision] | None:
    """The verdict counted decisions give: any deny wins; else approved; None if none.

    The deciding decision is the oldest of the winning kind (ties: lowest PeerId).
    """
    if not decisions:
        return None
    denies = [d for d in decisions if d.decision == DENY_DECISION]
    if denies:
        return DENIED, min(denies)
    return APPROVED, min(decisions)


# --- listing and resolving ------------------------------------------------------------------


def view(replica: Replica) -> list[dict[str, Any]]:
    """Every approval (oldest first) with its state, counted and ignored decisions."""
    tally = _tally(replica)
    rows = []
    for approval_id, value in sorted(_approvals_map(replica).items()):
        if not isinstance(value, dict):
            continue
        found, ignored = tally.get(approval_id, ([], 0))
        row = {
            "id": approval_id,
            "action": str(value.get("action", "")),
            "details": str(value.get("details", "")),
            "ts": finite_int(value.get("ts")),
            "state": str(value.get("state", "")),
            "decided_by": value.get("decided_by"),
            "decided_ts": finite_int(value.get("decided_ts")),
            "expires_ts": finite_int(value.get("expires_ts")),
            "used_ts": finite_int(value.get("used_ts")),
            "args_sha256": value.get("args_sha256"),
            "approved_in_time": value.get("approved_in_time") or [],
            "decisions": [d.to_json() for d in found],
            "ignored": ignored,
        }
        rows.append(row)
    return rows


def approvers(replica: Replica) -> frozenset[str]:
    """PeerIds of the devices a request waits for: members holding ``approve`` now.

    The runtime, which asks, is not one of them (a decision it makes still counts).
    """
    return frozenset(
        peer_id_of(key)
        for key, member in replica.membership.members.items()
        if member.revoked_at is None
        and APPROVE in member.cert.caps
        and RUNTIME not in member.cert.caps
    )


def resolve(replica: Replica, transact: Transact, now_ms: int) -> list[str]:
    """Runtime: settle each pending approval at its stated moment.

    * A counted deny settles it ``denied`` at once: any deny wins.
    * Once every current approver (``approvers``) has approved: ``approved``.
    * At ``expires_ts``: ``approved`` if a counted approval reached the runtime
      before it, else ``expired`` (fail closed). "Before it" is recorded as the
      approvals arrive: a pending request lists in ``approved_in_time`` the
      devices whose counted approval the runtime held at a call before the
      deadline (this runs whenever a device document is accepted, and at the
      deadline). A request without ``expires_ts`` waits for every approver.

    ``decided_by`` names the deciding device (the oldest deny; else the first
    approval), ``decided_ts`` is ``now_ms``. Only pending approvals change and a
    settled one never changes again, so calling it twice with nothing new does
    nothing. Returns the ids settled, in order.
    """
    verdicts: list[tuple[str, dict[str, Any]]] = []
    settled: list[str] = []
    tally: dict[str, tuple[list[Decision], int]] | None = None
    waited_for = approvers(replica)
    for approval_id, value in sorted(_approvals_map(replica).items()):
        if not isinstance(value, dict) or value.get("state") != PENDING:
            continue
        if tally is None:
            tally = _tally(replica)
        found = tally.get(approval_id, ([], 0))[0]
        denies = [d for d in found if d.decision == DENY_DECISION]
        raw = value.get("approved_in_time")
        in_time = [d for d in raw if isinstance(d, str)] if isinstance(raw, list) else []
        if denies:
            verdict = {"state": DENIED, "decided_by": min(denies).device}
        elif expired(value, now_ms):
            verdict = (
                {"state": APPROVED, "decided_by": in_time[0]} if in_time else {"state": EXPIRED}
            )
        else:
            approving = [d.device for d in found]  # no denies: all are approvals
            if approving and waited_for <= set(approving):
                verdict = {"state": APPROVED, "decided_by": approving[0]}
            else:
                grown = in_time + [d for d in approving if d not in in_time]
                if grown != in_time:
                    verdicts.append((approval_id, {**value, "approved_in_time": grown}))
                continue
        verdicts.append((approval_id, {**value, **verdict, "decided_ts": now_ms}))
        settled.append(approval_id)
    if verdicts:
        with transact(AGENT) as ydoc:
            approvals = ydoc.get(APPROVALS_ROOT, type=Map)
            for approval_id, resolved in verdicts:
                approvals[approval_id] = resolved
    return settled


# --- reading the replica ----------------------------------------------------------------------


def _approvals_map(replica: Replica) -> Map[Any]:
    root: Map[Any] = replica.doc(AGENT).get(APPROVALS_ROOT, type=Map)
    return root


def _device_docs(replica: Replica) -> Iterator[str]:
    return iter(sorted(name for name in replica.docs if name.startswith(DEVICE_PREFIX)))


def _decisions_map(replica: Replica, doc: str) -> Map[Any] | None:
    ydoc = replica.docs.get(doc)
    if ydoc is None:
        return None
    root: Map[Any] = ydoc.get(DECISIONS_ROOT, type=Map)
    return root
