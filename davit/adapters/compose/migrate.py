"""compose.migrate: a compose project from the local engine to another host, as steps.

Plan: `inspect` (find the project by its labels, record the resolved model's structure with
its values masked: `model_mask.py`) -> `preflight`
(over SSH: docker, compose, zstd, helper image, free space, names free) -> `stop_source` (the
running containers are recorded, then stopped) -> `export` (each volume and bind path as a
deterministic tar cut into content-addressed chunks) -> `transfer` (only the chunks the
target's store lacks) -> `import` (volumes through a helper container, bind paths through
one with their directory mounted); these three overlap, item by item, as one bounded pipeline
-> `write_project` (compose files, `.env`, env files,
extended and included files, configs and secrets from files; paths under the project
translated to `base_path` in compose and env files) -> `start_target` (`docker compose -p NAME up -d
--pull never`) -> `verify` (every service running, healthchecks healthy) -> `finalize`.

Each step is recorded, and those that move data checkpoint per item or per batch, so a
resumed run continues where the last one stopped. A failure once the source was stopped is
undone by `rollback` (driven by the executor): the target stack is stopped and removed
(unless `keep_failed_target`), then the source containers that were running are started; a
cancel rolls back the same way, unless `finalize` (the committing step) has started: then it
is ignored and the migration ends as finalize does. `dry_run` plans only `inspect` and `preflight`.
"""

from __future__ import annotations

import os
import shlex
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import docker

from davit.adapters.compose import binds, claim
from davit.adapters.compose import images as imgs
from davit.adapters.compose import target as tgt
from davit.adapters.compose.localtools import require_gnu_tar
from davit.adapters.compose.model_mask import masked_model
from davit.adapters.compose.pipeline import Spawn, move_item
from davit.adapters.compose.source import Item, Project, compose_args, inspect_project
from davit.adapters.docker.engine import COMPOSE_PROJECT, DEFAULT_ENGINE, connect, engine_errors, start_containers
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.ssh.remote import RemoteHost, SshAddress
from davit.adapters.ssh.remote import connect as ssh_connect
from davit.adapters.steps import Step, run_steps
from davit.domain.errors import DavitError, PermanentError
from davit.domain.jobs import ComposeMigrateJob
from davit.domain.ports import RunContext

INSPECT, PREFLIGHT, STOP, EXPORT, TRANSFER = "inspect", "preflight", "stop_source", "export", "transfer"
IMPORT, WRITE, START, VERIFY, FINALIZE = "import", "write_project", "start_target", "verify", "finalize"
ROLLBACK_TARGET, RESTART_SOURCE = "rollback_target", "restart_source"
PLAN = [INSPECT, PREFLIGHT, STOP, EXPORT, TRANSFER, IMPORT, WRITE, START, VERIFY, FINALIZE]
DATA_STEPS = (EXPORT, TRANSFER, IMPORT)
CHECKPOINT_BYTES = 16 << 20  # transfer progress is recorded at least this often (acknowledged bytes)
# The chunks are compressed for the wire (the target's store, kept as a transfer cache, holds them so):
# zstd's fastest level leaves the CPU to hashing, encryption and unpacking, which share it.
WIRE_LEVEL = 1


class DefinitionSymlinkedOut(PermanentError):
    """A definition file resolves outside the project directory (`definition.py`'s rule)."""


class ComposeMigrateWork(RunWork[ComposeMigrateJob]):
    def __new__(cls, inputs: RunInputs[ComposeMigrateJob]) -> ComposeMigrateWork:
        # a source on another host (`[source] host`) is read over SSH: `sshsource.py`
        if cls is ComposeMigrateWork and inputs.spec.source.host is not None:
            from davit.adapters.compose.sshsource import SshSourceMigrateWork  # it builds on this module

            cls = SshSourceMigrateWork
        return super().__new__(cls)

    def __init__(self, inputs: RunInputs[ComposeMigrateJob]) -> None:
        super().__init__(inputs)
        spec = self.spec
        self.layout = tgt.TargetLayout(spec.target.base_path, spec.source.project)
        t = spec.target
        self.address = SshAddress(t.host, t.port, t.user, t.key_file, t.known_hosts, t.connect_timeout)
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.spec.source.engine)
        return self._client

    def plan(self) -> list[str]:
        return [INSPECT, PREFLIGHT] if self.spec.dry_run else list(PLAN)

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        # The repository is used only at `finalize`, after the source is removed: open it now, so
        # one that cannot be opened fails the run before anything is stopped
        _ = self.repo
        self.details = {
            "project": self.spec.source.project,
            "target": self.address.where,
            "project_dir": self.layout.project_dir,
            "dry_run": self.spec.dry_run,
        }
        return self.details

    def steps(self) -> list[Step]:
        work = {
            INSPECT: self._inspect,
            PREFLIGHT: self._preflight,
            STOP: self._stop,
            WRITE: self._write,
            START: self._start,
            VERIFY: self._verify,
            FINALIZE: self._finalize,
        }
        # the three data steps overlap: `_move_data` starts and completes each; finalize removes
        # the source's store (and the source, with remove_source): once it starts there is
        # nothing a rollback could put back, so it commits and a later cancel is ignored
        return [
            Step(name, self._move_data, records_itself=True)
            if name in DATA_STEPS
            else Step(name, work[name], commits=name == FINALIZE)
            for name in self.plan()
        ]

    def run(self, ctx: RunContext) -> None:
        run_steps(ctx, self.steps(), stop_between=True)

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        summary = {
            "project": info["name"],
            "target": self.address.where,
            "project_dir": self.layout.project_dir,
            "services": info["services"],
            "items": len(info["items"]),
            "bytes": info["bytes"],
        }
        if self.spec.dry_run:
            summary.update(dry_run=True, would_run=PLAN[2:])
        if self._client is not None:
            self._client.close()
        return summary

    # --- rollback (the executor calls these when the run fails for good) -----------------------

    def needs_rollback(self, ctx: RunContext) -> bool:
        # past pre-flight the run holds the target's claim (`claim.py`): the rollback lets it go
        began = ctx.cursor(STOP) is not None or (ctx.step_done(PREFLIGHT) and not self.spec.dry_run)
        return began and not ctx.step_done(FINALIZE)

    def rollback(self, ctx: RunContext) -> None:
        target_error: DavitError | None = None
        if not ctx.step_done(ROLLBACK_TARGET):
            ctx.step_started(ROLLBACK_TARGET)
            try:
                info = self._info(ctx)
                with self._connect() as host:
                    tgt.remove_target(
                        host, self.layout, self._project_args(info), self._items(info), keep=self.spec.keep_failed_target
                    )
                    summary: dict[str, Any] = {"removed": not self.spec.keep_failed_target}
                    if not self.spec.keep_failed_target:  # a kept target keeps the images it runs
                        summary["images"] = imgs.undo(host, self._images(ctx))
                    claim.release(host, self.layout, self.run_id)
                ctx.step_completed(ROLLBACK_TARGET, summary)
            except DavitError as exc:
                target_error = exc
                ctx.warn(f"the target could not be cleaned up: {exc}", ROLLBACK_TARGET)
        if not ctx.step_done(RESTART_SOURCE):
            ctx.step_started(RESTART_SOURCE)
            containers = list((ctx.cursor(STOP) or {}).get("containers", []))
            problems = self._start_source(containers)
            if problems:
                raise PermanentError("the source could not be started again: " + "; ".join(problems))
            ctx.step_completed(RESTART_SOURCE, {"started": [c["name"] for c in containers]})
        if target_error is not None:
            raise target_error

    # --- steps ---------------------------------------------------------------------------------

    def _info(self, ctx: RunContext) -> dict[str, Any]:
        info = ctx.cursor(INSPECT)
        if info is None:
            raise PermanentError("the migration has no inspection of its source recorded")
        return info

    @staticmethod
    def _items(info: dict[str, Any]) -> list[Item]:
        return [Item.from_json(d) for d in info["items"]]

    def _project_args(self, info: dict[str, Any]) -> str:
        return " ".join(shlex.quote(a) for a in compose_args(info["name"], info))

    def _inspect(self, ctx: RunContext) -> dict[str, Any]:
        project = self._inspect_source()
        # where each bind lands (path_map, outside_binds): its problems fail pre-flight, next
        plan = binds.plan_binds(project.model, project.working_dir, self.layout, self.spec.path_map, self.spec.outside_binds)
        project.items = binds.apply_plan(project.items, plan)
        info = project.to_json()
        info["binds"] = plan.to_json()
        info["images"] = sorted({s.get("image", "") for s in project.model.get("services", {}).values()} - {""})
        ctx.checkpoint(INSPECT, info, items_done=len(project.items))
        if info["outside"]:
            ctx.warn(
                "files the project uses lie outside its directory and are not copied to the target: "
                + ", ".join(info["outside"]),
                INSPECT,
            )
        if info.get("symlinked_out"):
            ctx.warn(
                "files the project uses are symlinks out of its directory and are not followed nor copied "
                "(follow_definition_symlinks = true copies them): " + ", ".join(info["symlinked_out"]),
                INSPECT,
            )
        if plan.skipped:
            skipped = "; ".join(plan.skipped)
            ctx.warn(f'bind paths outside the project are left behind (outside_binds = "skip"): {skipped}', INSPECT)
        return {
            "model": masked_model(project.model, project.written),
            "working_dir": project.working_dir,
            "config_files": project.config_files,
            "files": sorted(info["files"]),
            "outside": info["outside"],
            "items": info["items"],
            "bytes": project.bytes,
            "engine": self.spec.source.engine or DEFAULT_ENGINE,
        }

    def _preflight(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        need = 2 * int(info["bytes"]) + self.spec.min_free_bytes
        source_tar = self._source_tar()  # the export's `tar --sort=name`, where the source is
        running = self._source_images(info["name"])
        # the model names no image for a service built from `build:`: its containers do
        names = sorted(set(info["images"]).union(*(entry["refs"] for entry in running.values())))
        with self._connect() as host:
            # one run writes a project on a target at a time (`claim.py`): taken before the checks
            # that nothing of it exists, kept until finalize or rollback (a dry run lets it go)
            made = claim.missing_top(host, self.layout)
            if taken_from := claim.take(host, self.layout, self.run_id, "migrating", self.inputs.run_ended):
                ctx.warn(f"took over the claim on {self.layout.project} left by run {taken_from}, which ended", PREFLIGHT)
            try:
                planned, facts, need = self._check_target(host, info, running, names, need)
            except BaseException:
                claim.release(host, self.layout, self.run_id, made)  # nothing else was created: nothing is left
                raise
            if self.spec.dry_run:
                claim.release(host, self.layout, self.run_id)
        ctx.checkpoint(PREFLIGHT, {"images": planned}, items_done=len(planned))
        facts["source_tar"] = source_tar
        facts["images_to_send"] = imgs.listing(planned)
        facts["images_bytes"] = sum(p["bytes"] for p in facts["images_to_send"])
        sent_refs = {ref for entry in planned for ref in entry["refs"]}
        if missing := [ref for ref in facts.get("images_missing", []) if ref not in sent_refs]:
            ctx.warn(f"images not on the target (never pulled; start will fail): {', '.join(missing)}", PREFLIGHT)
        return {**facts, "need_bytes": need, "plan": self.plan() if not self.spec.dry_run else PLAN}

    def _check_target(
        self, host: RemoteHost, info: dict[str, Any], running: dict[str, dict[str, Any]], names: list[str], need: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
        if problems := binds.preflight_problems(info, self.layout, host, self._read_source):
            raise tgt.PreflightFailed(f"pre-flight on {host.address.where} failed: " + "; ".join(problems))
        planned = imgs.plan(host, self.spec.images, running)
        # an image sent lies in the store and then in the engine: twice its size
        need += 2 * sum(int(p["bytes"]) for p in planned if p["send"])
        facts = tgt.preflight(host, self.layout, self._items(info), self.spec.target.helper_image, need, names)
        return planned, facts, need

    @staticmethod
    def _images(ctx: RunContext) -> list[dict[str, Any]]:
        # a run recorded before images travelled has no plan: it sends none
        return list((ctx.cursor(PREFLIGHT) or {}).get("images", []))

    def _stop(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(STOP)
        if cursor is None:
            with engine_errors(f"listing the containers of {self.spec.source.project}"):
                running = self.client.containers.list(
                    filters={"label": f"{COMPOSE_PROJECT}={self.spec.source.project}", "status": "running"}
                )
            cursor = {"containers": sorted(({"id": c.id, "name": c.name} for c in running), key=lambda c: c["name"])}
            # Recorded before stopping: a rollback knows what to start again.
            ctx.checkpoint(STOP, cursor, items_done=len(cursor["containers"]))
        for c in cursor["containers"]:
            with engine_errors(f"stopping container {c['name']}"):
                self.client.containers.get(c["id"]).stop(timeout=self.spec.stop_timeout)
        return {"stopped": [c["name"] for c in cursor["containers"]]}

    def _move_data(self, ctx: RunContext) -> None:
        """Export, transfer and import as one pipeline per item (`pipeline.py`); each of the three
        steps keeps its own checkpoints: export and import per item, transfer per acknowledged
        bytes. An item cut short is redone whole on resume, sending only what the store lacks."""
        info = self._info(ctx)
        todo = [step for step in DATA_STEPS if not ctx.step_done(step)]
        for step in todo:
            ctx.step_started(step)
        # the totals inspect found (the items, their sizes as the engine reports them: an
        # estimate of the tar bytes exported, and the images to send). The transfer sends at
        # most those bytes (chunks compressed for the wire, less what the target holds
        # already): the same figure is its estimate, a ceiling its bar may end below.
        planned = self._images(ctx)
        image_bytes = sum(int(p["bytes"]) for p in planned if p["send"])
        items = len(info["items"]) + sum(1 for p in planned if p["send"])
        ctx.step_total(EXPORT, bytes_total=int(info["bytes"]) + image_bytes, items_total=items)
        ctx.step_total(TRANSFER, bytes_total=int(info["bytes"]) + image_bytes)
        ctx.step_total(IMPORT, items_total=items)
        exported: dict[str, Any] = dict((ctx.cursor(EXPORT) or {}).get("done", {}))
        imported: list[str] = list((ctx.cursor(IMPORT) or {}).get("done", []))
        cursor = dict(ctx.cursor(TRANSFER) or {"chunks_sent": 0, "bytes_sent": 0})
        this_attempt = {"chunks": 0, "bytes": 0, "unrecorded": 0}

        def record_transfer() -> None:
            ctx.checkpoint(TRANSFER, dict(cursor), bytes_done=cursor["bytes_sent"], items_done=cursor["chunks_sent"])
            this_attempt["unrecorded"] = 0

        def on_stored(chunks: int, size: int) -> None:
            cursor["chunks_sent"] += chunks
            cursor["bytes_sent"] += size
            this_attempt["chunks"] += chunks
            this_attempt["bytes"] += size
            this_attempt["unrecorded"] += size
            if this_attempt["unrecorded"] >= CHECKPOINT_BYTES:
                record_transfer()

        sent: set[str] = set()
        unchanged: list[str] = []  # items the target held already: nothing written
        spawn = self._spawner()  # where each item's export runs: here, or on the source's host
        with self._connect() as host:
            present = tgt.present_chunks(host, self.layout)
            at_start = set(present)
            # every volume still to fill made in one session, not one each (`_unpacker`)
            tgt.create_volumes(host, [i for i in self._items(info) if i.id not in imported], info["name"])
            # volumes whose mountpoint the SSH user reaches: unpacked there, not through the helper
            self._direct = tgt.direct_mountpoints(
                host, [i for i in self._items(info) if i.id not in imported], self.spec.target.helper_image
            )
            for item in self._items(info) + self._image_items(planned, host):
                if item.id in imported:
                    continue
                ctx.check_stop()
                unpack, walker = self._unpacker(host, item, info["name"])
                moved = move_item(
                    host, self.layout.store, item, unpack, WIRE_LEVEL, present, sent, on_stored, ctx.check_stop, walker, spawn
                )
                imgs.check_loaded(host, self.layout.store, item)  # an image's ID, before it counts as imported
                if not moved.unpacked:
                    unchanged.append(item.id)
                exported[item.id] = {"chunks": moved.ids, "sizes": moved.sizes, "bytes": moved.plain_bytes}
                if EXPORT in todo:
                    ctx.checkpoint(
                        EXPORT,
                        {"done": exported},
                        bytes_done=sum(d["bytes"] for d in exported.values()),
                        items_done=len(exported),
                    )
                if this_attempt["unrecorded"]:
                    record_transfer()
                imported.append(item.id)
                ctx.checkpoint(IMPORT, {"done": imported}, items_done=len(imported))
            tagged = imgs.tag(host, planned)
        size_of: dict[str, int] = {}
        for d in exported.values():
            size_of.update(zip(d["chunks"], d.get("sizes") or [0] * len(d["chunks"]), strict=True))
        summaries = {
            EXPORT: {"items": len(exported), "tar_bytes": sum(d["bytes"] for d in exported.values()), "chunks": len(size_of)},
            TRANSFER: {
                "chunks": len(size_of),
                "already_on_target": len(size_of) - this_attempt["chunks"],
                "bytes_needed": sum(size_of.values()),
                "bytes_missing": sum(n for c, n in size_of.items() if c not in at_start),
                "chunks_sent": this_attempt["chunks"],
                "bytes_sent": this_attempt["bytes"],
                "bytes_sent_all_attempts": cursor["bytes_sent"],
            },
            IMPORT: {"imported": imported, "unchanged_on_target": unchanged, "images_tagged": tagged},
        }
        for step in todo:
            ctx.step_completed(step, summaries[step])

    def _connect(self) -> AbstractContextManager[RemoteHost]:
        """The target's session (a restore onto this host's engine: `localhost.py`)."""
        return ssh_connect(self.address)

    def _image_items(self, planned: list[dict[str, Any]], host: RemoteHost) -> list[imgs.ImageItem]:
        """The planned images to send, as pipeline items (a restore's come from its snapshot)."""
        return imgs.items(planned, self.spec.source.engine, host)

    def _unpacker(self, host: RemoteHost, item: Item, project: str) -> tuple[str, str | None]:
        """The command that unpacks the item's stream on the target, and its walker (none for an image)."""
        if isinstance(item, imgs.ImageItem):
            return imgs.unpacker(host, self.layout.store, item), None
        helper = self.spec.target.helper_image
        if item.kind == "volume":  # made by `tgt.create_volumes` before the items went through
            if mountpoint := getattr(self, "_direct", {}).get(item.target):
                return tgt.direct_unpacker(mountpoint, item.target), tgt.direct_walker(mountpoint)
            return tgt.volume_unpacker(item, helper), tgt.walker_for(item, helper)
        unpack = tgt.unpacker_for(host, item, helper, project)  # never through a symlink (`confined.py`)
        return unpack, tgt.walker_for(item, helper)

    def _write(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        wd = info["working_dir"].rstrip("/")
        # compose and env files name the project directory; configs and secrets go byte for byte
        translated = set(info.get("translated", info["files"]))
        files: dict[str, tuple[bytes, int]] = {}
        self._require_inside(info)  # before any of them is read (`compose_texts` reads some)
        compose_texts = binds.compose_texts(info, self.layout, self._read_source)  # outside binds placed (path_map)
        for rel, local in info["files"].items():
            data = self._read_source(local)
            if rel in compose_texts:
                data = compose_texts[rel].text.encode()
            elif rel in translated:
                data = data.replace(wd.encode(), self.layout.project_dir.encode())
            files[rel] = (data, 0o600 if rel == ".env" else self._source_mode(local))
        with self._connect() as host:
            tgt.write_project(host, self.layout, files)
            binds.verify_on_target(host, self.layout, self._project_args(info), info)
        return {"files": sorted(files), "project_dir": self.layout.project_dir}

    def _start(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        with self._connect() as host:
            out = tgt.compose(host, self.layout, f"{self._project_args(info)} up -d --pull never --remove-orphans")
        return {"output": out[-2000:]}

    def _verify(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        with self._connect() as host:
            states = tgt.wait_healthy(
                host, self.layout, self._project_args(info), info["services"], self.spec.verify_timeout, ctx.check_stop
            )
        return {"services": states}

    def _finalize(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        # opened before anything is removed: a resumed run whose repository cannot be opened now
        # fails here with its source still there for the rollback to start again
        staging = self.repo.staging(self.run_id)
        removed = self._remove_source(info) if self.spec.remove_source else []
        cache: dict[str, Any] = {}
        with self._connect() as host:
            if self.spec.keep_transfer_cache:
                # a repeat sends only the chunks the store lacks: keep those this migration used
                used = {c for d in (ctx.cursor(EXPORT) or {}).get("done", {}).values() for c in d["chunks"]}
                cache = {"transfer_cache": self.layout.store, "cached_chunks": len(used)}
                cache["pruned_chunks"] = tgt.prune_store(host, self.layout, used)
            else:
                host.run(f"rm -rf {shlex.quote(self.layout.store)}")
            claim.release(host, self.layout, self.run_id)
        staging.remove()  # where an earlier davit kept exported chunks
        return {"source": "removed" if self.spec.remove_source else "stopped", "removed": removed, **cache}

    # --- the source's engine and files: this host's (a source over SSH: `sshsource.py`) ---------

    def _inspect_source(self) -> Project:
        return inspect_project(
            self.client,
            self.spec.source.engine,
            self.spec.source.project,
            self.layout.project_dir,
            follow_symlinks=self.spec.follow_definition_symlinks,
        )

    def _source_tar(self) -> str:
        return require_gnu_tar()

    def _source_images(self, project: str) -> dict[str, dict[str, Any]]:
        return imgs.source_images(self.client, project)

    def _start_source(self, containers: list[dict[str, str]]) -> list[str]:
        return start_containers(self.client, containers)

    def _read_source(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def _realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def _require_inside(self, info: dict[str, Any]) -> None:
        """Each definition file named inside the project still resolves inside it as it is read
        (a symlink swapped in after inspect is not followed either; `definition.py`'s rule)."""
        if self.spec.follow_definition_symlinks:
            return
        wd = info["working_dir"].rstrip("/")
        resolved_wd = self._realpath(wd).rstrip("/")
        named = {os.path.normpath(f) for f in info.get("config_files") or []}
        for local in info["files"].values():
            if os.path.normpath(local) in named:
                continue  # a `-f` compose file: the operator's own, read as compose reads it
            resolved = self._realpath(local)
            if not resolved.startswith(resolved_wd + "/"):
                raise DefinitionSymlinkedOut(
                    f"definition file {local} of compose project {info['name']} now resolves to {resolved}, "
                    "outside the project directory (a symlink): not followed (follow_definition_symlinks = true allows it)"
                )

    def _source_mode(self, path: str) -> int:
        return Path(path).stat().st_mode & 0o777

    def _spawner(self) -> Spawn | None:
        return None  # the export runs here

    def _remove_source(self, info: dict[str, Any]) -> list[str]:
        removed: list[str] = []
        label = f"{COMPOSE_PROJECT}={info['name']}"
        with engine_errors(f"removing the source of {info['name']}"):
            for c in self.client.containers.list(all=True, filters={"label": label}):
                c.remove(force=True)
                removed.append(c.name)
            for n in self.client.networks.list(filters={"label": label}):
                n.remove()
            if self.spec.remove_source_volumes:
                for item in self._items(info):
                    if item.kind == "volume":
                        try:
                            self.client.volumes.get(item.target).remove(force=True)
                        except docker.errors.NotFound:
                            continue  # removed by an earlier try of this step: finalize is resumed, not redone
                        removed.append(f"volume {item.target}")
        return removed
