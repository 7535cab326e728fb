"""Approvals on a running node: control-socket operations and the runtime's resolver.

* ``handle``: the control operations ``approval-request`` (runtime only),
  ``decide`` and ``approvals`` (list), called from ``nodes.service.handle``.
* ``attach_resolver``: on the runtime, one driver output listener that calls
  ``approvals.resolve`` when a device document was accepted (a decision may
  have arrived, or the runtime's own) or the membership changed (a device may
  now hold ``approve``), at most once per change of the store (membership
  length, newest envelope), so a flush that accepted many envelopes resolves
  once. It also resolves once when attached: a decision accepted just before a
  crash is settled at the next start. The verdict is a local transaction; the
  driver seals and sends it like any other.

No trio or libp2p imports (the driver is only a type here).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from crdt_state.errors import StateError
from crdt_state.schema import DEVICE_PREFIX
from mesh.engine import RUNTIME_ROLE, Accepted, MembershipChanged
from nodes import approvals
from nodes.errors import NodeError

if TYPE_CHECKING:
    from mesh.engine import Output
    from nodes.driver import EngineDriver

log = logging.getLogger("agentmesh.approvals")

#: The control operations this module answers.
OPS = frozenset({"approval-request", "decide", "approvals"})


def handle(driver: EngineDriver, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one approvals control request (``request["op"]`` is in ``OPS``)."""
    op = request.get("op")
    engine = driver.engine
    replica = engine.replica
    if op == "approvals":
        return {"ok": True, "approvals": approvals.view(replica)}
    now = driver.clock()
    if op == "approval-request":
        if engine.role != RUNTIME_ROLE:
            raise NodeError("only the runtime requests approvals")
        action, details = request.get("action"), request.get("details", "")
        if not isinstance(action, str) or not isinstance(details, str):
            raise NodeError("approval-request needs an action (and details) as text")
        approval_id = approvals.request_approval(driver.transact, action, details, now)
        driver.kick()
        return {"ok": True, "id": approval_id}
    if op == "decide":
        target, decision = request.get("id"), request.get("decision")
        if not isinstance(target, str) or not isinstance(decision, str):
            raise NodeError("decide needs an id and a decision")
        me = engine.identity.public_key
        approvals.decide(driver.transact, replica, me, target, decision, now)
        driver.kick()
        return {"ok": True, "id": target, "decision": decision}
    raise NodeError(f"unknown operation {op!r}")


class Resolver:
    """The runtime's output listener that resolves approvals (see the module docstring)."""

    def __init__(self, driver: EngineDriver) -> None:
        self._driver = weakref.ref(driver)
        self._seen: tuple[int, int] | None = None

    def __call__(self, output: Output) -> None:
        if (isinstance(output, Accepted) and output.doc.startswith(DEVICE_PREFIX)) or isinstance(
            output, MembershipChanged
        ):
            self.resolve()

    def resolve(self) -> list[str]:
        """Resolve now, unless nothing changed in the store since the last time."""
        driver = self._driver()
        if driver is None:
            return []
        replica = driver.engine.replica
        seen = (replica.membership.length, replica.store.last_lid())
        if seen == self._seen:
            return []
        self._seen = seen
        try:
            resolved = approvals.resolve(replica, driver.transact, driver.clock())
        except StateError as exc:  # never stop the flusher; the next change retries
            self._seen = None
            log.warning("approvals not resolved: %s", exc)
            return []
        if resolved:
            log.info("resolved approvals %s", ", ".join(resolved))
        return resolved


def attach_resolver(driver: EngineDriver) -> Resolver:
    """On the runtime: resolve approvals now and whenever decisions may have changed."""
    resolver = Resolver(driver)
    driver.listeners.append(resolver)
    resolver.resolve()
    return resolver
