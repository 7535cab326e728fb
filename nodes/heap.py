"""Keep the garbage collector's full passes from stalling a node's event loop.

Called once by the process entry points (``agentmesh runtime``, ``agentmesh device
run``), never by library code: freezing is a decision for a whole process.

A node imports py-libp2p, pycrdt, cryptography and trio: ~100,000 objects that
live as long as the process. Every full (generation-2) collection walks all of
them: ~25 ms on the benchmark machine, a stall every few seconds under load that
showed up as 20-80 ms spikes in write-to-reader latency (docs/NETWORK.md,
"Latency"). Freezing what exists once the node is up moves those objects out of
the collector's sight; what the node allocates later is collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then exempt every surviving object from later collections."""
    gc.collect()
    gc.freeze()
