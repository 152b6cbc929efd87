"""The adapter's boundary: an unreachable server is a retryable error, a missing API key a
permanent one, and neither message carries the key."""

from __future__ import annotations

import socket

import pytest

from davit.adapters.secrets import SecretUnavailable
from davit.adapters.weaviate.client import Server, WeaviateUnavailable
from davit.domain.errors import RetryableError
from davit.domain.jobs.weaviate import WeaviateConnection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_a_retryable_error_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAVIT_TEST_WV_KEY", "s3cret-key-value")
    conn = WeaviateConnection(
        host="127.0.0.1", http_port=free_port(), grpc_port=free_port(), api_key_env="DAVIT_TEST_WV_KEY", timeout_seconds=5
    )
    with pytest.raises(WeaviateUnavailable) as err:
        Server(conn)
    assert isinstance(err.value, RetryableError)
    assert "s3cret-key-value" not in str(err.value) and "127.0.0.1" in str(err.value)


def test_an_api_key_variable_that_is_not_set_fails_the_run_naming_the_variable() -> None:
    conn = WeaviateConnection(api_key_env="DAVIT_TEST_WV_NOT_SET")
    with pytest.raises(SecretUnavailable, match="DAVIT_TEST_WV_NOT_SET"):
        Server(conn)
