"""The admin protocol over libp2p: the runtime's handler and an admin device's client.

An admin device asks the runtime to open invites, sequence records it signed and
approve waiting joins (mesh/pairing/admin.py). A running device node forwards
the request over its own connection (control op ``admin``); with no node running,
the command dials the runtime itself under the data dir lock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.errors import AgentmeshError
from mesh.identity import Identity, public_key_of_peer_id
from mesh.limits import DIAL_TIMEOUT_MS
from mesh.pairing.admin import AdminDesk, AdminError, AdminReply, AdminRequest, encode_request
from mesh.transport.base import TransportError
from mesh.transport.libp2p import (
    Libp2pFrameStream,
    PinMismatch,
    request_reply,
    with_client_host,
)
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.errors import NodeError

ADMIN_PROTOCOL = TProtocol("/agentmesh/admin/1")
log = logging.getLogger("agentmesh.admin")


def admin_handler(
    admin: AdminDesk, driver: EngineDriver
) -> Callable[[INetStream], Awaitable[None]]:
    """The runtime's stream handler for ADMIN_PROTOCOL."""

    async def handle(stream: INetStream) -> None:
        try:
            frames = Libp2pFrameStream(stream)
        except ValueError:
            await stream.reset()
            return
        try:
            if not admin.authorized(frames.peer, driver.clock()):
                # Refused before a byte of the request is read.
                await frames.send(
                    AdminReply(False, code="not-admin", message="not an admin member").encode()
                )
                await frames.close()
                return
            with trio.fail_after(DIAL_TIMEOUT_MS / 1000):
                request = await frames.receive()
            reply = admin.handle(request, frames.peer, driver.clock())
            driver.flush()  # what the reply reports is committed before it is sent
            await frames.send(reply.encode())
            await frames.close()
            log.info(
                "admin request from %s: %s",
                frames.peer.hex()[:16],
                "done" if reply.done else reply.code,
            )
        except (trio.TooSlowError, TransportError, AgentmeshError) as exc:
            log.info("admin request failed: %s", exc)
            await frames.reset()

    return handle


async def ask(host: IHost, runtime_address: str, request: bytes) -> AdminReply:
    """Send one admin request to the runtime at ``runtime_address`` (pinned PeerId)."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(runtime_address))
    runtime_key = public_key_of_peer_id(str(info.peer_id))
    try:
        with trio.fail_after(DIAL_TIMEOUT_MS / 1000):
            data = await request_reply(host, info, runtime_key, ADMIN_PROTOCOL, request)
    except PinMismatch as exc:
        raise NodeError(str(exc)) from None
    except trio.TooSlowError:
        raise NodeError(f"the runtime did not answer within {DIAL_TIMEOUT_MS // 1000} s") from None
    except Exception as exc:  # py-libp2p raises many kinds when a dial fails
        raise NodeError(f"cannot reach the runtime: {type(exc).__name__}: {exc}") from exc
    return AdminReply.decode(data)


async def ask_once(identity: Identity, runtime_address: str, request: bytes) -> AdminReply:
    """Dial the runtime with a short-lived host, ask, and close (no node running)."""
    return await with_client_host(
        identity, lambda host: ask(host, runtime_address, request), (NodeError, AdminError)
    )


def request_from_device(datadir: DataDir, request: AdminRequest) -> object:
    """Send ``request`` from the admin device whose data dir is ``datadir``; its result.

    Through the running device node when there is one (its connection to the runtime),
    else over a short-lived connection of our own, holding the data dir lock meanwhile.
    Raises NodeError with the runtime's reason when it refuses.
    """
    from nodes import control
    from nodes.device import runtime_address

    datadir.require()
    encoded = encode_request(request)
    forwarded = control.request(datadir.control_socket, {"op": "admin", "request": encoded.hex()})
    if forwarded is not None:
        reply = AdminReply.decode(bytes.fromhex(str(forwarded["reply"])))
    else:
        with datadir.locked():
            identity = Identity.load(datadir.identity_key)
            address = runtime_address(datadir, None)
            reply = trio.run(ask_once, identity, address, encoded)
    if not reply.done:
        raise NodeError(f"the runtime refused: {reply.message} ({reply.code})")
    return reply.result
