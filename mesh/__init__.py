"""agentmesh mesh layer: identity, membership, wire framing, sync protocol and peer engine."""
