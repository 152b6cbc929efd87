"""The snapshot kinds a files tree is restored from, so a restore's run and its `davit check`
give one verdict on a snapshot of another kind.

`files.restore` takes a `files` snapshot, or a `volumes` one (a volume backup's tree is a files
tree with a directory per volume: restoring it as files is how its volumes are looked at on a
host). `volume.restore` takes a `volumes` snapshot only (it picks one volume's directory). A
snapshot of another kind (a database's) has another tree: refused before anything is written,
naming both kinds, rather than read as a corrupt files tree.
"""

from __future__ import annotations

from davit.domain.errors import PermanentError

FILES_RESTORE_KINDS: tuple[str, ...] = ("files", "volumes")
VOLUME_RESTORE_KINDS: tuple[str, ...] = ("volumes",)


def require_kind(snapshot_id: str, kind: str, job: str, accepted: tuple[str, ...], restore: str) -> None:
    """Refuse (`PermanentError`: no retry can change a snapshot's kind) a snapshot `restore` does
    not restore."""
    if kind not in accepted:
        raise PermanentError(
            f"snapshot {snapshot_id} of job {job} is a {kind} snapshot; {restore} restores a {' or '.join(accepted)} one"
        )
