"""The sync protocol: frames and their codec (sans-IO)."""
