"""Which retention policy governs which job's snapshots in one repository, read from the job
files: for `davit repository prune NAME`, the maintenance run of a repository whose davitd may
not delete (a backup-only credential skips its backups' retention steps).

The jobs are read from the jobs directory of the config in use (each file through
`load_job_file`, so the verdict is davitd's), not from davitd's event log: the maintenance
credential is typically in a config of its own on another host or in an operator's shell,
which names the same jobs directory (or a copy of it) but has no davitd state.

The policies are those davitd itself would apply after each run:
- a backup job whose `repository` is NAME: its `retention`, for its own snapshots;
- a `repository.copy` job whose `repository` (the destination) is NAME: its `retention`, for
  the snapshots of each job it copies (`jobs`; empty: every job whose snapshots are in NAME
  and that no backup job of NAME governs).
A backup job's own policy wins over a copy's for the same job name. Two copy jobs with different
policies for one job leave that job alone (applying both would keep less than either
promises) and say so: the operator settles it with `--job` and one policy.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from davit.daemon.jobfiles import load_job_file
from davit.daemon.jobs import JOB_FILE_SUFFIX
from davit.domain.errors import InvalidArgument, UnknownJob
from davit.domain.jobs import AnyJob, RepositoryCopyJob, Retention


@dataclass
class Policies:
    """The policy of each job to prune, and what was left aside (for the operator)."""

    by_job: dict[str, Retention] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def job_specs(jobs_dir: Path) -> list[AnyJob]:
    """The valid jobs of `jobs_dir` (invalid files are `davit validate`'s business)."""
    try:
        paths = sorted(p for p in jobs_dir.iterdir() if p.name.endswith(JOB_FILE_SUFFIX))
    except FileNotFoundError:
        return []
    return [spec for path in paths if (spec := load_job_file(path, jobs_dir).spec) is not None]


def policies_for(specs: Sequence[AnyJob], repository: str, present: Collection[str], only: Sequence[str] = ()) -> Policies:
    """The policies for repository `repository`, whose snapshots belong to the jobs `present`;
    with `only`, just those jobs (`UnknownJob` for a name no file defines, `InvalidArgument`
    for one no policy of this repository covers)."""
    found = Policies()
    own: set[str] = set()  # the backup jobs of this repository, with a policy or not
    copies: list[RepositoryCopyJob] = []
    for spec in specs:
        policy = _policy(spec, repository)
        if isinstance(spec, RepositoryCopyJob):
            if policy is not None:
                copies.append(spec)
        elif spec.repository == repository and hasattr(spec, "retention"):  # a backup, not a restore
            own.add(spec.name)
            if policy is not None:
                found.by_job[spec.name] = policy
    copied: dict[str, list[tuple[str, Retention]]] = {}
    for copy in copies:
        for job in copy.jobs or sorted(set(present) - own):
            if job not in own:
                copied.setdefault(job, []).append((copy.name, copy.retention))
    for job, candidates in sorted(copied.items()):
        if len({policy.model_dump_json() for _, policy in candidates}) > 1:
            names = ", ".join(name for name, _ in candidates)
            found.notes.append(f"job {job}: left alone, the copy jobs {names} give it different retention policies")
        else:
            found.by_job[job] = candidates[0][1]
    if only:
        return _only(found, specs, repository, only)
    return found


def _policy(spec: AnyJob, repository: str) -> Retention | None:
    """The job's retention policy if it writes to `repository` and has one."""
    policy = getattr(spec, "retention", None)
    if spec.repository != repository or not isinstance(policy, Retention) or policy.is_empty():
        return None
    return policy


def _only(found: Policies, specs: Sequence[AnyJob], repository: str, only: Sequence[str]) -> Policies:
    known = {s.name for s in specs} | set(found.by_job)
    for job in only:
        if job not in known:
            raise UnknownJob(job)
        if job not in found.by_job:
            raise InvalidArgument("--job", f"no retention policy of repository {repository} applies to job {job!r}")
    return Policies({job: found.by_job[job] for job in only}, found.notes)
