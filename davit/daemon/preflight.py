"""Running a job's pre-flight checks (`davit check`): the repository checks every kind shares,
and the call of the kind's own checks through the table (`kinds.CHECKS`).

A repository is checked without `Repository.open`, which makes this host's directories for it
and cleans its spool: a check writes nothing. Its backend is opened (a remote one connects,
verifying the SFTP host key against the configured known_hosts, or signing in to S3), its
`config.json` is read and its format checked, the passphrase is resolved and the sealed key
decrypted with it, its snapshots' manifests are read (and authenticated with the key), a
restore's snapshot reference is resolved among them (and its tree read where a kind's check needs
it: `checktrees.py`), and a local one's free space and
write permission are read with `statvfs` and `access`. No lock is taken: a check never holds
up a backup, and a running backup never makes a check fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from davit.adapters.pathchecks import free_space
from davit.adapters.repository.backends.factory import open_backend
from davit.adapters.repository.crypto import RepositoryKey
from davit.adapters.repository.repoconfig import chunking_of, read_config
from davit.adapters.repository.snapshots import DamagedSnapshot, SnapshotInfo, scan
from davit.daemon.checktrees import compressed_tree
from davit.daemon.config import Settings
from davit.daemon.kinds import kind_checks
from davit.daemon.repositories import configured_passphrase, location_of
from davit.domain.checks import Checklist
from davit.domain.jobs import AnyJob


@dataclass
class JobCheck:
    """The inputs of one job's checks (`domain.checks.CheckInputs`)."""

    spec: Any
    settings: Settings
    checklist: Checklist
    _checked: dict[str, list[SnapshotInfo] | None] = field(default_factory=dict)
    _subjects: dict[str, str] = field(default_factory=dict)  # name -> "source main", "repository local"...
    _chosen: dict[str, SnapshotInfo] = field(default_factory=dict)  # repository -> the snapshot check_snapshot chose

    def check_repository(self, name: str, subject: str = "repository") -> bool:
        """Record repository `name`'s checks (once per job); whether it can be read."""
        if name not in self._checked:
            self._subjects[name] = f"{subject} {name}"
            self._checked[name] = check_repository(self.settings, name, self.checklist, self._subjects[name])
        return self._checked[name] is not None

    def check_snapshot(
        self, repository: str, ref: str, job: str | None, kind: str | tuple[str, ...] | None = None
    ) -> dict[str, Any] | None:
        """Record whether snapshot `ref` (`latest` of `job`, an id or a unique prefix) is in
        `repository` (checked first) and, given `kind`, is a snapshot of that kind (the one the
        run picks, as it picks it: a restore's run refuses another kind's snapshot); its stats
        (`bytes`, `files`...), None if not found or of another kind."""
        if not self.check_repository(repository):
            return None
        found = self._checked[repository] or []
        candidates = sorted((s for s in found if job is None or s.job == job), key=lambda s: (s.created_at, s.id))
        subject = self._subjects[repository]  # the snapshot's line beside its repository's
        with self.checklist.check(subject, "snapshot") as c:
            chosen = candidates[-1:] if ref == "latest" else [s for s in candidates if s.id.startswith(ref)]
            if len(chosen) != 1:
                of_job = f" of job {job}" if job else ""
                c.fail(f"{ref}{of_job}: {'ambiguous' if chosen else 'no such snapshot'} in {repository}")
                return None
            kinds = (kind,) if isinstance(kind, str) else kind
            if kinds is not None and chosen[0].kind not in kinds:
                c.fail(
                    f"{ref} is {chosen[0].id}, a {chosen[0].kind} snapshot of job {chosen[0].job}, not a {' or '.join(kinds)} one"
                )
                return None
            c.ok(f"{ref} is {chosen[0].id} of job {chosen[0].job}, made {chosen[0].created_at}")
        self._chosen[repository] = chosen[0]
        return dict(chosen[0].stats)

    def snapshot_tree(self, repository: str) -> bytes:
        """The zstd-compressed tree of the snapshot `check_snapshot` chose in `repository`
        (`checktrees.py`: nothing written); raises what reading it raises."""
        return compressed_tree(self.settings, repository, self._chosen[repository])


def check_repository(settings: Settings, name: str, cl: Checklist, subject: str) -> list[SnapshotInfo] | None:
    """Record repository `name`'s checks; its usable snapshots, None if it cannot be read."""
    with cl.check(subject, "configured") as c:
        location = location_of(settings, name)
        c.ok(location.where)
    if not c.passed:
        return None
    with cl.check(subject, "passphrase") as c:
        passphrase = configured_passphrase(settings, name)
        c.ok("resolved" if passphrase is not None else "none configured")
    if not c.passed:
        return None
    with cl.check(subject, "opens") as c:
        backend = open_backend(location)
        c.ok(location.where)
    if not c.passed:
        return None
    try:
        return _check_contents(backend, location.path, passphrase, cl, subject)
    finally:
        backend.close()


def _check_contents(backend: Any, path: Any, passphrase: str | None, cl: Checklist, subject: str) -> list[SnapshotInfo] | None:
    config = None
    with cl.check(subject, "config") as c:
        config = read_config(backend)
        if config is None:
            c.fail(f"{backend.where} is not a davit repository (no config.json); `davit repository init` makes one")
        else:
            chunking_of(config, backend.where)
            c.ok(f"format {config['format']}, {'encrypted' if config.get('encryption') else 'not encrypted'}")
    if config is None or not c.passed:
        return None
    key = None
    with cl.check(subject, "key") as c:
        section = config.get("encryption")
        if section is None and passphrase is not None:
            c.fail(f"{backend.where} is not encrypted but a passphrase is configured for it")
        elif section is None:
            c.ok("not encrypted")
        elif passphrase is None:
            c.fail(f"{backend.where} is encrypted and no passphrase is configured: its chunks cannot be read")
        else:
            key = RepositoryKey.open(passphrase, section, backend.where)  # RepositoryKeyError: wrong passphrase
            c.ok("the passphrase opens the repository's key")
    if not c.passed:  # (its room is still worth knowing)
        if path is not None:
            _check_local_room(path, cl, subject)
        return None
    usable: list[SnapshotInfo] | None = None
    with cl.check(subject, "snapshots") as c:
        found = scan(backend, key, section is not None)
        usable = [s for s in found if isinstance(s, SnapshotInfo)]
        damaged = [s for s in found if isinstance(s, DamagedSnapshot)]
        if damaged:
            c.warn(f"{len(usable)} readable, {len(damaged)} damaged (`davit snapshots` lists them)")
        else:
            c.ok(f"{len(usable)} readable")
    if path is not None:
        _check_local_room(path, cl, subject)
    return usable if c.passed else None


def _check_local_room(path: Any, cl: Checklist, subject: str) -> None:
    with cl.check(subject, "writable") as c:
        lacking = [d for d in ("packs", "index", "snapshots") if not os.access(path / d, os.W_OK | os.X_OK)]
        if lacking:
            c.fail(f"user {os.geteuid()} may not write {', '.join(str(path / d) for d in lacking)}")
        else:
            c.ok(f"{path} (by uid {os.geteuid()}; nothing was written)")
    free_space(cl, subject, path, None)


def check_job(settings: Settings, spec: AnyJob) -> Checklist:
    """Run every check of `spec`'s kind; the checklist of their results."""
    cl = Checklist(spec.name, spec.kind)
    with cl.check("job", "kind") as c:
        checks = kind_checks(spec.kind)
        c.ok(spec.kind)
    if c.passed:
        checks(JobCheck(spec, settings, cl))
    return cl
