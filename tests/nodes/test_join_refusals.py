"""Joins the runtime refuses, over real libp2p hosts on 127.0.0.1 (in-process runtime).

A join flood is rate limited per address; wrong proofs burn the invite; an invite
whose pinned runtime key does not answer at its address (an impostor listens
there) is refused by the joining device; an invite for another mesh is refused.
None of them changes the membership.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.identity import Identity
from mesh.limits import MAX_INVITE_FAILURES, MAX_JOINS_PER_IP_PER_MINUTE
from mesh.pairing.invite import Invite, join_proof, parse_code
from mesh.pairing.protocol import JoinReply, JoinRequest
from mesh.transport.libp2p import Libp2pFrameStream, build_host
from nodes import control
from nodes.datadir import DataDir
from nodes.pairing import JOIN_PROTOCOL, JoinFailed, join_mesh
from nodes.runtime import RuntimeReady, serve_runtime
from nodes.setup import init_runtime

pytestmark = pytest.mark.trio


async def open_invite(datadir: DataDir) -> Invite:
    request = {"op": "invite", "caps": ["read"], "ttl_ms": 600_000, "name": ""}
    reply = await trio.to_thread.run_sync(control.request, datadir.control_socket, request)
    assert reply is not None
    return parse_code(str(reply["code"]))


async def ask_raw(identity: Identity, address: str, requests: list[bytes]) -> list[JoinReply]:
    """Send each request on its own join stream from one host; the replies."""
    host = build_host(identity)
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    replies = []
    async with host.run(listen_addrs=[]):
        try:
            with trio.fail_after(60):
                await host.connect(info)
                for request in requests:
                    frames = Libp2pFrameStream(await host.new_stream(info.peer_id, [JOIN_PROTOCOL]))
                    await frames.send(request)
                    replies.append(JoinReply.decode(await frames.receive()))
                    await frames.close()
        finally:
            with trio.CancelScope(shield=True):
                await host.close()
    return replies


async def start(nursery: trio.Nursery, path: Path) -> tuple[DataDir, RuntimeReady]:
    datadir = DataDir(path)
    init_runtime(datadir, time.time_ns() // 1_000_000)
    ready: RuntimeReady = await nursery.start(serve_runtime, datadir, ["/ip4/127.0.0.1/tcp/0"])
    return datadir, ready


async def test_wrong_proofs_burn_the_invite_and_a_flood_is_rate_limited(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        datadir, ready = await start(nursery, tmp_path / "runtime")
        assert ready.driver is not None
        invite = await open_invite(datadir)
        members = len(ready.driver.engine.replica.membership.members)
        stranger = Identity.generate()
        wrong = JoinRequest(invite.id, os.urandom(32), "").encode()
        right = JoinRequest(
            invite.id,
            join_proof(invite.secret, invite.mesh_id, invite.runtime_key, stranger.public_key),
            "",
        ).encode()
        replies = await ask_raw(
            stranger, ready.addresses[0], [wrong] * MAX_INVITE_FAILURES + [right]
        )
        assert {r.code for r in replies[:-1]} == {"invalid-invite"}
        assert replies[-1].code == "invite-burned"  # even the right secret, now
        flood = await ask_raw(Identity.generate(), ready.addresses[0], [wrong] * 30)
        codes = [r.code for r in flood]
        # Everything from this address counts: the bucket held what was left of its burst.
        assert "rate-limited" in codes
        assert codes.index("rate-limited") <= MAX_JOINS_PER_IP_PER_MINUTE
        assert len(ready.driver.engine.replica.membership.members) == members
        nursery.cancel_scope.cancel()


async def test_an_impostor_at_the_runtime_address_is_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        datadir, ready = await start(nursery, tmp_path / "runtime")
        invite = await open_invite(datadir)
        _, impostor = await start(nursery, tmp_path / "impostor")
        # The invite's address now leads to another runtime, named with the pinned id.
        port = impostor.addresses[0].split("/tcp/")[1].split("/")[0]
        pinned_id = ready.addresses[0].split("/p2p/")[1]
        hijacked = Invite(
            invite.mesh_id,
            invite.runtime_key,
            (f"/ip4/127.0.0.1/tcp/{port}/p2p/{pinned_id}",),
            invite.secret,
            invite.expires_ms,
        )
        with pytest.raises(JoinFailed):
            await join_mesh(
                Identity.generate(),
                hijacked,
                "",
                on_pending=lambda sas: None,
                approval_timeout_s=20,
            )
        # An address naming another key than the pinned one is refused before dialing.
        named = Invite(
            invite.mesh_id,
            invite.runtime_key,
            impostor.addresses[:1],
            invite.secret,
            invite.expires_ms,
        )
        with pytest.raises(JoinFailed, match="another key"):
            await join_mesh(Identity.generate(), named, "", on_pending=lambda sas: None)
        nursery.cancel_scope.cancel()


async def test_an_invite_for_another_mesh_is_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        datadir, ready = await start(nursery, tmp_path / "runtime")
        assert ready.driver is not None
        invite = await open_invite(datadir)
        other_mesh = Invite(
            bytes(32), invite.runtime_key, invite.addresses, invite.secret, invite.expires_ms
        )
        with pytest.raises(JoinFailed, match="invalid"):
            await join_mesh(Identity.generate(), other_mesh, "", on_pending=lambda sas: None)
        assert len(ready.driver.engine.replica.membership.members) == 1
        nursery.cancel_scope.cancel()
