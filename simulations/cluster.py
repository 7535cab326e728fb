"""The simulated cluster: nodes, network, faults and workload driven by one event queue.

Every input a real driver gives an engine (``connect``, ``receive``,
``disconnect``, ``tick``, local transactions, ``admit``, ``revoke``) is given
here at a simulated time, and every input is followed by ``flush`` whose
outputs are routed: frames onto connections, closes into FINs, accepted
envelopes and acknowledgements to the checker. Time only moves by popping the
queue. The ``Cluster`` also offers step-by-step controls (``partition``,
``crash``, ``admit``, ...) for the stateful tests.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from mesh.engine import (
    DEVICE_ROLE,
    RUNTIME_ROLE,
    Close,
    Output,
    Quarantined,
    Refused,
    Send,
)
from mesh.identity import Identity, mesh_id_of
from mesh.membership.log import genesis
from mesh.membership.records import (
    APPROVE,
    READ,
    WRITE,
    issue_certificate,
    issue_revocation,
)
from simulations.checker import Checker
from simulations.config import (
    CERT_BACKDATE_MS,
    CERT_TTL_MS,
    CONVERGE_POLL_MS,
    ONLINE_DIAL_JITTER_MS,
    STABLE_SESSION_MS,
    TORN_WINDOW_MS,
    SimConfig,
)
from simulations.events import (
    DOWN,
    UP,
    Admit,
    Check,
    Crash,
    Deliver,
    Dial,
    DialFailed,
    Establish,
    EventQueue,
    Fin,
    Heal,
    Hostile,
    OnlineChange,
    PathChange,
    PathTimeout,
    Poll,
    Reset,
    Restart,
    Revoke,
    Tick,
    Write,
)
from simulations.hostile import HostileDriver
from simulations.network import Connection, Network
from simulations.node import PRODUCTION, Build, SimNode
from simulations.rng import backoff_ms, stream
from simulations.schedule import (
    BOTH,
    DOWN_ONLY,
    HOSTILE_NODE,
    RUNTIME,
    UP_ONLY,
    AdmitAt,
    CrashAt,
    HostileAt,
    Link,
    Offline,
    Partition,
    RevokeAt,
    Schedule,
    Skew,
)
from simulations.trace import Trace
from simulations.workload import Workload, writable_docs

DEVICE_CAPS = frozenset({READ, WRITE, APPROVE})
READER_CAPS = frozenset({READ})
#: A membership change that finds the runtime down is retried after this long.
MEMBERSHIP_RETRY_MS = 5_000
SEED_BYTES = 32


class Cluster:
    """One simulated mesh for one seed."""

    def __init__(
        self,
        config: SimConfig,
        seed: int,
        schedule: Schedule,
        *,
        build: Build = PRODUCTION,
        keep_trace: bool = False,
    ) -> None:
        self.config = config
        self.seed = seed
        self.schedule = schedule
        self.build = build
        self.queue = EventQueue()
        self.now = 0
        self.events = 0
        self.trace = Trace(keep=keep_trace)
        self.stats: Counter[str] = Counter()
        self.healed = False
        self.heal_at: int | None = None
        self.done = False
        self.converged_at: int | None = None
        self.rounds: dict[int, int] = {}
        self.root = Identity.from_seed(stream(seed, "identity", "root").randbytes(SEED_BYTES))
        self.mesh_id = mesh_id_of(self.root.public_key)
        self.checker = Checker(self.mesh_id)
        links = {f.device: f for f in schedule if isinstance(f, Link)}
        self.skews = {f.node: f.offset_ms for f in schedule if isinstance(f, Skew)}
        self.network = Network(config.network, seed, self.queue, lambda: self.now, links)
        self.workload = Workload(config.workload)
        self.nodes: list[SimNode] = []
        self.hostile: HostileDriver | None = None
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            Write: self._on_write,
            Tick: self._on_tick,
            Dial: self._on_dial,
            DialFailed: self._on_dial_failed,
            Establish: self._on_establish,
            Deliver: self._on_deliver,
            Fin: self._on_fin,
            Reset: self._on_reset,
            PathChange: self._on_path_change,
            PathTimeout: self._on_path_timeout,
            OnlineChange: self._on_online_change,
            Crash: self._on_crash,
            Restart: self._on_restart,
            Admit: self._on_admit,
            Revoke: self._on_revoke,
            Hostile: self._on_hostile,
            Check: self._on_check,
            Heal: self._on_heal,
            Poll: self._on_poll,
        }
        self._create_runtime()
        for index in range(1, config.devices + 1):
            hostile = config.workload.hostile and index == HOSTILE_NODE
            reader = not hostile and stream(seed, "caps", index).random() < (
                config.workload.reader_share
            )
            self._create_device(reader=reader, hostile=hostile)

    # --- building the mesh -----------------------------------------------------------------------

    @property
    def runtime(self) -> SimNode:
        return self.nodes[RUNTIME]

    def _identity(self, index: int) -> Identity:
        return Identity.from_seed(stream(self.seed, "identity", index).randbytes(SEED_BYTES))

    def _new_node(self, role: str, *, hostile: bool = False) -> SimNode:
        index = len(self.nodes)
        name = "runtime" if index == RUNTIME else ("hostile" if hostile else f"d{index}")
        node = SimNode(
            index=index,
            name=name,
            role=role,
            identity=self._identity(index),
            mesh_id=self.mesh_id,
            build=self.build,
            skew_ms=self.skews.get(index, 0),
            rng=stream(self.seed, "incarnations", index),
            hostile=hostile,
        )
        self.nodes.append(node)
        return node

    def _create_runtime(self) -> None:
        node = self._new_node(RUNTIME_ROLE)
        node.start()
        now = node.clock(self.now)
        entry = genesis(
            self.root,
            node.identity,
            now_ms=now - CERT_BACKDATE_MS,
            expires_ms=now - CERT_BACKDATE_MS + CERT_TTL_MS,
        )
        node.replica.add_log_entry(entry)
        node.store.commit()
        node.writable = writable_docs(node, node.replica.membership.caps(node.key))
        self.checker.observe_log(node)

    def _create_device(self, *, reader: bool, hostile: bool = False) -> SimNode:
        """The root certifies a device, the runtime admits it, the device joins."""
        runtime = self.runtime
        now = runtime.clock(self.now)
        node = self._new_node(DEVICE_ROLE, hostile=hostile)
        caps = READER_CAPS if reader else DEVICE_CAPS
        issued = now - CERT_BACKDATE_MS
        cert = issue_certificate(
            self.root, self.mesh_id, node.key, caps, issued, issued + CERT_TTL_MS, node.name
        )
        runtime.engine.admit(cert, now)
        self._after(runtime)
        node.start()
        for entry in runtime.replica.membership.entries:  # the join hands over the log
            node.replica.add_log_entry(entry)
        node.store.commit()
        node.writable = writable_docs(node, caps)
        self.checker.observe_log(node)
        if node.hostile:
            self.hostile = HostileDriver(
                node, stream(self.seed, "hostile-craft"), self.checker.forbid
            )
        return node

    # --- scheduling ------------------------------------------------------------------------------

    def start(self, *, faults: bool = True) -> None:
        """Schedule the run: devices dial, nodes write; with ``faults``, the schedule and heal."""
        if faults:
            self._schedule_faults()
        for node in self.nodes:
            self._start_writing(node)
            if not node.is_runtime:
                self._dial_soon(node)
        if faults:
            self.queue.push(self.config.check_every_ms, Check())
            self.queue.push(self.config.duration_ms, Heal())

    def _schedule_faults(self) -> None:
        """Turn the fault schedule into events."""
        for fault in self.schedule:
            if isinstance(fault, Partition):
                directions = {BOTH: (UP, DOWN), UP_ONLY: (UP,), DOWN_ONLY: (DOWN,)}
                targets = fault.devices or tuple(range(1, len(self.nodes)))
                for device in targets:
                    for direction in directions[fault.direction]:
                        self.queue.push(fault.start_ms, PathChange(device, direction, 1))
                        self.queue.push(fault.end_ms, PathChange(device, direction, -1))
            elif isinstance(fault, Offline):
                self.queue.push(fault.start_ms, OnlineChange(fault.device, 1))
                self.queue.push(fault.end_ms, OnlineChange(fault.device, -1))
            elif isinstance(fault, CrashAt):
                self.queue.push(fault.at_ms, Crash(fault.node, -1, fault.torn, fault.down_ms))
            elif isinstance(fault, AdmitAt):
                self.queue.push(fault.at_ms, Admit(fault.reader))
            elif isinstance(fault, RevokeAt):
                self.queue.push(fault.at_ms, Revoke(fault.device))
            elif isinstance(fault, HostileAt):
                self.queue.push(fault.at_ms, Hostile(fault.kind))

    def _start_writing(self, node: SimNode) -> None:
        every = self.config.workload.write_every_ms
        if every is not None:
            first = stream(self.seed, "write-phase", node.index).randrange(every)
            self.queue.push(self.now + first, Write(node.index))

    def _dial_soon(self, node: SimNode) -> None:
        if node.dialing or not node.up:
            return
        node.dialing = True
        jitter = stream(self.seed, "dial", node.index, node.life).randrange(ONLINE_DIAL_JITTER_MS)
        self.queue.push(self.now + jitter, Dial(node.index, node.life))

    def _redial(self, node: SimNode, lost: Connection | None = None) -> None:
        """After a lost connection or a failed dial: exponential backoff, full jitter.

        The backoff starts over only after a session that stayed ready for
        ``STABLE_SESSION_MS``: a peer that closes every session at once is not
        hammered.
        """
        if node.dialing or not node.up or node.is_runtime:
            return
        stable = lost is not None and lost.ready_at is not None
        if stable and lost is not None and self.now - (lost.ready_at or 0) >= STABLE_SESSION_MS:
            node.attempt = 0
        if node.engine.is_revoked() and not node.hostile:
            return  # it knows: an honest revoked device stops
        net = self.config.network
        delay = backoff_ms(node.rng, node.attempt, net.backoff_base_ms, net.backoff_cap_ms)
        node.attempt += 1
        node.dialing = True
        self.queue.push(self.now + delay, Dial(node.index, node.life))

    # --- the engine boundary ---------------------------------------------------------------------

    def _after(self, node: SimNode) -> None:
        """An input was given to ``node``: flush it, route its outputs, reschedule its tick."""
        if node.torn:
            self._crash(node, node.torn_down_ms)  # the crash tears this input from its flush
            return
        self.checker.observe_log(node)
        outputs = node.engine.flush(node.clock(self.now))
        self._route(node, outputs)
        self.checker.after_flush(node, outputs)
        if node.hostile and self.config.workload.hostile_rejoins and self._quarantined(node):
            self._rejoin(node)
            return
        deadline = node.engine.next_deadline()
        if deadline is not None:
            at = max(self.now, deadline - node.clock(0))
            if node.tick_at is None or at < node.tick_at:
                node.tick_at = at
                self.queue.push(at, Tick(node.index, node.life))

    @staticmethod
    def _quarantined(node: SimNode) -> bool:
        replica = node.replica
        return (node.key, replica.incarnation) in replica.membership.quarantined

    def _rejoin(self, node: SimNode) -> None:
        """The hostile device was caught forking: it wipes its store and joins again."""
        self.stats["hostile-rejoins"] += 1
        entries = list(node.replica.membership.entries)
        self._drop_connections(node)
        node.crash()
        node.store = node.build.store(node.store.location)
        node.floor = 0
        node.acked.clear()
        node.start()
        for entry in entries:
            node.replica.add_log_entry(entry)
        node.store.commit()
        self._dial_soon(node)

    def _route(self, node: SimNode, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Send):
                conn = node.conns.get(out.peer)
                if conn is not None:
                    self.network.send(conn, node.index, out.data)
            elif isinstance(out, Close):
                self.stats[f"close:{out.code}"] += 1
                conn = node.conns.pop(out.peer, None)
                if conn is not None:
                    self.network.fin(conn, node.index)
                    self._redial(node, conn)
            elif isinstance(out, Refused):
                self.stats[f"refused:{out.code}"] += 1
            elif isinstance(out, Quarantined):
                self.stats["quarantined"] += 1

    def _peer(self, conn: Connection, node: int) -> SimNode:
        return self.nodes[conn.other(node)]

    def _leave(self, node: SimNode, conn: Connection) -> None:
        """``node`` learns its end of ``conn`` is gone."""
        peer = self._peer(conn, node.index)
        if not node.up or node.conns.get(peer.key) is not conn:
            return
        del node.conns[peer.key]
        node.engine.disconnect(peer.key)
        self._after(node)
        self._redial(node, conn)

    # --- event handlers --------------------------------------------------------------------------

    def _on_write(self, event: Write) -> None:
        if self.healed:
            return
        node = self.nodes[event.node]
        every = self.config.workload.write_every_ms
        if every is not None:
            self.queue.push(self.now + every, event)
        if node.up:
            rng = stream(self.seed, "write", node.index, self.now)
            self.workload.write(node, rng, node.clock(self.now), self.now)
            self._after(node)

    def _on_tick(self, event: Tick) -> None:
        node = self.nodes[event.node]
        if not node.up or node.life != event.life:
            return
        if node.tick_at == self.now:
            node.tick_at = None
        node.engine.tick(node.clock(self.now))
        self._after(node)

    def _on_dial(self, event: Dial) -> None:
        node = self.nodes[event.node]
        if not node.up or node.life != event.life:
            return
        node.dialing = False
        if node.offline or self.runtime.key in node.conns:
            return
        if node.engine.is_revoked() and not node.hostile:
            return
        self.stats["dials"] += 1
        node.dialing = True
        net = self.config.network
        if not self.network.path_open(node.index):
            self.queue.push(self.now + net.dial_timeout_ms, DialFailed(node.index, node.life))
        elif not self.runtime.up:
            rtt = 2 * self.network.latency(node.index)
            self.queue.push(self.now + rtt, DialFailed(node.index, node.life))
        else:
            handshake = self.network.handshake_ms(node.index)
            self.queue.push(self.now + handshake, Establish(node.index, node.life))

    def _on_dial_failed(self, event: DialFailed) -> None:
        node = self.nodes[event.node]
        if not node.up or node.life != event.life:
            return
        node.dialing = False
        self.stats["dial-failures"] += 1
        self._redial(node)

    def _on_establish(self, event: Establish) -> None:
        node = self.nodes[event.node]
        if not node.up or node.life != event.life:
            return
        node.dialing = False
        runtime = self.runtime
        if not runtime.up or not self.network.path_open(node.index) or node.offline:
            self.stats["dial-failures"] += 1
            self._redial(node)
            return
        conn = self.network.open(node.index)
        old = runtime.conns.get(node.key)
        if old is not None:
            self.network.drop(old)  # one connection per peer: the new one replaces it
        runtime.conns[node.key] = conn
        node.conns[runtime.key] = conn
        runtime.engine.connect(node.key, runtime.clock(self.now))
        node.engine.connect(runtime.key, node.clock(self.now))
        self._after(runtime)
        self._after(node)

    def _on_deliver(self, event: Deliver) -> None:
        conn = self.network.conns.get(event.conn)
        if conn is None or conn.dead:
            return
        src = self.nodes[event.src]
        dst = self._peer(conn, event.src)
        if not dst.up or dst.conns.get(src.key) is not conn:
            return
        self.stats["delivered"] += 1
        if dst.hostile and self.hostile is not None and self.hostile.swallow(event.data):
            return
        dst.engine.receive(src.key, event.data, dst.clock(self.now))
        self._after(dst)
        watching = not conn.ready_seen and not dst.is_runtime and dst.up
        if watching and src.key in dst.conns and dst.engine.status(src.key).ready:
            conn.ready_seen = True
            conn.ready_at = self.now
            self.stats["sessions"] += 1
            if self.healed and dst.honest:
                self.rounds[dst.index] = self.rounds.get(dst.index, 0) + 1

    def _on_fin(self, event: Fin) -> None:
        conn = self.network.conns.get(event.conn)
        if conn is None:
            return
        dst = self._peer(conn, event.src)
        self._leave(dst, conn)
        self.network.drop(conn)

    def _on_reset(self, event: Reset) -> None:
        conn = self.network.conns.get(event.conn)
        if conn is None:
            return
        self._leave(self.nodes[event.node], conn)
        device, runtime = self.nodes[conn.device], self.runtime
        if device.conns.get(runtime.key) is not conn and runtime.conns.get(device.key) is not conn:
            self.network.drop(conn)

    def _on_path_change(self, event: PathChange) -> None:
        if self.healed or event.device >= len(self.nodes):
            return
        self.network.change_path(event.device, event.direction, event.delta)
        self.stats["path-changes"] += 1

    def _on_path_timeout(self, event: PathTimeout) -> None:
        if not self.healed:
            self.network.path_timeout(event.device, event.direction, event.since)

    def _on_online_change(self, event: OnlineChange) -> None:
        if self.healed or event.device >= len(self.nodes):
            return
        node = self.nodes[event.device]
        was_online = node.offline == 0
        node.offline = max(0, node.offline + event.delta)
        for direction in (UP, DOWN):
            self.network.change_path(node.index, direction, event.delta)
        if node.offline == 0 and not was_online:
            node.attempt = 0
            if node.up and not node.conns:
                self._dial_soon(node)

    def _on_crash(self, event: Crash) -> None:
        if self.healed or event.node >= len(self.nodes):
            return
        node = self.nodes[event.node]
        if not node.up or (event.life >= 0 and node.life != event.life):
            return
        if event.torn and not node.torn:
            node.torn = True
            node.torn_down_ms = event.down_ms
            self.queue.push(
                self.now + TORN_WINDOW_MS, Crash(node.index, node.life, False, event.down_ms)
            )
            return
        self._crash(node, event.down_ms)

    def _crash(self, node: SimNode, down_ms: int) -> None:
        self.stats["crashes"] += 1
        self.trace.note(self.now, f"crash {node.name}")
        self._drop_connections(node)
        node.crash()
        self.queue.push(self.now + down_ms, Restart(node.index, node.life))

    def _drop_connections(self, node: SimNode) -> None:
        """``node``'s process is gone: its peers learn it one latency later."""
        for conn in list(node.conns.values()):
            peer = self._peer(conn, node.index)
            conn.dead = True
            delay = self.network.latency(conn.device)
            self.queue.push(self.now + delay, Reset(conn.id, peer.index))

    def _on_restart(self, event: Restart) -> None:
        node = self.nodes[event.node]
        if node.up or node.life != event.life:
            return
        self._restart(node)

    def _restart(self, node: SimNode) -> None:
        node.start()
        self.stats["restarts"] += 1
        self.checker.check_durable(node)
        self._after(node)
        if not node.is_runtime and not node.offline:
            node.attempt = 0
            self._dial_soon(node)

    def _on_admit(self, event: Admit) -> None:
        if self.healed:
            return
        if not self.runtime.up or self.runtime.torn:
            self.queue.push(self.now + MEMBERSHIP_RETRY_MS, event)
            return
        node = self._create_device(reader=event.reader)
        self.stats["admitted"] += 1
        self._start_writing(node)
        self._dial_soon(node)

    def _on_revoke(self, event: Revoke) -> None:
        if self.healed or event.device >= len(self.nodes) or event.device == RUNTIME:
            return
        node = self.nodes[event.device]
        if node.revoked:
            return
        if not self.runtime.up or self.runtime.torn:
            self.queue.push(self.now + MEMBERSHIP_RETRY_MS, event)
            return
        runtime = self.runtime
        now = runtime.clock(self.now)
        revocation = issue_revocation(self.root, self.mesh_id, node.key, now - CERT_BACKDATE_MS)
        runtime.engine.revoke(revocation, now)
        node.revoked = True
        self.stats["revoked"] += 1
        self._after(runtime)

    def _on_hostile(self, event: Hostile) -> None:
        driver = self.hostile
        if self.healed or driver is None:
            return
        node = driver.node
        conn = node.conns.get(self.runtime.key)
        if not node.up or conn is None or not node.engine.status(self.runtime.key).ready:
            self.stats["hostile-skipped"] += 1
            return
        victims = [n for n in self.nodes if n.honest and n.up]
        for data in driver.act(event.kind, victims):
            self.network.send(conn, node.index, data)

    def _on_check(self, event: Check) -> None:
        if self.healed:
            return
        self.checker.during(self.nodes)
        self.queue.push(self.now + self.config.check_every_ms, event)

    def _on_heal(self, event: Heal) -> None:
        self.heal()

    def _on_poll(self, event: Poll) -> None:
        assert self.heal_at is not None
        if Checker.vectors_agree(self.nodes):
            self.converged_at = self.now
            self.done = True
            return
        if self.now - self.heal_at >= self.config.heal_deadline_ms:
            self.checker.fail(
                "no-convergence",
                None,
                f"not converged {self.config.heal_deadline_ms} ms after the heal",
            )
            self.done = True
            return
        self.queue.push(self.now + CONVERGE_POLL_MS, event)

    # --- running ---------------------------------------------------------------------------------

    def step(self) -> bool:
        """Run one event; False when there is none left."""
        if not self.queue or self.done:
            return False
        time_ms, event = self.queue.pop()
        self.now = time_ms
        self.checker.now = time_ms
        self.events += 1
        self.trace.event(time_ms, event)
        try:
            self._handlers[type(event)](event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pycrdt panics are BaseException
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.checker.fail(
                "exception",
                None,
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno}, "
                f"handling {event!r:.120})",
            )
            self.done = True
        if self.checker.failed:
            self.done = True
        return not self.done

    def run_until(self, time_ms: int) -> None:
        """Run every event up to ``time_ms``; the clock ends at ``time_ms``."""
        while not self.done:
            at = self.queue.peek_time()
            if at is None or at > time_ms:
                break
            self.step()
        self.now = max(self.now, time_ms)
        self.checker.now = self.now

    def run(self) -> None:
        """The whole run: faults, heal, convergence (or a violation)."""
        self.start()
        self.finish()

    def finish(self) -> None:
        """Run to the end (the heal and convergence), then the final checks."""
        while self.step():
            pass
        if self.converged_at is not None and not self.checker.failed:
            self.checker.final(self.nodes)
            rounds = self.convergence_rounds()
            if rounds > self.config.max_rounds:
                self.checker.fail(
                    "liveness", None, f"converged in {rounds} rounds (> {self.config.max_rounds})"
                )

    def convergence_rounds(self) -> int:
        """Rounds to converge after the heal: the most sessions any honest device needed."""
        return max(self.rounds.values(), default=0)

    # --- step-by-step controls (stateful tests) --------------------------------------------------

    def heal(self) -> None:
        """Every fault ends now: paths open, devices online, crashed nodes restart."""
        if self.healed:
            return
        self.healed = True
        self.heal_at = self.now
        self.network.calm = True
        self.network.unblock_all()
        for node in self.nodes:
            node.offline = 0
            node.torn = False
            if not node.up:
                self._restart(node)
        for node in self.nodes[1:]:
            conn = node.conns.get(self.runtime.key)
            if node.honest:
                self.rounds[node.index] = 1 if conn is not None and conn.ready_seen else 0
            if conn is None:
                node.attempt = 0
                self._dial_soon(node)
        self.queue.push(self.now, Poll())

    def write(self, index: int) -> None:
        node = self.nodes[index]
        if node.up:
            rng = stream(self.seed, "write", node.index, self.now, self.events)
            self.workload.write(node, rng, node.clock(self.now), self.now)
            self._after(node)

    def partition(self, device: int, direction: str) -> None:
        dirs = {BOTH: (UP, DOWN), UP_ONLY: (UP,), DOWN_ONLY: (DOWN,)}[direction]
        for d in dirs:
            self.network.change_path(device, d, 1)

    def unpartition(self) -> None:
        self.network.unblock_all()
        for node in self.nodes[1:]:
            if node.up and not node.conns:
                self._dial_soon(node)

    def crash(self, index: int, down_ms: int) -> None:
        node = self.nodes[index]
        if node.up:
            self._crash(node, down_ms)

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        if not node.up:
            self._restart(node)

    def admit(self, reader: bool = False) -> SimNode:
        node = self._create_device(reader=reader)
        self._dial_soon(node)
        return node

    def revoke(self, index: int) -> None:
        self._on_revoke(Revoke(index))

    def hostile_act(self, kind: str) -> None:
        self._on_hostile(Hostile(kind))

    def settle(self) -> None:
        """Heal now and run until converged (or the deadline), then the final checks."""
        self.heal()
        self.finish()
