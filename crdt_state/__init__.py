"""Replicated agent state: the document set, envelopes, storage and views."""
