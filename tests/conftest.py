"""Shared test set-up: the real-peer fixtures (tests/peers) are available to every test."""

pytest_plugins = ["tests.peers.fixtures", "tests.fixtures.disk"]
