"""Each fault does what it says, on a quiet cluster with an explicit schedule."""

from __future__ import annotations

from pycrdt import Map

from crdt_state.schema import SHARED, device_doc
from simulations.config import MS_PER_DAY, MS_PER_MIN, MS_PER_S, WorkloadConfig
from simulations.events import DOWN, UP
from simulations.schedule import (
    BOTH,
    HOSTILE_KINDS,
    UP_ONLY,
    AdmitAt,
    CrashAt,
    HostileAt,
    Link,
    Offline,
    Partition,
    RevokeAt,
    Skew,
)
from tests.simulations.helpers import QUIET, cluster, quiet, run

FAST = 12_500_000
SLOW = 32_000


def lossy(device: int, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0) -> Link:
    return Link(device, 40, FAST, loss, duplicate, reorder)


def test_loss_costs_retransmissions_and_breaks_connections() -> None:
    result = run(QUIET, (lossy(1, loss=0.3), lossy(2, loss=0.3)))
    assert result.stats["net:retransmits"] > 0
    assert result.stats["net:breaks-on-loss"] > 0
    assert result.stats["net:connections"] > 2  # broken connections were redialled


def test_duplicated_frames_close_sessions_and_nodes_reconnect() -> None:
    result = run(QUIET, (lossy(1, duplicate=0.05), lossy(2, duplicate=0.05)))
    assert result.stats["net:duplicated"] > 0
    closes = sum(v for k, v in result.stats.items() if k.startswith("close:ProtocolError"))
    assert closes > 0  # a second ACK or HELLO is a protocol violation
    assert result.stats["net:connections"] > 2


def test_reordered_frames_overtake_earlier_ones() -> None:
    result = run(QUIET, (lossy(1, reorder=0.05), lossy(2, reorder=0.05)))
    assert result.stats["net:reordered"] > 0


def test_long_partition_kills_the_connection_and_heals() -> None:
    sim = cluster(QUIET, (Partition(60 * MS_PER_S, 240 * MS_PER_S, (1,), BOTH),))
    d1, runtime = sim.nodes[1], sim.runtime
    sim.run_until(200 * MS_PER_S)
    assert runtime.key not in d1.conns  # the transport gave up (stream timeout)
    assert sim.network.stats["stream-timeouts"] >= 1
    assert d1.replica.vectors() != runtime.replica.vectors()
    sim.finish()
    assert not sim.checker.violations
    assert sim.converged_at is not None


def test_short_partition_delays_frames_without_breaking_the_stream() -> None:
    sim = cluster(QUIET, (Partition(60 * MS_PER_S, 80 * MS_PER_S, (1,), BOTH),))
    sim.run_until(59 * MS_PER_S)
    conn = sim.nodes[1].conns[sim.runtime.key]
    sim.run_until(100 * MS_PER_S)
    assert sim.nodes[1].conns.get(sim.runtime.key) is conn
    assert sim.network.stats["backlogged"] > 0
    assert sim.network.stats["stream-timeouts"] == 0
    sim.finish()
    assert not sim.checker.violations


def test_asymmetric_partition_ends_in_an_engine_timeout() -> None:
    # device -> runtime drops: the device's batches are never acknowledged.
    result = run(QUIET, (Partition(60 * MS_PER_S, 200 * MS_PER_S, (1,), UP_ONLY),))
    assert result.stats["close:timeout"] >= 1


def test_crash_loses_exactly_what_was_not_committed() -> None:
    sim = cluster(quiet(workload=WorkloadConfig(write_every_ms=None, hostile=False)), ())
    sim.run_until(10 * MS_PER_S)
    d1 = sim.nodes[1]
    old_client = d1.replica.client_id
    sim.write(1)
    sim.run_until(11 * MS_PER_S)  # sealed, flushed: committed
    committed = d1.store.envelope_count()
    assert committed > 0
    with d1.engine.transact(SHARED, d1.clock(sim.now)) as ydoc:
        ydoc.get("messages", type=Map)["staged"] = "x"
    d1.replica.seal_all(d1.clock(sim.now))  # staged in the store, never committed
    assert d1.store.envelope_count() == committed + 1
    sim.crash(1, 5 * MS_PER_S)
    sim.run_until(20 * MS_PER_S)
    assert d1.up and d1.incarnations == 2
    assert d1.store.envelope_count() == committed
    assert d1.replica.client_id != old_client  # a new incarnation: a new client id
    sim.settle()
    assert not sim.checker.violations


def test_torn_crash_strikes_between_an_input_and_its_flush() -> None:
    result = run(QUIET, (CrashAt(0, 30 * MS_PER_S, 5 * MS_PER_S, True),))
    assert result.stats["crashes"] == 1
    assert result.stats["restarts"] == 1


def test_clock_skew_offsets_each_node_and_still_converges() -> None:
    schedule = (Skew(0, -90 * MS_PER_S), Skew(1, 90 * MS_PER_S), Skew(2, 0))
    sim = cluster(QUIET, schedule)
    assert sim.nodes[1].clock(0) - sim.nodes[0].clock(0) == 180 * MS_PER_S
    sim.finish()
    assert not sim.checker.violations


def test_offline_device_does_not_dial_and_catches_up() -> None:
    sim = cluster(QUIET, (Offline(1, 30 * MS_PER_S, 200 * MS_PER_S),))
    sim.run_until(120 * MS_PER_S)
    d1 = sim.nodes[1]
    assert not d1.conns and d1.offline == 1
    dials = sim.stats["dials"]
    sim.run_until(190 * MS_PER_S)
    assert sim.stats["dials"] == dials  # offline: no dialling at all
    sim.finish()
    assert not sim.checker.violations


def test_device_isolated_for_days_converges_within_three_rounds() -> None:
    config = quiet(
        duration_ms=3 * MS_PER_DAY,
        workload=WorkloadConfig(write_every_ms=20 * MS_PER_MIN, hostile=False),
    )
    sim = cluster(config, (Partition(MS_PER_DAY // 2, 5 * MS_PER_DAY // 2, (1,), BOTH),))
    sim.run_until(2 * MS_PER_DAY)
    assert sim.nodes[1].replica.vectors() != sim.runtime.replica.vectors()
    sim.finish()
    assert not sim.checker.violations
    assert sim.convergence_rounds() <= 3


def test_latency_delays_delivery() -> None:
    def first_arrival(latency_ms: int) -> int:
        config = quiet(workload=WorkloadConfig(write_every_ms=None, hostile=False))
        sim = cluster(config, (Link(1, latency_ms, FAST, 0.0, 0.0, 0.0),))
        sim.run_until(10 * MS_PER_S)
        sim.write(1)
        written = sim.now
        doc = device_doc(sim.nodes[1].identity.peer_id)
        while not sim.runtime.replica.vector(doc):
            assert sim.step()
        return sim.now - written

    assert first_arrival(500) - first_arrival(5) >= 450


def test_bandwidth_limits_a_catch_up() -> None:
    def catch_up(bandwidth: int) -> int:
        config = quiet(workload=WorkloadConfig(write_every_ms=MS_PER_S, hostile=False))
        isolated = Partition(0, QUIET.duration_ms, (1,), BOTH)
        sim = cluster(config, (Link(1, 40, bandwidth, 0.0, 0.0, 0.0), isolated))
        sim.finish()
        assert sim.heal_at is not None and sim.converged_at is not None
        return sim.converged_at - sim.heal_at

    assert catch_up(SLOW) > catch_up(FAST) + 1_000


def test_admission_during_a_partition() -> None:
    schedule = (Partition(0, 200 * MS_PER_S, (1,), BOTH), AdmitAt(100 * MS_PER_S, False))
    sim = cluster(QUIET, schedule)
    sim.finish()
    assert not sim.checker.violations
    assert len(sim.nodes) == 4 and sim.nodes[3].honest
    assert sim.nodes[3].replica.vectors() == sim.runtime.replica.vectors()


def test_revocation_during_a_partition_cuts_off_later_writes() -> None:
    schedule = (Partition(30 * MS_PER_S, 200 * MS_PER_S, (1,), BOTH), RevokeAt(100 * MS_PER_S, 1))
    sim = cluster(QUIET, schedule)
    sim.finish()
    assert not sim.checker.violations
    d1, runtime = sim.nodes[1], sim.runtime
    assert d1.revoked and sim.stats["close:not-a-member"] >= 1  # it kept trying
    membership = runtime.replica.membership
    own = d1.replica.chains[(SHARED, d1.replica.client_id)]
    limit = membership.chain_limit(d1.key, d1.replica.incarnation, SHARED)
    assert limit is not None and own.seq > limit  # it wrote past its cutoff...
    for node in sim.nodes:
        if node is not d1:
            chain = node.replica.chains.get((SHARED, d1.replica.client_id))
            assert chain is None or chain.seq <= limit  # ...and nobody took those writes


def test_hostile_attacks_are_refused() -> None:
    config = quiet(workload=WorkloadConfig(write_every_ms=2 * MS_PER_S, hostile=True))
    schedule = tuple(
        HostileAt(30 * MS_PER_S + i * 5 * MS_PER_S, kind) for i, kind in enumerate(HOSTILE_KINDS)
    )
    result = run(config, schedule)
    refused = {k.split(":", 1)[1] for k in result.stats if k.startswith("refused:")}
    assert {"NotPermitted", "ForeignClient", "OutsideContext", "ForkDetected"} <= refused
    assert result.stats["quarantined"] >= 1
    assert result.stats["close:MalformedFrame"] >= 1  # the garbage frame


def test_paths_are_per_direction() -> None:
    sim = cluster(QUIET, ())
    sim.partition(1, UP_ONLY)
    assert sim.network.blocked(1, UP) and not sim.network.blocked(1, DOWN)
    sim.unpartition()
    assert sim.network.path_open(1)
