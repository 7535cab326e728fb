"""Joining over libp2p: the runtime's join handler and the device's join client.

``/agentmesh/join/1`` is the only protocol a non-member may open, and only
while the runtime has open invites; it is rate limited per remote address.
The runtime commits every state change before it replies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.errors import AgentmeshError
from mesh.identity import Identity, public_key_of_peer_id
from mesh.limits import (
    DIAL_TIMEOUT_MS,
    JOIN_APPROVAL_TIMEOUT_MS,
    MAX_JOINS_PER_IP_PER_MINUTE,
)
from mesh.membership.log import decode_entry
from mesh.membership.state import fold
from mesh.pairing.invite import Invite, InviteError, join_proof, short_authentication_string
from mesh.pairing.protocol import JOINED, PENDING, JoinDesk, JoinReply, JoinRequest
from mesh.transport.base import TransportError
from mesh.transport.libp2p import (
    Libp2pFrameStream,
    PinMismatch,
    request_reply,
    with_client_host,
)
from nodes.crashpoints import crash_point
from nodes.driver import EngineDriver

JOIN_PROTOCOL = TProtocol("/agentmesh/join/1")
#: How often a device waiting for approval asks again.
APPROVAL_POLL_S = 1.0
log = logging.getLogger("agentmesh.pairing")


@dataclass
class RateLimiter:
    """A token bucket per key: ``rate`` attempts per minute, bursts up to ``rate``."""

    rate: int = MAX_JOINS_PER_IP_PER_MINUTE
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate / 60.0)
        if len(self._buckets) > 10_000:  # bounded memory under a flood of addresses
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


def join_handler(
    desk: JoinDesk, driver: EngineDriver, limiter: RateLimiter
) -> Callable[[INetStream], Awaitable[None]]:
    """The runtime's stream handler for JOIN_PROTOCOL."""

    async def handle(stream: INetStream) -> None:
        address = stream.get_remote_address()
        ip = address[0] if address else "unknown"
        try:
            frames = Libp2pFrameStream(stream)
        except ValueError:
            await stream.reset()
            return
        if not limiter.allow(ip):
            log.warning("join rate limit hit by %s", ip)
            await frames.send(
                JoinReply(2, code="rate-limited", message="too many join attempts").encode()
            )
            await frames.close()
            return
        try:
            with trio.fail_after(DIAL_TIMEOUT_MS / 1000):
                request = await frames.receive()
            reply = desk.handle(request, frames.peer, driver.clock())
            crash_point("join.staged")
            driver.flush()  # commit the invite's new state (and any admission) first
            crash_point("join.committed")
            await frames.send(reply.encode())
            await frames.close()
            if reply.status == JOINED:
                log.info("device %s joined", frames.peer.hex()[:16])
        except (trio.TooSlowError, TransportError, AgentmeshError) as exc:
            log.info("join from %s failed: %s", ip, exc)
            await frames.reset()

    return handle


class JoinFailed(AgentmeshError):
    """The runtime refused the join, or it could not be reached in time."""


async def join_mesh(
    identity: Identity,
    invite: Invite,
    name: str,
    *,
    on_pending: Callable[[str], None],
    approval_timeout_s: float = JOIN_APPROVAL_TIMEOUT_MS / 1000,
) -> list[bytes]:
    """Join with ``invite``; returns the verified membership log entries."""
    proof = join_proof(invite.secret, invite.mesh_id, invite.runtime_key, identity.public_key)
    request = JoinRequest(invite.id, proof, name).encode()
    return await with_client_host(
        identity,
        lambda host: _join_loop(host, invite, identity, request, on_pending, approval_timeout_s),
        (JoinFailed,),
    )


async def _join_loop(
    host: object,
    invite: Invite,
    identity: Identity,
    request: bytes,
    on_pending: Callable[[str], None],
    approval_timeout_s: float,
) -> list[bytes]:
    shown = False
    errors: list[str] = []
    unreachable_since: float | None = None
    try:
        with trio.fail_after(approval_timeout_s):
            while True:
                reply = await _ask(host, invite, request, errors)
                if reply is None:
                    now = trio.current_time()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > DIAL_TIMEOUT_MS / 1000:
                        raise trio.TooSlowError
                    await trio.sleep(APPROVAL_POLL_S)
                    continue
                unreachable_since = None
                if reply.status == JOINED:
                    return _verified(invite, identity, reply.entries)
                if reply.status == PENDING:
                    if not shown:
                        on_pending(reply.sas)
                        shown = True
                    await trio.sleep(APPROVAL_POLL_S)
                    continue
                raise JoinFailed(f"join refused: {reply.message} ({reply.code})")
    except trio.TooSlowError:
        detail = f": {errors[-1]}" if errors else ""
        raise JoinFailed(
            "no answer from the runtime (unreachable, or it has no open invite: the code may "
            f"have expired or been used){detail}"
        ) from None


async def _ask(host: object, invite: Invite, request: bytes, errors: list[str]) -> JoinReply | None:
    from libp2p.abc import IHost

    assert isinstance(host, IHost)
    last: Exception | None = None
    for address in invite.addresses:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:  # a malformed address in the code
            last = exc
            continue
        if public_key_of_peer_id(str(info.peer_id)) != invite.runtime_key:
            raise JoinFailed("the invite's address names another key than its runtime")
        try:
            with trio.fail_after(DIAL_TIMEOUT_MS / 1000):
                data = await request_reply(host, info, invite.runtime_key, JOIN_PROTOCOL, request)
            return JoinReply.decode(data)
        except PinMismatch as exc:  # pinned: another key is refused
            raise JoinFailed(str(exc)) from None
        except InviteError as exc:
            raise JoinFailed(str(exc)) from exc
        except Exception as exc:  # py-libp2p raises many kinds when a dial fails
            last = exc
    errors.append(f"{type(last).__name__}: {last}" if last else "no address")
    return None


def _verified(invite: Invite, identity: Identity, entries: tuple[bytes, ...]) -> list[bytes]:
    decoded = [decode_entry(raw) for raw in entries]
    membership = fold(invite.mesh_id, decoded)
    if membership.length != len(decoded):
        raise JoinFailed("the runtime sent an incomplete membership log")
    if membership.runtime_key != invite.runtime_key:
        raise JoinFailed("the membership log names another runtime than the invite")
    if not membership.is_member(identity.public_key):
        raise JoinFailed("the membership log does not admit this device")
    return list(entries)


__all__ = [
    "JOIN_PROTOCOL",
    "JoinFailed",
    "RateLimiter",
    "join_handler",
    "join_mesh",
    "short_authentication_string",
]
