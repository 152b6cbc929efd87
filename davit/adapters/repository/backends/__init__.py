"""Implementations of the repository's storage port (`..backend.Backend`)."""
