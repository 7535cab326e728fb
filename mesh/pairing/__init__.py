"""Pairing: single-use invites and the join protocol (sans-IO)."""
