"""The hostile member: envelopes and frames no honest node would send, under its own key.

The hostile device runs a real engine (so it stays a member that syncs) and,
beside it, injects crafted ENVELOPES frames into its session with the runtime:
writes to documents it may not write, items under another client id, deletes
and references outside its causal context, replays, forks (of a fresh
incarnation and of its live one), and bytes that are not a frame. Every crafted
envelope that must be refused is registered with the checker (slot and hash),
and its content carries an ``evil-`` key so that it shows if applied anywhere.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Map

from crdt_state import lib0
from crdt_state.envelope import GENESIS_PREV, INCARNATION_BYTES, Envelope, client_id_of, seal
from crdt_state.schema import AGENT, SHARED, device_doc
from mesh.sync import frames
from simulations.node import SimNode

#: Batch numbers of injected frames start here (the hostile's engine never gets near).
INJECT_BASE = 1 << 40
#: Content keys of envelopes that must never be applied anywhere.
EVIL_PREFIX = "evil-"
#: Content keys of fork halves (one of the two may be applied).
FORK_PREFIX = "fork-"
#: Bytes of a garbage frame.
GARBAGE_BYTES = 48
#: Items of the ghost client an envelope claims to have seen (it never exists).
GHOST_CLOCK = 3
#: Forks of the live incarnation per run: each one gets it quarantined, and the device then
#: wipes its store and resyncs everything (costly), so once is enough.
MAX_OWN_FORKS = 1
#: Most own items replayed to fork a live chain (keeps crafting cheap).
MAX_FORK_CLOCK = 4_096

Forbid = Callable[[Envelope], None]


def update_as(client: int, start: int, root: str, key: str, value: object) -> bytes:
    """A Yjs update inserting ``root[key] = value`` as ``client`` at clock ``start``."""
    ydoc: Doc[Any] = Doc(client_id=client)
    if start:
        filler: Doc[Any] = Doc(client_id=client)
        pad = filler.get(root, type=Map)
        for i in range(start):
            pad[f"pad{i}"] = i
        ydoc.apply_update(filler.get_update())
    before = ydoc.get_state()
    ydoc.get(root, type=Map)[key] = value
    return ydoc.get_update(before)


class HostileDriver:
    """Crafts the hostile device's attacks; frames go out on its connection."""

    def __init__(self, node: SimNode, rng: random.Random, forbid: Forbid) -> None:
        self.node = node
        self.rng = rng
        self.forbid = forbid
        self.batch_no = INJECT_BASE
        self.counter = 0
        self.own_forks = 0
        self.stats: Counter[str] = Counter()

    def _incarnation(self) -> tuple[bytes, int]:
        incarnation = self.rng.randbytes(INCARNATION_BYTES)
        return incarnation, client_id_of(self.node.key, incarnation)

    def _envelope(
        self,
        doc: str,
        incarnation: bytes,
        update: bytes,
        *,
        seq: int = 1,
        prev: bytes = GENESIS_PREV,
        context: tuple[tuple[int, int], ...] = (),
    ) -> Envelope:
        replica = self.node.replica
        return seal(
            self.node.identity,
            mesh_id=self.node.mesh_id,
            doc=doc,
            incarnation=incarnation,
            seq=seq,
            hlc=replica.hlc + 1,
            mship=replica.membership.length,
            context=context,
            prev=prev,
            update=update,
        )

    def _frame(self, *envelopes: Envelope) -> bytes:
        self.batch_no += 1
        return frames.encode(frames.Envelopes(self.batch_no, tuple(e.raw for e in envelopes)))

    def _key(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.node.name}-{self.counter}"

    def swallow(self, data: bytes) -> bool:
        """Whether an incoming frame is the runtime's ACK of an injected batch."""
        if len(data) < 2 or data[1] != frames.ACK:
            return False
        frame = frames.decode(data)
        return isinstance(frame, frames.Ack) and frame.batch_no > INJECT_BASE

    def act(self, kind: str, victims: list[SimNode]) -> list[bytes]:
        """Frames for one attack of ``kind`` (registering what must be refused)."""
        self.stats[kind] += 1
        handler = getattr(self, "_" + kind.replace("-", "_"))
        result: list[bytes] = handler(victims)
        return result

    def _forbidden(self, doc: str, update_for: Callable[[int], bytes]) -> list[bytes]:
        """One envelope of a fresh incarnation that every node must refuse."""
        incarnation, client = self._incarnation()
        env = self._envelope(doc, incarnation, update_for(client))
        self.forbid(env)
        return [self._frame(env)]

    def _agent(self, victims: list[SimNode]) -> list[bytes]:
        key = self._key(EVIL_PREFIX)
        return self._forbidden(AGENT, lambda c: update_as(c, 0, "replies", key, 1))

    def _other_device(self, victims: list[SimNode]) -> list[bytes]:
        devices = [v for v in victims if not v.is_runtime]
        if not devices:
            return []
        doc = device_doc(self.rng.choice(devices).identity.peer_id)
        key = self._key(EVIL_PREFIX)
        return self._forbidden(doc, lambda c: update_as(c, 0, "acks", key, 1))

    def _forge(self, victims: list[SimNode]) -> list[bytes]:
        if not victims:
            return []
        victim = self.rng.choice(victims).replica.client_id
        key = self._key(EVIL_PREFIX)
        return self._forbidden(SHARED, lambda c: update_as(victim, 0, "messages", key, 1))

    def _delete_outside(self, victims: list[SimNode]) -> list[bytes]:
        if not victims:
            return []
        victim = self.rng.choice(victims).replica.client_id
        update = b"\x00" + lib0.encode_delete_set({victim: [(0, 1 + self.rng.randrange(8))]})
        return self._forbidden(SHARED, lambda c: update)

    def _future_ref(self, victims: list[SimNode]) -> list[bytes]:
        key = self._key(EVIL_PREFIX)
        return self._forbidden(SHARED, lambda c: update_as(c, 3, "memory", key, 1))

    def _replay(self, victims: list[SimNode]) -> list[bytes]:
        store = self.node.store
        count = store.envelope_count()
        if count == 0:
            return []
        skip = self.rng.randrange(count)
        rows = list(store.envelopes(0, skip + 1))
        self.batch_no += 1
        return [frames.encode(frames.Envelopes(self.batch_no, (rows[-1].raw,)))]

    def _fork(self, victims: list[SimNode]) -> list[bytes]:
        """Two seq-1 envelopes of a fresh incarnation, then a seq 2 after the fork."""
        incarnation, client = self._incarnation()
        a = self._envelope(
            SHARED, incarnation, update_as(client, 0, "tasks", self._key(FORK_PREFIX), 1)
        )
        b = self._envelope(
            SHARED, incarnation, update_as(client, 0, "tasks", self._key(FORK_PREFIX), 2)
        )
        later = self._envelope(
            SHARED,
            incarnation,
            b"\x00\x00",
            seq=2,
            prev=self.rng.randbytes(32),
            context=((client, 1),),
        )
        self.forbid(later)
        return [self._frame(a), self._frame(b), self._frame(later)]

    def _fork_own(self, victims: list[SimNode]) -> list[bytes]:
        """A second envelope for the live incarnation's last seq on ``shared``."""
        replica = self.node.replica
        chain = replica.chains.get((SHARED, replica.client_id))
        if chain is None or chain.author != self.node.key or self.own_forks >= MAX_OWN_FORKS:
            return []
        self.own_forks += 1
        store = self.node.store
        previous = store.get_envelope(SHARED, replica.client_id, chain.seq - 1)
        start = previous.clock_end if previous is not None else 0
        if start > MAX_FORK_CLOCK:
            return []
        prev = previous.hash if previous is not None else GENESIS_PREV
        update = update_as(replica.client_id, start, "tasks", self._key(FORK_PREFIX), 3)
        context = ((replica.client_id, start),) if start else ()
        env = self._envelope(
            SHARED, replica.incarnation, update, seq=chain.seq, prev=prev, context=context
        )
        return [self._frame(env)]

    def _context_lie(self, victims: list[SimNode]) -> list[bytes]:
        """An overwrite of an item of a client nobody has, claiming it in the context."""
        ghost = self.rng.getrandbits(52) | 1
        key = self._key(EVIL_PREFIX)
        fake: Doc[Any] = Doc(client_id=ghost)
        ghost_map = fake.get("memory", type=Map)
        for i in range(GHOST_CLOCK - 1):
            ghost_map[f"ghost{i}"] = i
        ghost_map[key] = 0

        def update(client: int) -> bytes:
            ydoc: Doc[Any] = Doc(client_id=client)
            ydoc.apply_update(fake.get_update())
            before = ydoc.get_state()
            ydoc.get("memory", type=Map)[key] = 1
            return ydoc.get_update(before)

        incarnation, client = self._incarnation()
        env = self._envelope(SHARED, incarnation, update(client), context=((ghost, GHOST_CLOCK),))
        self.forbid(env)
        return [self._frame(env)]

    def _garbage(self, victims: list[SimNode]) -> list[bytes]:
        return [self.rng.randbytes(GARBAGE_BYTES)]
