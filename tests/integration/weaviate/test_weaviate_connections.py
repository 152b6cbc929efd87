"""How a run uses its connection: a backup or a restore connects once for all its stages and
closes the connection when it ends; without the client's costly start-up checks, a server whose
gRPC port does not answer still fails the run at once (not after the client's retries) with a
retryable error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from weaviate.client import WeaviateClient

import davit.adapters.weaviate.client as wv_client
from davit.adapters.runwork import RunInputs
from davit.adapters.weaviate.backup import WeaviateBackupWork
from davit.adapters.weaviate.restore import WeaviateRestoreWork
from davit.domain.errors import RetryableError
from tests.fakes import MemoryRunContext
from tests.integration.weaviate.helpers import (
    TUNING,
    backup_spec,
    client_fixture,  # noqa: F401 (provides the `client` fixture)
    dump,
    open_repo,
    prefix,
    restore_spec,
    run_backup,
)
from tests.integration.weaviate.seed import create_authors
from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate


@pytest.fixture
def authors(client: WeaviateClient) -> Iterator[str]:
    p = prefix()
    create_authors(client, f"{p}Author")
    yield f"{p}Author"
    for name in list(client.collections.list_all(simple=True)):
        if name.startswith(p):
            client.collections.delete(name)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every client the adapter opens, in order."""
    clients: list[Any] = []
    real = wv_client.weaviate.connect_to_custom

    def counting(**kwargs: Any) -> Any:
        clients.append(real(**kwargs))
        return clients[-1]

    monkeypatch.setattr(wv_client.weaviate, "connect_to_custom", counting)
    return clients


def test_a_backup_and_a_restore_each_connect_once_and_close_at_the_end(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, authors: str, tmp_path: Path, opened: list[Any]
) -> None:
    repo = open_repo(tmp_path)
    ctx = MemoryRunContext(run_id="snap1")
    backup = WeaviateBackupWork(
        RunInputs(backup_spec(weaviate_peer, collections=[authors], chunk_objects=2), "snap1", TUNING, repo=repo)
    )
    backup.details = backup.prepare(ctx)
    backup.run(ctx)
    backup.finish(ctx)
    assert len(opened) == 1 and not opened[0].is_connected()

    copy = f"{authors}Copy"
    ctx = MemoryRunContext(run_id="restore1")
    restore = WeaviateRestoreWork(RunInputs(restore_spec(weaviate_peer, rename={authors: copy}), "restore1", TUNING, repo=repo))
    restore.details = restore.prepare(ctx)  # (if_exists = "fail": the prepare asks the server too)
    restore.run(ctx)
    restore.finish(ctx)
    assert len(opened) == 2 and not opened[1].is_connected()
    assert dump(client, copy) == dump(client, authors)


def test_a_server_whose_grpc_port_does_not_answer_fails_the_backup_with_a_retryable_error(
    weaviate_peer: WeaviatePeer, authors: str, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    spec = backup_spec(weaviate_peer, collections=[authors])
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"grpc_port": closed})})
    with pytest.raises(RetryableError, match=r"(?i)unavailable"):
        run_backup(open_repo(tmp_path), spec, "snap1")
