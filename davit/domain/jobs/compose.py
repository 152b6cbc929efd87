"""Job spec of `compose.migrate`: move a compose project (definition, named volumes, bind
mounted data, `.env`) from the local engine, or one on another host reached over SSH
(`[source] host = ...`), to another host over SSH.

The source project is found on its engine by its compose labels; the target is an SSH
host whose sessions reach its Docker engine, verified against `known_hosts` (never
auto-accepted). `base_path` is where the project directory lands; bind paths under the
project directory are translated to it; a bind path outside it goes where `path_map` puts it
(`davit/domain/pathmap.py`), or, unmapped, as `outside_binds` says: fail pre-flight (the
default), keep its path on the target, or skip it. `dry_run` runs inspect and pre-flight only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from davit.domain.jobs.base import JobBase, Spec, absolute_path
from davit.domain.pathmap import check_path_map


class ComposeSource(Spec):
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    engine: str | None = None  # default: the daemon's DOCKER_HOST (with `host`: that host's DOCKER_HOST)
    # The source's engine on another host, reached over SSH as the target is (issue 21): its
    # host key checked against `known_hosts`, never auto-accepted
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = Field(default=30, gt=0)

    _absolute = field_validator("key_file", "known_hosts")(absolute_path)

    @model_validator(mode="after")
    def _ssh_needs_its_keys(self) -> ComposeSource:
        if self.host is not None and (self.key_file is None or self.known_hosts is None):
            raise ValueError("a source with `host` needs `key_file` and `known_hosts` (its host key is checked, never accepted)")
        if self.host is None and (self.key_file is not None or self.known_hosts is not None):
            raise ValueError("`key_file` and `known_hosts` are for a source reached over SSH: set `host` too")
        return self

    @model_serializer(mode="wrap")
    def _local_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a local source dumps as it did before `host` existed: its job keeps its revision
        dumped: dict[str, Any] = handler(self)
        if self.host is None:
            for name in _SSH_FIELDS:
                dumped.pop(name, None)
        return dumped


_SSH_FIELDS = ("host", "port", "user", "key_file", "known_hosts", "connect_timeout")


class SshTarget(Spec):
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key_file: str
    known_hosts: str
    base_path: str
    helper_image: str  # an image present on the target with tar, used to fill volumes
    connect_timeout: float = Field(default=30, gt=0)

    _absolute = field_validator("key_file", "known_hosts", "base_path")(absolute_path)


class ComposeMigrateJob(JobBase):
    kind: Literal["compose.migrate"]
    source: ComposeSource
    target: SshTarget
    dry_run: bool = False
    remove_source: bool = False
    remove_source_volumes: bool = False
    keep_failed_target: bool = False
    verify_timeout: float = Field(default=120, gt=0)
    stop_timeout: int = Field(default=30, ge=0)
    min_free_bytes: int = Field(default=0, ge=0)  # extra headroom demanded on the target
    # bind sources outside the project directory: where they land on the target, by longest prefix
    path_map: dict[str, str] = Field(default_factory=dict)
    outside_binds: Literal["fail", "keep-path", "skip"] = "fail"  # for an outside bind path_map does not name

    _path_map = field_validator("path_map")(check_path_map)
    # which images the project's containers run go with it: those the target lacks (by image
    # ID), all, or none (the target must have or build them); from a local source or one
    # reached over SSH alike
    images: Literal["missing", "all", "none"] = "missing"
    # the target's chunk store outlives a successful migration as a transfer cache (pruned to the
    # chunks that migration used: about its compressed data on the target's disk), so a repeat
    # sends only what changed; false removes it at finalize
    keep_transfer_cache: bool = True
    # a definition file (env file, extends/include target, config or secret file) named inside
    # the project but a symlink resolving outside it is not read unless this allows it
    # (`adapters/compose/definition.py`): it would copy a host file into the target's project
    follow_definition_symlinks: bool = False

    @model_validator(mode="after")
    def _volumes_go_with_the_source(self) -> ComposeMigrateJob:
        if self.remove_source_volumes and not self.remove_source:
            raise ValueError(
                "remove_source_volumes = true needs remove_source = true (volumes are removed with the source's containers)"
            )
        return self
