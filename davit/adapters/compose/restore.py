"""compose.restore: a `compose` snapshot onto a host reached over SSH, as a migration's target side.

The snapshot takes the place of the migration's source: `ComposeMigrateWork`'s steps run with
the snapshot as their item source (`snapshotstream.py` makes each volume's and bind's tar
stream, and each image's export, from the snapshot's verified chunks), so everything on the
target is the migration's: the content-addressed chunk store (a resumed restore sends only the
chunks the store lacks), volumes unpacked in a helper container, bind paths through a
helper container with their directory (reached by `confined.py`) mounted, the project's files written with the project
directory and `path_map` translated, images loaded and their IDs checked, `docker compose -p
NAME up -d --pull never`, verify; a failure once pre-flight passed is undone by `rollback`.

Plan: `inspect` (the plan of record made at prepare) -> `preflight` -> `export`/`transfer`/
`import` (one pipeline, item by item) -> `write_project` -> `start_target` -> `verify` ->
`finalize` (the store removed). No source is stopped and none is started again.

`prepare` reads the snapshot and refuses, before anything happens on the target: a snapshot of
another kind, hostile names in it (`snapshotplan.py`), a target project name compose refuses,
and a project that already exists on the target (containers or volumes of its name, or a
non-empty project directory). An image the snapshot holds is loaded only if the target lacks its
ID; its export is read through first and must be that one untagged image (`snapshotimages.py`),
and is sent without the layers whose chain the target holds (`imageexport.filtered`), as a
migration sends one. One run restores a project on a target at a time (`claim.py`).
A rollback removes the target project, its volumes and bind data, the images this restore
loaded that nothing else uses, and the chunk store (all but the store kept with
`keep_failed_target`).

An image built by the stack (`build:`) runs under the name compose gives it, `PROJECT-SERVICE`;
restored under another project name it is tagged `NEWPROJECT-SERVICE` on the target, so `up`
finds it rather than building.
"""

from __future__ import annotations

import re
import shlex
import tarfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

from davit.adapters.compose import binds as bnd
from davit.adapters.compose import claim
from davit.adapters.compose import images as imgs
from davit.adapters.compose import target as tgt
from davit.adapters.compose.localhost import LocalAddress
from davit.adapters.compose.localhost import connect as local_connect
from davit.adapters.compose.migrate import (
    EXPORT,
    FINALIZE,
    IMPORT,
    INSPECT,
    PREFLIGHT,
    ROLLBACK_TARGET,
    START,
    TRANSFER,
    VERIFY,
    WRITE,
    ComposeMigrateWork,
)
from davit.adapters.compose.pipeline import Spawn, tar_command
from davit.adapters.compose.snapshotimages import check_image_export
from davit.adapters.compose.snapshotplan import SnapshotPlan, read_snapshot
from davit.adapters.compose.snapshotstream import StreamProcess, content, part_entries, snapshot_entries, tar_stream
from davit.adapters.compose.source import Item
from davit.adapters.compose.stacktree import FILE_TYPE
from davit.adapters.docker.engine import engine_address
from davit.adapters.docker.imageexport import filtered
from davit.adapters.files.treekinds import require_kind
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.ssh.remote import RemoteHost, SshAddress
from davit.adapters.ssh.remote import connect as ssh_connect
from davit.adapters.steps import run_steps
from davit.domain.errors import CorruptSnapshot, PermanentError, UnsafeName
from davit.domain.jobs.compose_restore import PROJECT_PATTERN, ComposeRestoreJob
from davit.domain.pathmap import map_path, within
from davit.domain.ports import RunContext

q = shlex.quote
PLAN = [INSPECT, PREFLIGHT, EXPORT, TRANSFER, IMPORT, WRITE, START, VERIFY, FINALIZE]
RESTORE_KINDS = ("compose",)
SNAPSHOT_COMMAND = "davit-snapshot"  # the "export command" of an image read from the snapshot


class ProjectExists(PermanentError):
    """The target already has a compose project of the restore's name: nothing is overwritten."""


@dataclass
class SnapshotImageItem(imgs.ImageItem):
    """An image to load on the target, read from the snapshot's `images/<id>.tar`."""

    path: str = ""

    def export_command(self) -> list[str]:
        return [SNAPSHOT_COMMAND, self.path, *sorted(self.skip)]


def renamed_ref(ref: str, old: str, new: str, services: list[str]) -> str:
    """The name a restored project runs an image by: compose names a built service's image
    `PROJECT-SERVICE` (`PROJECT_SERVICE` before compose 2.? ), which follows the project's name."""
    for service in services:
        for sep in ("-", "_"):
            if ref in (f"{old}{sep}{service}", f"{old}{sep}{service}:latest"):
                return f"{new}{sep}{service}" + (":latest" if ref.endswith(":latest") else "")
    return ref


class ComposeRestoreWork(ComposeMigrateWork):
    def __init__(self, inputs: RunInputs[ComposeRestoreJob]) -> None:
        # the migration's steps read `spec` for what both kinds have (`target`, `verify_timeout`)
        RunWork.__init__(self, cast("RunInputs[Any]", inputs))
        self.restore_spec: ComposeRestoreJob = inputs.spec
        t = self.restore_spec.target
        self.target_address: SshAddress | LocalAddress
        if t.host is not None and t.key_file is not None and t.known_hosts is not None:
            self.address = self.target_address = SshAddress(t.host, t.port, t.user, t.key_file, t.known_hosts, t.connect_timeout)
        else:  # this host's engine, through the same commands run here (`localhost.py`)
            self.target_address = LocalAddress(engine_address(t.engine))
        self._client = None
        recorded = self.details.get("restore") or {}
        self.layout = tgt.TargetLayout(t.base_path, str(recorded.get("name") or self.restore_spec.project or "unprepared"))

    def _connect(self) -> AbstractContextManager[RemoteHost]:
        if isinstance(self.target_address, LocalAddress):
            return cast("AbstractContextManager[RemoteHost]", local_connect(self.target_address))
        return ssh_connect(self.target_address)

    def plan(self) -> list[str]:
        return list(PLAN)

    def run(self, ctx: RunContext) -> None:
        run_steps(ctx, self.steps(), stop_between=True)

    # --- prepare: the snapshot read and checked, the target's name free ---------------------------

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        spec = self.restore_spec
        snap = self.repo.resolve(spec.source.snapshot, spec.source.job)
        require_kind(snap.id, snap.kind, snap.job, RESTORE_KINDS, "compose.restore")
        plan = read_snapshot(self.repo, snap)
        name = spec.project or plan.project
        if not _is_project_name(name):
            raise UnsafeName(snap.id, name, "not a compose project name (lowercase letters, digits, '-' and '_')")
        self.layout = tgt.TargetLayout(spec.target.base_path, name)
        info = self._plan_of_record(plan, name, snap.id)
        for skipped in plan.skipped_binds:
            ctx.warn(f"bind source {skipped}: no data restored", INSPECT)
        for skipped in plan.skipped_definition:
            ctx.warn(f"definition file {skipped}", INSPECT)
        if plan.outside:
            ctx.warn("files outside the project directory were not in the backup: " + ", ".join(plan.outside), INSPECT)
        with self._connect() as host:
            self._refuse_existing(host, info)
        self.details = {
            "snapshot_id": snap.id,
            "snapshot_project": plan.project,
            "project": name,
            "target": self.target_address.where,
            "project_dir": self.layout.project_dir,
            "restore": info,
        }
        return self.details

    def _plan_of_record(self, plan: SnapshotPlan, name: str, snapshot_id: str) -> dict[str, Any]:
        wd = plan.working_dir.rstrip("/") or "/"
        items: list[Item] = []
        parts: dict[str, str] = {}
        for v in plan.volumes:
            # compose names a volume PROJECT_KEY unless the file gives it a `name:`
            target = f"{name}_{v['key']}" if v["name"] == f"{plan.project}_{v['key']}" else v["name"]
            item = Item(f"volume-{v['key']}", "volume", v["path"], target, key=v["key"])
            items.append(item)
            parts[item.id] = v["path"]
        for n, b in enumerate(plan.binds):
            item = Item(f"bind-{n}", "bind", b["source"], b["source"], is_file=b["type"] == FILE_TYPE)
            items.append(item)
            parts[item.id] = b["path"]
        model = _bind_model(plan)
        bind_plan = bnd.plan_binds(model, wd, self.layout, self.restore_spec.path_map, self.restore_spec.outside_binds)
        # a bind source the snapshot holds no data of (a socket, a device) keeps its path, unchecked
        bind_plan.binds += [
            {"source": s, "target": s, "how": bnd.SKIPPED, "services": list(plan.services)} for s in plan.unstored
        ]
        # ... but the stack mounts the target's own path there: outside the project directory and
        # unmapped, `outside_binds = "fail"` (the default) holds for it as for a stored one, or a
        # snapshot naming any path (`/`) "not stored" would have it mounted unasked
        if self.restore_spec.outside_binds == "fail":
            bind_plan.problems += [
                f"services {', '.join(plan.services)} bind-mount {s}, outside the project directory {wd}, which the "
                "snapshot holds no data of: the restored stack would mount the target's own "
                f'{s} (set outside_binds = "keep-path" or "skip" to allow it)'
                for s in plan.unstored
                if not within(s, wd) and map_path(s, self.restore_spec.path_map) is None
            ]
        items = bnd.apply_plan(items, bind_plan)
        images = [
            {
                "id": i["id"],
                "refs": sorted({renamed_ref(r, plan.project, name, plan.services) for r in i["refs"]}),
                "path": i["path"],
                "chunks": i["chunks"],
                "bytes": i["size"],
                "layers": [],
            }
            for i in plan.images
        ]
        definition = dict(plan.definition)
        # compose and env files name the project directory: translated; configs and secrets not
        translated = [
            rel for rel in definition if rel in plan.compose_files or rel.endswith((".yml", ".yaml", ".env")) or rel == ".env"
        ]
        return {
            "name": name,
            "snapshot_id": snapshot_id,
            "snapshot_project": plan.project,
            "working_dir": wd,
            "config_files": plan.config_files,
            "compose_files": plan.compose_files,
            "files": {rel: f"{wd}/{rel}" for rel in definition},
            "translated": translated,
            "definition": definition,
            "outside": plan.outside,
            "items": [i.to_json() for i in items],
            "parts": parts,
            "binds": bind_plan.to_json(),
            "snapshot_images": images,
            "bytes": sum(plan.part_bytes.get(parts[i.id], 0) for i in items),
            "services": plan.services,
        }

    def _refuse_existing(self, host: RemoteHost, info: dict[str, Any]) -> None:
        name = info["name"]
        found: list[str] = []
        label = q(f"label=com.docker.compose.project={name}")
        if host.run(f"docker ps -aq --filter {label}").stdout.strip():
            found.append("containers")
        volumes = set(host.run(f"docker volume ls -q --filter {label}").stdout.split())
        for item in info["items"]:
            if (
                item["kind"] == "volume"
                and host.run(f"docker volume inspect {q(item['target'])} >/dev/null 2>&1", check=False).status == 0
            ):
                volumes.add(item["target"])
        if volumes:
            found.append("volumes " + ", ".join(sorted(volumes)))
        project_dir = self.layout.project_dir
        if host.run(f'test -e {q(project_dir)} && test -n "$(ls -A {q(project_dir)})"', check=False).status == 0:
            found.append(f"a non-empty project directory {project_dir}")
        owner = claim.owner(host, tgt.TargetLayout(self.layout.base_path, name))
        if owner is not None and not self.inputs.run_ended(owner):  # an ended run's claim is taken over
            found.append(f"a restore of that name under way (run {owner}, {self._claim_path(name)})")
        if found:
            raise ProjectExists(
                f"compose project {name} already exists on {host.address.where} ({'; '.join(found)}); "
                'a restore never overwrites one: remove it, or restore under another name (project = "...")'
            )

    # --- steps ---------------------------------------------------------------------------------

    def _restore(self) -> dict[str, Any]:
        info = self.details.get("restore")
        if not info:
            raise PermanentError("the restore has no plan of record (its prepare was not recorded)")
        return dict(info)

    def _inspect(self, ctx: RunContext) -> dict[str, Any]:
        info = self._restore()
        ctx.checkpoint(INSPECT, info, items_done=len(info["items"]))
        return {
            "snapshot_id": info["snapshot_id"],
            "project": info["name"],
            "snapshot_project": info["snapshot_project"],
            "files": sorted(info["files"]),
            "items": info["items"],
            "images": [{"id": i["id"], "refs": i["refs"], "bytes": i["bytes"]} for i in info["snapshot_images"]],
            "bytes": info["bytes"],
        }

    def _preflight(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        spec = self.restore_spec
        need = 2 * int(info["bytes"]) + spec.min_free_bytes
        wanted = {i["id"]: i for i in info["snapshot_images"]} if spec.images != "none" else {}
        with self._connect() as host:
            made = claim.missing_top(host, self.layout)
            self._claim(host, ctx)
            try:
                return self._checked_preflight(ctx, host, info, wanted, need)
            except Exception:
                # nothing else was created and no rollback follows a failed pre-flight: nothing is left
                claim.release(host, self.layout, self.run_id, made)
                raise

    def _checked_preflight(
        self, ctx: RunContext, host: RemoteHost, info: dict[str, Any], wanted: dict[str, Any], need: int
    ) -> dict[str, Any]:
        spec = self.restore_spec
        if problems := bnd.preflight_problems(info, self.layout, host, self._read_source):
            raise tgt.PreflightFailed(f"pre-flight on {host.address.where} failed: " + "; ".join(problems))
        planned = imgs.plan(host, "missing", wanted) if wanted else []
        # a snapshot's names are hostile as its export's own tags are: a restore never moves a
        # name the target holds for another image (its other stacks would run the snapshot's)
        if moved := [
            f"{ref} (image {p['id']} of the snapshot; the target's {ref} is {before})"
            for p in planned
            for ref, before in sorted(p["previous"].items())
            if before is not None and before != p["id"]
        ]:
            raise tgt.PreflightFailed(
                f"pre-flight on {host.address.where} failed: the snapshot would move names the target holds for other "
                f'images: {", ".join(moved)}; remove or rename them there, or restore with images = "none"'
            )
        snap_id = info["snapshot_id"]
        chains = imgs.target_chains(host) if planned else set()
        for p in planned:
            if p["send"]:  # read through before the engine sees a byte of it; its layers from its config
                exported = content(self.repo, snap_id, p["path"], p["chunks"], p["bytes"])
                p["layers"] = check_image_export(snap_id, p["path"], p["id"], exported)
                p["layers_on_target"] = sum(c in chains for c in imgs.chain_ids(p["layers"]))
        need += 2 * sum(int(p["bytes"]) for p in planned if p["send"])
        before = sorted(set(host.run("docker image ls -aq --no-trunc").stdout.split()))
        facts = tgt.preflight(host, self.layout, self._items(info), spec.target.helper_image, need, [])
        # what a rollback may remove: images loaded by this restore, never one the target had
        recorded = [{k: v for k, v in p.items() if k != "chunks"} | {"chunks": p["chunks"]} for p in planned]
        ctx.checkpoint(PREFLIGHT, {"images": recorded, "images_before": before}, items_done=len(planned))
        facts["images_to_send"] = imgs.listing(planned)
        facts["images_bytes"] = sum(p["bytes"] for p in facts["images_to_send"])
        return {**facts, "need_bytes": need, "plan": PLAN}

    # --- the claim: one run restores a project name on a target at a time (`claim.py`) -----------

    def _claim_path(self, name: str | None = None) -> str:
        return claim.claim_path(tgt.TargetLayout(self.layout.base_path, name or self.layout.project))

    def _claim(self, host: RemoteHost, ctx: RunContext) -> None:
        """Claim the project's name on the target for this run, before pre-flight checks that
        nothing of it exists (two restores of one name would otherwise both pass)."""
        if taken_from := claim.take(host, self.layout, self.run_id, "restoring", self.inputs.run_ended):
            ctx.warn(f"took over the claim on {self.layout.project} left by run {taken_from}, which ended", PREFLIGHT)

    def _release(self, host: RemoteHost) -> None:
        claim.release(host, self.layout, self.run_id)

    def _image_items(self, planned: list[dict[str, Any]], host: RemoteHost) -> list[imgs.ImageItem]:
        """As the migration's: the layers whose chain the target holds are left out of the stream
        (decided now; a run recorded before the layers were read sends its images whole)."""
        chains = imgs.target_chains(host) if any(p["send"] for p in planned) else set()
        out: list[imgs.ImageItem] = []
        for n, entry in enumerate(p for p in planned if p["send"]):
            name = entry["refs"][0] if entry["refs"] else entry["id"]
            layers = list(entry.get("layers") or [])
            skip = tuple(d for d, c in zip(layers, imgs.chain_ids(layers), strict=True) if c in chains)
            out.append(SnapshotImageItem(f"image-{n}", "image", entry["id"], name, skip=skip, path=entry["path"]))
        return out

    def _move_data(self, ctx: RunContext) -> None:
        self._streams = self._stream_sources(ctx)
        super()._move_data(ctx)

    def _stream_sources(self, ctx: RunContext) -> dict[tuple[str, ...], tuple[str, str | None]]:
        """Each item's export command (as `pipeline.tar_command` gives it) -> its part in the
        snapshot, and the member name of a bind that is one file."""
        info = self._info(ctx)
        found: dict[tuple[str, ...], tuple[str, str | None]] = {}
        for item in self._items(info):
            single = item.source.rstrip("/").rsplit("/", 1)[-1] if item.is_file else None
            found[tuple(tar_command(item))] = (info["parts"][item.id], single)
        return found

    def _spawner(self) -> Spawn | None:
        info = self._restore()
        snap = self.repo.resolve(info["snapshot_id"])
        images = {i["path"]: i for i in info["snapshot_images"]}
        streams = getattr(self, "_streams", {})

        def spawn(argv: list[str]) -> StreamProcess:
            if argv[:1] == [SNAPSHOT_COMMAND]:
                image = images[argv[1]]
                export = content(self.repo, snap.id, image["path"], image["chunks"], image["bytes"])
                skip = {d.removeprefix("sha256:") for d in argv[2:]}
                return StreamProcess(_without_layers(snap.id, image, export, skip) if skip else export)
            part, single = streams[tuple(argv)]
            return StreamProcess(_part_stream(self, snap, part, single))

        return spawn

    def _require_inside(self, info: dict[str, Any]) -> None:
        return  # the files come from the snapshot, where a symlink was stored as the link it is

    def _read_source(self, path: str) -> bytes:
        info = self._restore()
        rel = path.removeprefix(info["working_dir"].rstrip("/") + "/")
        entry = info["definition"].get(rel)
        if entry is None:
            raise PermanentError(f"definition file {rel} is not in snapshot {info['snapshot_id']}")
        return b"".join(content(self.repo, info["snapshot_id"], f"definition/{rel}", entry["chunks"], entry["size"]))

    def _source_mode(self, path: str) -> int:
        info = self._restore()
        rel = path.removeprefix(info["working_dir"].rstrip("/") + "/")
        return int(info["definition"][rel]["mode"]) & 0o777

    def _finalize(self, ctx: RunContext) -> dict[str, Any]:
        with self._connect() as host:
            host.run(f"rm -rf {q(self.layout.store)}")
            self._release(host)
        return {"store": "removed"}

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        info = self._info(ctx)
        return {
            "snapshot_id": info["snapshot_id"],
            "project": info["name"],
            "target": self.target_address.where,
            "project_dir": self.layout.project_dir,
            "services": info["services"],
            "items": len(info["items"]),
            "bytes": info["bytes"],
        }

    # --- rollback ------------------------------------------------------------------------------

    def needs_rollback(self, ctx: RunContext) -> bool:
        # nothing is created on the target before pre-flight passed (it refuses a taken name)
        return ctx.step_done(PREFLIGHT) and not ctx.step_done(FINALIZE)

    def rollback(self, ctx: RunContext) -> None:
        if ctx.step_done(ROLLBACK_TARGET):
            return
        ctx.step_started(ROLLBACK_TARGET)
        info = self._info(ctx)
        keep = self.restore_spec.keep_failed_target
        with self._connect() as host:
            tgt.remove_target(host, self.layout, self._project_args(info), self._items(info), keep=keep)
            summary: dict[str, Any] = {"removed": not keep}
            if not keep:
                summary["images"] = imgs.undo(host, self._images(ctx)) + self._remove_stray_loads(host, ctx)
                host.run(f"rm -rf {q(self.layout.store)}")
            self._release(host)
        ctx.step_completed(ROLLBACK_TARGET, summary)

    def _remove_stray_loads(self, host: RemoteHost, ctx: RunContext) -> list[str]:
        """Images a load gave that are not the snapshot's (a crafted export that got past the
        checks): removed unless the target had them before or something uses them."""
        before = set((ctx.cursor(PREFLIGHT) or {}).get("images_before", []))
        planned = {p["id"] for p in self._images(ctx)}
        said = host.run(f"cat {q(self.layout.store)}/images/*.loaded 2>/dev/null; true").stdout
        loaded = {line.split(":", 1)[1].strip() for line in said.splitlines() if line.startswith("Loaded image ID:")}
        removed = []
        for image_id in sorted(loaded - before - planned):
            used = host.run(f"docker ps -aq --filter ancestor={q(image_id)}", check=False).stdout.strip()
            if not used and host.run(f"docker image rm {q(image_id)} >/dev/null 2>&1", check=False).status == 0:
                removed.append(f"removed {image_id}")
        return removed


def _is_project_name(name: str) -> bool:
    return re.match(PROJECT_PATTERN, name) is not None


def _bind_model(plan: SnapshotPlan) -> dict[str, Any]:
    """The part of a compose model `binds.plan_binds` reads, from the snapshot's binds."""
    services: dict[str, Any] = {}
    for b in plan.binds:
        for service in b["services"] or list(plan.services):
            services.setdefault(service, {"volumes": []})["volumes"].append({"type": "bind", "source": b["source"]})
    return {"services": services}


def _part_stream(work: ComposeRestoreWork, snap: Any, part: str, single: str | None) -> Iterator[bytes]:
    return tar_stream(work.repo, snap.id, part_entries(snapshot_entries(work.repo, snap), part), single)


def _without_layers(snapshot_id: str, image: dict[str, Any], export: Iterator[bytes], skip: set[str]) -> Iterator[bytes]:
    """The snapshot's export less the layers in `skip` (`imageexport.filtered`, checked again as
    the one untagged image `image["id"]`); a crafted export fails as the snapshot's fault."""
    try:
        yield from filtered(export, skip, image["id"])
    except tarfile.TarError as exc:
        raise CorruptSnapshot(snapshot_id, image["path"], f"not an image export the engine could load: {exc}") from None
