"""A hypothesis state machine drives the simulated cluster step by step.

Rules write, partition, heal, crash, restart, admit, revoke, attack and let
time pass; the checker's during-run invariants hold after every step, and
teardown heals the cluster and demands convergence within three rounds.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from simulations.cluster import Cluster
from simulations.config import MS_PER_MIN, MS_PER_S, NO_FAULTS, SimConfig, WorkloadConfig
from simulations.schedule import DIRECTIONS, HOSTILE_KINDS

MACHINE_CONFIG = SimConfig(
    devices=3,
    duration_ms=MS_PER_MIN,
    faults=NO_FAULTS,
    workload=WorkloadConfig(write_every_ms=None, hostile=True),
)
MAX_DOWN_MS = 30 * MS_PER_S
MAX_ADVANCE_MS = 90 * MS_PER_S
MAX_ADMITTED = 2


class ClusterMachine(RuleBasedStateMachine):
    cluster: Cluster

    @initialize(seed=st.integers(0, 2**16), devices=st.integers(2, 4))
    def setup(self, seed: int, devices: int) -> None:
        config = dataclasses.replace(MACHINE_CONFIG, devices=devices)
        self.cluster = Cluster(config, seed, ())
        self.cluster.start(faults=False)
        self.admitted = 0

    def _node(self, who: int) -> int:
        return who % len(self.cluster.nodes)

    def _device(self, who: int) -> int:
        return 1 + who % (len(self.cluster.nodes) - 1)

    @rule(who=st.integers(0, 15))
    def write(self, who: int) -> None:
        self.cluster.write(self._node(who))

    @rule(ms=st.integers(1, MAX_ADVANCE_MS))
    def advance(self, ms: int) -> None:
        self.cluster.run_until(self.cluster.now + ms)

    @rule(who=st.integers(0, 15), direction=st.sampled_from(DIRECTIONS))
    def partition(self, who: int, direction: str) -> None:
        self.cluster.partition(self._device(who), direction)

    @rule()
    def heal_network(self) -> None:
        self.cluster.unpartition()

    @rule(who=st.integers(0, 15), down=st.integers(0, MAX_DOWN_MS))
    def crash(self, who: int, down: int) -> None:
        self.cluster.crash(self._node(who), down)

    @rule(who=st.integers(0, 15))
    def restart(self, who: int) -> None:
        self.cluster.restart(self._node(who))

    @precondition(lambda self: self.admitted < MAX_ADMITTED and self.cluster.runtime.up)
    @rule(reader=st.booleans())
    def admit(self, reader: bool) -> None:
        self.cluster.admit(reader)
        self.admitted += 1

    @rule(who=st.integers(0, 15))
    def revoke(self, who: int) -> None:
        self.cluster.revoke(self._device(who))

    @rule(kind=st.sampled_from(HOSTILE_KINDS))
    def attack(self, kind: str) -> None:
        self.cluster.hostile_act(kind)

    @invariant()
    def checker_holds(self) -> None:
        self.cluster.checker.during(self.cluster.nodes)
        assert not self.cluster.checker.violations, self.cluster.checker.violations

    def teardown(self) -> None:
        if not hasattr(self, "cluster"):
            return
        self.cluster.settle()
        assert not self.cluster.checker.violations, self.cluster.checker.violations
        assert self.cluster.converged_at is not None
        assert self.cluster.convergence_rounds() <= self.cluster.config.max_rounds


ClusterMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClusterMachine = ClusterMachine.TestCase
