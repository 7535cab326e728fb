"""Membership: signed certificates and revocations, sequenced by the runtime's log."""
