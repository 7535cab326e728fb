"""What a running node answers on its control socket."""

from __future__ import annotations

from typing import Any

from crdt_state.schema import SHARED
from mesh.errors import MembershipError
from mesh.membership.records import Certificate, Revocation, decode_record
from mesh.pairing.invite import InviteError
from mesh.pairing.protocol import JoinDesk
from nodes import app, notifications, tracking
from nodes.crashpoints import crash_point
from nodes.driver import EngineDriver
from nodes.errors import NodeError

#: Most messages in one send-many request (each its own transaction).
MAX_TEXTS_PER_REQUEST = 1_000


def status(driver: EngineDriver) -> dict[str, Any]:
    """This node's sync status, from version vectors (never a false "synced")."""
    engine = driver.engine
    replica = engine.replica
    peers = []
    for peer in driver.sessions():
        st = engine.status(peer)
        peers.append(
            {
                "peer": peer.hex(),
                "ready": st.ready,
                "we_lack": st.we_lack,
                "they_lack": st.they_lack,
                "unacked_batches": st.unacked_batches,
                "synced": st.synced,
                "acked_own": engine.acknowledged_own(peer),
                **tracking.peer_status(driver, peer),
            }
        )
    unsealed = replica.next_seal_ms() is not None
    me = engine.identity.public_key
    own = sum(chain.seq for chain in replica.chains.values() if chain.author == me)
    return {
        "own_envelopes": own,
        "ok": True,
        "id": engine.identity.peer_id,
        "mesh": replica.mesh_id.hex(),
        "role": engine.role,
        "peers": peers,
        "envelopes": replica.store.envelope_count(),
        "held": len(replica.held),
        "unsealed_writes": unsealed,
        "synced": bool(peers) and all(p["synced"] for p in peers) and not unsealed,
        "revoked": engine.is_revoked(),
        **tracking.node_status(driver),
    }


def handle(
    driver: EngineDriver, request: dict[str, Any], desk: JoinDesk | None = None
) -> dict[str, Any]:
    """Answer one control request (``desk``: the runtime's invites, if this is the runtime)."""
    op = request.get("op")
    if op in ("invite", "approve", "waiting"):
        if desk is None:
            raise NodeError("only the runtime handles invites")
        return _pairing(driver, desk, op, request)
    me = driver.engine.identity.peer_id
    now = driver.clock()
    if op == "status":
        return status(driver)
    if op in ("approval-request", "decide", "approvals"):
        from nodes import approvals_service

        return approvals_service.handle(driver, request)
    if op == "tasks":
        from nodes.agent import views

        return {"ok": True, "tasks": views.tasks(driver.engine.replica)}
    if op == "conversation":
        from nodes.agent import chat

        return {"ok": True, "conversation": chat.view(driver.engine.replica)}
    if op == "notifications":
        return {
            "ok": True,
            "notifications": notifications.view(
                driver.engine.replica, include_dismissed=request.get("all") is True
            ),
        }
    if op == "dismiss":
        target = request.get("id")
        if not isinstance(target, str):
            raise NodeError("missing id")
        if driver.engine.is_revoked():
            raise NodeError("this device has been revoked; it no longer writes")
        notifications.dismiss(
            driver.transact, driver.engine.replica, driver.engine.identity.public_key, target, now
        )
        driver.kick()
        return {"ok": True, "id": target}
    if op == "send-many":
        texts = request.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise NodeError("texts must be a list of strings")
        if len(texts) > MAX_TEXTS_PER_REQUEST:
            raise NodeError(f"at most {MAX_TEXTS_PER_REQUEST} messages per request")
        if driver.engine.is_revoked():
            raise NodeError("this device has been revoked; it no longer writes")
        ids = [app.send_message(driver.transact, me, text, now) for text in texts]
        driver.kick()
        return {"ok": True, "ids": ids, "doc": SHARED}
    if op in ("send", "task-add", "task-cancel"):
        if driver.engine.is_revoked():
            raise NodeError("this device has been revoked; it no longer writes")
        text = request.get("text") or request.get("id")
        if not isinstance(text, str):
            raise NodeError("missing text")
        if op == "send":
            result = app.send_message(driver.transact, me, text, now)
        elif op == "task-add":
            result = app.add_task(driver.transact, me, text, now)
        else:
            app.cancel_task(driver.transact, me, text, now)
            result = text
        driver.kick()
        return {"ok": True, "id": result, "doc": SHARED}
    if op in ("admit", "revoke"):
        record_hex = request.get("record")
        if not isinstance(record_hex, str):
            raise NodeError("missing record")
        try:
            record = decode_record(bytes.fromhex(record_hex))
            if op == "admit" and isinstance(record, Certificate):
                entry = driver.engine.admit(record, now)
            elif op == "revoke" and isinstance(record, Revocation):
                entry = driver.engine.revoke(record, now)
            else:
                raise NodeError(f"{op}: wrong kind of record")
        except (MembershipError, ValueError) as exc:
            raise NodeError(f"{op} refused: {exc}") from exc
        driver.kick()
        return {"ok": True, "index": entry.index}
    raise NodeError(f"unknown operation {op!r}")


def _pairing(
    driver: EngineDriver, desk: JoinDesk, op: str, request: dict[str, Any]
) -> dict[str, Any]:
    now = driver.clock()
    try:
        if op == "invite":
            caps = request.get("caps")
            ttl_ms = request.get("ttl_ms")
            if not isinstance(caps, list) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
                raise NodeError("invite needs caps (list) and ttl_ms (positive int)")
            invite = desk.create(
                caps=frozenset(str(c) for c in caps),
                name=str(request.get("name") or ""),
                ttl_ms=ttl_ms,
                require_approval=bool(request.get("require_approval")),
                now_ms=now,
            )
            driver.flush()  # the invite is durable before anyone sees its code
            return {"ok": True, "code": invite.code(), "expires_ms": invite.expires_ms}
        if op == "approve":
            device = request.get("device")
            if not isinstance(device, str):
                raise NodeError("approve needs a device")
            from nodes.membership_ops import parse_device_key

            ident = desk.approve(parse_device_key(device))
            crash_point("approve.staged")
            driver.flush()
            crash_point("approve.committed")
            return {"ok": True, "invite": ident.hex()}
        return {"ok": True, "waiting": desk.waiting()}
    except InviteError as exc:
        raise NodeError(str(exc)) from exc
