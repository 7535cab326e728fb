"""Knobs of a simulation run: every limit and default is a named constant here.

A run is fixed by a ``SimConfig`` and a seed. ``SimConfig`` is frozen: a
profile is a value, and ``dataclasses.replace`` derives variants from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

# --- time -----------------------------------------------------------------------------
MS_PER_S = 1_000
MS_PER_MIN = 60 * MS_PER_S
MS_PER_HOUR = 60 * MS_PER_MIN
MS_PER_DAY = 24 * MS_PER_HOUR
#: Wall-clock epoch of simulated time 0 (node clocks add their skew to it).
SIM_EPOCH_MS = 1_700_000_000_000

# --- cluster --------------------------------------------------------------------------
#: Fewest and most devices a run starts with (the runtime is one more node).
MIN_DEVICES = 1
MAX_DEVICES = 10
DEFAULT_DEVICES = 4
DEFAULT_DURATION_MS = MS_PER_HOUR
#: After the heal, the cluster must converge within this much simulated time.
HEAL_DEADLINE_MS = 20 * MS_PER_MIN
#: How often (simulated) the convergence poll runs after the heal.
CONVERGE_POLL_MS = 250
#: How often (simulated) the checker's during-run invariants are evaluated.
CHECK_EVERY_MS = MS_PER_MIN
#: Liveness target: sessions (rounds) per device to converge after the heal.
MAX_ROUNDS = 3
#: Certificates are issued this long before the issuer's clock (absorbs clock skew).
CERT_BACKDATE_MS = MS_PER_HOUR
CERT_TTL_MS = 365 * MS_PER_DAY

# --- network defaults -------------------------------------------------------------------
LATENCY_MEDIAN_MS = 40.0
#: Sigma of the log-normal spread of per-link base latencies.
LATENCY_LINK_SIGMA = 0.8
#: Sigma of the log-normal per-frame jitter around a link's base latency.
LATENCY_JITTER_SIGMA = 0.3
LATENCY_MIN_MS = 1
#: Per-link bandwidth is drawn log-uniformly between these (bytes per second).
BANDWIDTH_MIN_BPS = 32_000
BANDWIDTH_MAX_BPS = 12_500_000
#: Per-link frame loss is drawn uniformly from [0, this].
LOSS_MAX = 0.3
#: A lost frame breaks the connection with this probability (else it is retransmitted).
BREAK_ON_LOSS = 0.05
#: First TCP retransmission timeout; each further loss of one frame doubles it.
RTO_MS = 200
#: Most retransmissions of one frame before the connection is declared broken.
MAX_RETRANSMITS = 8
#: Per-frame probability of an adversarial duplicate / reordering (on faulty links).
DUPLICATE_RATE = 0.002
REORDER_RATE = 0.002
#: A reordered frame with nothing to overtake is held back by up to this long.
REORDER_WINDOW_MS = 500
#: A connection whose path stays blocked this long is declared dead by the transport.
STREAM_TIMEOUT_MS = 60 * MS_PER_S
#: A dial into a blocked path fails after this long.
DIAL_TIMEOUT_MS = 10 * MS_PER_S
#: Round trips of a connection handshake (TCP + Noise + yamux).
HANDSHAKE_RTTS = 2
#: Reconnect backoff: full jitter over [0, min(cap, base * 2**attempt)].
BACKOFF_BASE_MS = 500
BACKOFF_CAP_MS = 60 * MS_PER_S
#: A session that stayed ready this long resets the reconnect backoff.
STABLE_SESSION_MS = 10 * MS_PER_S
#: A device that comes online dials within this jitter.
ONLINE_DIAL_JITTER_MS = 1_000

# --- fault defaults ---------------------------------------------------------------------
PARTITIONS_PER_HOUR = 4.0
PARTITION_MIN_MS = 2 * MS_PER_S
PARTITION_MAX_MS = 10 * MS_PER_MIN
#: Shares of partitions that are one-directional / cut the runtime from everyone.
ASYMMETRIC_SHARE = 0.3
RUNTIME_PARTITION_SHARE = 0.15
#: Probability that a run isolates one device for a long stretch, and its length.
ISOLATE_PROBABILITY = 0.3
ISOLATE_MIN_SHARE = 0.2
ISOLATE_MAX_SHARE = 0.6
CRASHES_PER_HOUR = 1.0
CRASH_DOWN_MIN_MS = 500
CRASH_DOWN_MAX_MS = 2 * MS_PER_MIN
#: Share of crashes that strike between a node's input and its flush.
TORN_SHARE = 0.3
#: A torn crash waits at most this long for an input to tear.
TORN_WINDOW_MS = 5 * MS_PER_S
MAX_SKEW_MS = 2 * MS_PER_MIN
#: Daily offline window per device (e.g. a phone at night), in hours.
OFFLINE_MIN_HOURS = 6
OFFLINE_MAX_HOURS = 10
ADMIT_PROBABILITY = 0.5
REVOKE_PROBABILITY = 0.4
#: Share of devices holding only ``read`` (they write their device document alone).
READER_SHARE = 0.2

# --- workload defaults --------------------------------------------------------------------
#: Default profile: each node writes once every this long (simulated).
WRITE_EVERY_MS = MS_PER_MIN
#: Transactions in one write (drawn uniformly from 1..this).
MAX_TXNS_PER_WRITE = 3
DELETE_SHARE = 0.15
OVERWRITE_SHARE = 0.2
#: Distinct hot keys per root that writers overwrite.
HOT_KEYS = 3
HOSTILE_EVERY_MS = 45 * MS_PER_S


@dataclass(frozen=True)
class NetworkConfig:
    """The simulated network; probabilities apply per frame."""

    latency_median_ms: float = LATENCY_MEDIAN_MS
    latency_link_sigma: float = LATENCY_LINK_SIGMA
    latency_jitter_sigma: float = LATENCY_JITTER_SIGMA
    bandwidth_min_bps: int = BANDWIDTH_MIN_BPS
    bandwidth_max_bps: int = BANDWIDTH_MAX_BPS
    loss_max: float = LOSS_MAX
    break_on_loss: float = BREAK_ON_LOSS
    rto_ms: int = RTO_MS
    duplicate_rate: float = DUPLICATE_RATE
    reorder_rate: float = REORDER_RATE
    stream_timeout_ms: int = STREAM_TIMEOUT_MS
    dial_timeout_ms: int = DIAL_TIMEOUT_MS
    backoff_base_ms: int = BACKOFF_BASE_MS
    backoff_cap_ms: int = BACKOFF_CAP_MS


@dataclass(frozen=True)
class FaultConfig:
    """Which faults a generated schedule holds, and how many."""

    partitions: bool = True
    partitions_per_hour: float = PARTITIONS_PER_HOUR
    partition_min_ms: int = PARTITION_MIN_MS
    partition_max_ms: int = PARTITION_MAX_MS
    asymmetric_share: float = ASYMMETRIC_SHARE
    runtime_partition_share: float = RUNTIME_PARTITION_SHARE
    isolate: bool = True
    isolate_probability: float = ISOLATE_PROBABILITY
    crashes: bool = True
    crashes_per_hour: float = CRASHES_PER_HOUR
    crash_down_min_ms: int = CRASH_DOWN_MIN_MS
    crash_down_max_ms: int = CRASH_DOWN_MAX_MS
    torn_share: float = TORN_SHARE
    loss: bool = True
    duplicate: bool = True
    reorder: bool = True
    latency: bool = True
    bandwidth: bool = True
    skew: bool = True
    max_skew_ms: int = MAX_SKEW_MS
    offline: bool = True
    membership: bool = True
    admit_probability: float = ADMIT_PROBABILITY
    revoke_probability: float = REVOKE_PROBABILITY


@dataclass(frozen=True)
class WorkloadConfig:
    """What honest and hostile nodes write."""

    #: Each node writes once per this many simulated ms (None: only explicit writes).
    write_every_ms: int | None = WRITE_EVERY_MS
    max_txns_per_write: int = MAX_TXNS_PER_WRITE
    delete_share: float = DELETE_SHARE
    overwrite_share: float = OVERWRITE_SHARE
    #: Relative weight of each writable document kind.
    shared_weight: float = 2.0
    agent_weight: float = 1.0
    device_weight: float = 1.0
    reader_share: float = READER_SHARE
    hostile: bool = True
    hostile_every_ms: int = HOSTILE_EVERY_MS
    #: Once its live incarnation is quarantined, the hostile device wipes its store and
    #: rejoins. Off (the default), it keeps its store and its engine must stop sending the
    #: cut-off envelopes (before the fix of tests/simulations/test_regressions.py's first
    #: bug, it resent them on every session, which tripled the cost of a run).
    hostile_rejoins: bool = False


@dataclass(frozen=True)
class SimConfig:
    """One simulated cluster: the runtime, ``devices`` devices, faults and workload."""

    devices: int = DEFAULT_DEVICES
    duration_ms: int = DEFAULT_DURATION_MS
    heal_deadline_ms: int = HEAL_DEADLINE_MS
    check_every_ms: int = CHECK_EVERY_MS
    max_rounds: int = MAX_ROUNDS
    network: NetworkConfig = field(default_factory=NetworkConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    #: Name of a deliberately broken variant (simulations.mutants), or None.
    mutant: str | None = None

    def __post_init__(self) -> None:
        if not MIN_DEVICES <= self.devices <= MAX_DEVICES:
            raise ValueError(f"devices must be in {MIN_DEVICES}..{MAX_DEVICES}")
        if self.duration_ms <= 0:
            raise ValueError("duration must be positive")
        if not 0.0 <= self.network.loss_max < 1.0:
            raise ValueError("loss must be in [0, 1)")


NO_FAULTS = FaultConfig(
    partitions=False,
    isolate=False,
    crashes=False,
    loss=False,
    duplicate=False,
    reorder=False,
    skew=False,
    offline=False,
    membership=False,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 1, "s": MS_PER_S, "m": MS_PER_MIN, "h": MS_PER_HOUR, "d": MS_PER_DAY}


def parse_duration(text: str) -> int:
    """``"7d"``, ``"1h30m"``, ``"45s"``, ``"250ms"`` -> milliseconds."""
    text = text.strip().lower()
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 1h, 30m, 45s, 250ms)")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or total <= 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return int(total)


def format_duration(ms: int) -> str:
    """The shortest ``parse_duration`` text for ``ms``."""
    parts: list[str] = []
    for unit, size in (("d", MS_PER_DAY), ("h", MS_PER_HOUR), ("m", MS_PER_MIN), ("s", MS_PER_S)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms}ms")
    return "".join(parts)


#: The test suite's profile: short runs with faults and attacks far denser than real life.
TEST_PROFILE = SimConfig(
    devices=4,
    duration_ms=10 * MS_PER_MIN,
    faults=FaultConfig(
        partitions_per_hour=12.0,
        partition_max_ms=3 * MS_PER_MIN,
        crashes_per_hour=6.0,
        crash_down_max_ms=MS_PER_MIN,
        isolate_probability=0.5,
        duplicate=True,
        reorder=True,
        admit_probability=0.7,
        revoke_probability=0.7,
    ),
    network=NetworkConfig(duplicate_rate=0.005, reorder_rate=0.005),
    workload=WorkloadConfig(write_every_ms=5 * MS_PER_S, hostile_every_ms=20 * MS_PER_S),
)
#: The suite's many-seeds profile: the test profile, shorter, with sparser writes.
SUITE_PROFILE = replace(
    TEST_PROFILE,
    duration_ms=5 * MS_PER_MIN,
    workload=replace(TEST_PROFILE.workload, write_every_ms=8 * MS_PER_S),
)
#: The benchmark's profile: five nodes, each writing once per simulated second.
BENCH_PROFILE = SimConfig(
    devices=4,
    duration_ms=10 * MS_PER_MIN,
    workload=WorkloadConfig(write_every_ms=MS_PER_S, max_txns_per_write=1),
)
PROFILES = {
    "default": SimConfig(),
    "test": TEST_PROFILE,
    "suite": SUITE_PROFILE,
    "bench": BENCH_PROFILE,
}
