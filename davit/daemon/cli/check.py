"""`davit check JOB...` / `davit check --all`: a job's pre-flight checks, changing nothing.

For each job (as davitd has it, from the log; or a job file given by path) its kind's checks
run (`daemon/preflight.py`): credentials resolved, source and target connected, permissions,
server versions, free space, SSH host keys, the repository opened with its passphrase. One
line per check (`ok`, `warn`, `FAIL` with the reason); `--json` prints one object per check.
Exit 0 only if no check failed (warnings pass), else 1 (`ChecksFailed`).

Credentials are resolved in this process: run it with davitd's environment and user (e.g.
`sudo -u davit env $(cat /etc/davit/env) davit check JOB`), or a secret davitd can read is
reported as missing here.
"""

from __future__ import annotations

from pathlib import Path

import click

from davit.daemon.cli.common import emit_json, state, with_store
from davit.daemon.jobfiles import load_job_file
from davit.daemon.jobs import JobRegistry
from davit.daemon.preflight import check_job
from davit.domain.checks import Checklist, summary
from davit.domain.errors import CommandFailed, JobFilesInvalid, UnknownJob
from davit.domain.jobs import AnyJob, spec_from_json
from davit.domain.ports import EventLog


class ChecksFailed(CommandFailed):
    """`davit check`: a check of these jobs failed; the command printed which."""

    def __init__(self, jobs: list[str]) -> None:
        super().__init__(f"checks failed for {', '.join(jobs)}", reported=True)
        self.jobs = jobs


def _specs(ctx: click.Context, names: tuple[str, ...], every: bool) -> list[AnyJob]:
    files = [n for n in names if n.endswith(".toml") or "/" in n]
    wanted = [n for n in names if n not in files]
    specs: list[AnyJob] = []
    for file in files:
        loaded = load_job_file(Path(file), Path(file).parent)
        if loaded.spec is None:
            for problem in loaded.problems:
                click.echo(problem.render(loaded.file))
            raise JobFilesInvalid([loaded.file])
        specs.append(loaded.spec)
    if not wanted and not every:
        return specs

    async def go(store: EventLog) -> list[AnyJob]:
        registry = JobRegistry(store)
        await registry.load()
        active = {j.name: j for j in registry.jobs.values() if not j.retired}
        for name in wanted:
            if name not in active:
                raise UnknownJob(name)
        chosen = sorted(active) if every else wanted
        return [spec_from_json(active[name].spec) for name in chosen]

    return specs + with_store(ctx, go)


@click.command("check")
@click.argument("jobs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Check every job davitd has.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
@click.pass_context
def command(ctx: click.Context, jobs: tuple[str, ...], every: bool, as_json: bool) -> None:
    """Check that jobs can run: credentials, connections, permissions, space; changes nothing."""
    if not jobs and not every:
        raise click.UsageError("name a job (or a job file), or give --all")
    settings = state(ctx).settings
    done: list[Checklist] = []
    for spec in _specs(ctx, jobs, every):
        cl = check_job(settings, spec)
        done.append(cl)
        for result in cl.results:
            if as_json:
                emit_json({"job": cl.job, "kind": cl.kind, **result.to_json()})
            else:
                click.echo(f"{cl.job}  {result.line()}")
    if not as_json:
        for line in summary(done):
            click.echo(line, err=True)
    failed = [cl.job for cl in done if not cl.passed]
    if failed:
        raise ChecksFailed(failed)
