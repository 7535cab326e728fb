"""Transports that carry sync frames between engines: in-memory and libp2p."""
