"""The images of a migrated stack: which to send, sending them, checking them, taking them back.

`images = "missing"` (the job's default) sends every image the project's containers run that
the target lacks by image ID, `"all"` every one, `"none"` none (the target must have or build
them, as before this existed). `plan` decides at pre-flight, and records per image its ID, the
names the project uses for it, its size and layers, and what the target held before (the ID,
and what each name pointed to): the rollback undoes exactly what the migration changed.

An image travels as an `ImageItem` through the volumes' pipeline (`pipeline.py`): its export
(`davit/adapters/docker/imageexport.py`, by ID, deterministic) less the layers whose chain the
target already holds, cut into content-addressed chunks; the target's `docker load` reads the
stream and writes what it loaded into the store, and `check_loaded` compares that ID with the
source's (a mismatch fails the run naming the image) before the names are tagged. A `kill -9`
mid-transfer resumes as volumes do: the export is cut into the same chunks, and only those the
store lacks are sent.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

import docker

from davit.adapters.compose.source import Item
from davit.adapters.docker.engine import COMPOSE_PROJECT, engine_address, engine_errors
from davit.adapters.docker.imageexport import command as export_command
from davit.adapters.docker.imageexport import environment as export_environment
from davit.adapters.ssh.remote import RemoteCommandFailed, RemoteHost
from davit.domain.errors import PermanentError

q = shlex.quote
MODES = ("missing", "all", "none")
ID_MARK = "--- davit: image ID ---"  # between the load's note and the inspected ID (`check_loaded`)


class ImageMismatch(PermanentError):
    pass


@dataclass
class ImageItem(Item):
    """An image to send: `source` is its ID on the source engine, `target` its first name."""

    engine: str = ""
    skip: tuple[str, ...] = ()  # diff IDs of layers the target holds (their chain too): not sent

    def export_command(self) -> list[str]:
        return export_command(self.source, list(self.skip))

    def export_environment(self) -> dict[str, str]:
        return export_environment(engine_address(self.engine or None))


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of each layer (the engine's key for a layer with all below it)."""
    chains: list[str] = []
    for diff in diff_ids:
        chains.append(diff if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest())
    return chains


def source_images(client: docker.DockerClient, project: str) -> dict[str, dict[str, Any]]:
    """The images the project's containers run, by ID: the names they are run by, size, layers.
    A name is resolved on the engine now (what `up` would run); a name gone from the engine
    leaves the image the container was made from."""
    found: dict[str, dict[str, Any]] = {}
    with engine_errors(f"listing the images of compose project {project}"):
        containers = client.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT}={project}"})
        for c in sorted(containers, key=lambda c: c.name):
            ref = str(c.attrs.get("Config", {}).get("Image") or "")
            try:
                image = client.images.get(ref) if ref else client.images.get(c.attrs["Image"])
            except docker.errors.ImageNotFound:
                image = client.images.get(c.attrs["Image"])
            _add(found, image, ref)
    return found


def describe(client: docker.DockerClient, refs: list[str]) -> dict[str, dict[str, Any]]:
    """The images these names (or IDs) stand for on the engine, as `source_images` lists them."""
    found: dict[str, dict[str, Any]] = {}
    for ref in refs:
        with engine_errors(f"inspecting image {ref}"):
            _add(found, client.images.get(ref), ref)
    return found


def _add(found: dict[str, dict[str, Any]], image: Any, ref: str) -> None:
    add_inspected(found, str(image.id), image.attrs, ref)


def add_inspected(found: dict[str, dict[str, Any]], image_id: str, attrs: dict[str, Any], ref: str) -> None:
    """Note the image `docker image inspect` gave as `attrs` in `found`, run by the name `ref`."""
    entry = found.setdefault(
        image_id,
        {
            "id": image_id,
            "refs": [],
            "bytes": int(attrs.get("Size") or 0),
            "layers": list((attrs.get("RootFS") or {}).get("Layers") or []),
        },
    )
    if ref and not ref.startswith("sha256:") and ref not in entry["refs"]:
        entry["refs"].append(ref)


def target_chains(host: RemoteHost) -> set[str]:
    """The chain IDs of every layer of every image on the target."""
    command = (
        "ids=$(docker image ls -a -q --no-trunc | sort -u); "
        "[ -z \"$ids\" ] || docker image inspect --format '{{range .RootFS.Layers}}{{.}} {{end}}' $ids"
    )
    done = host.run(command, check=False)
    # an image removed between the listing and its inspection (another stack's `docker image
    # rm`, a prune) is not an error: it holds no layer any more; the others are printed still
    errors = [line for line in done.stderr.strip().splitlines() if "no such image" not in line.lower()]
    if done.status != 0 and (errors or not done.stderr.strip()):
        raise RemoteCommandFailed(host.address.where, command, done.status, done.stderr)
    out = done.stdout
    chains: set[str] = set()
    for line in out.splitlines():
        chains.update(chain_ids(line.split()))
    return chains


def _target_id(host: RemoteHost, ref: str) -> str | None:
    done = host.run(f"docker image inspect --format '{{{{.Id}}}}' {q(ref)} 2>/dev/null", check=False)
    return done.stdout.strip() or None if done.status == 0 else None


def plan(host: RemoteHost, mode: str, images: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What to send (`send`), what to tag, and what the target held before, per image."""
    if mode == "none":
        return []
    chains = target_chains(host)
    planned = []
    for image_id, entry in sorted(images.items()):
        on_target = _target_id(host, image_id) == image_id
        previous = {ref: _target_id(host, ref) for ref in entry["refs"]}
        send = mode == "all" or not on_target
        if not send and all(p == image_id for p in previous.values()):
            continue  # there, under every name: nothing to do
        held = [c in chains for c in chain_ids(entry["layers"])]
        planned.append(
            {
                **entry,
                "send": send,
                "new_on_target": not on_target,
                "previous": previous,
                "layers_on_target": sum(held),
            }
        )
    return planned


def items(planned: list[dict[str, Any]], engine: str | None, host: RemoteHost) -> list[ImageItem]:
    """The images to send as pipeline items; the layers to leave out are decided now, from what
    the target holds (a resumed run may find more: an image an earlier attempt loaded)."""
    chains = target_chains(host)
    out = []
    for n, entry in enumerate(p for p in planned if p["send"]):
        skip = tuple(d for d, c in zip(entry["layers"], chain_ids(entry["layers"]), strict=True) if c in chains)
        name = entry["refs"][0] if entry["refs"] else entry["id"]
        out.append(ImageItem(f"image-{n}", "image", entry["id"], name, engine=engine or "", skip=skip))
    return out


def loaded_file(store: str, item: Item) -> str:
    return f"{store}/images/{item.source.removeprefix('sha256:')}.loaded"


def unpacker(host: RemoteHost, store: str, item: Item) -> str:
    """The command that loads the image's stream on the target, noting what it loaded (its
    directory made by the command itself: no session of its own)."""
    return f"mkdir -p {q(store)}/images && docker load -q > {q(loaded_file(store, item))}"


def check_loaded(host: RemoteHost, store: str, item: Item) -> None:
    """For an image: raise `ImageMismatch` unless the target's load gave the source's image ID,
    and nothing else: not another image, not a name (`Loaded image: NAME`, a load that tagged)."""
    if not isinstance(item, ImageItem):
        return
    # what the load said, then the ID the engine holds under the source's ID: one session
    out = host.run(
        f"cat {q(loaded_file(store, item))} 2>/dev/null; echo; echo {q(ID_MARK)}; "
        f"docker image inspect --format '{{{{.Id}}}}' {q(item.source)} 2>/dev/null; true"
    ).stdout
    said, _, inspected = out.rpartition(f"\n{ID_MARK}\n")
    loaded = [
        line.split(":", 1)[1].strip() for line in said.splitlines() if line.startswith(("Loaded image ID:", "Loaded image:"))
    ]
    others = [got for got in loaded if got != item.source]
    found = inspected.strip() or None
    if found != item.source or others:
        got = others[0] if others else (found or "nothing")
        raise ImageMismatch(f"image {item.target}: the target loaded {got}, the source's image is {item.source}")


def tag(host: RemoteHost, planned: list[dict[str, Any]]) -> list[str]:
    """Give each planned image on the target the names the project runs it by."""
    tagged = []
    for entry in planned:
        for ref in entry["refs"]:
            if _target_id(host, ref) != entry["id"]:
                host.run(f"docker tag {q(entry['id'])} {q(ref)}")
                tagged.append(ref)
    return tagged


def undo(host: RemoteHost, planned: list[dict[str, Any]]) -> list[str]:
    """Undo what the migration did to the target's images (after its stack is removed): names
    pointed back where they were, and an image it loaded removed if nothing else uses it (no
    container, no other name, no child image: `docker image rm` without force refuses those)."""
    done: list[str] = []
    for entry in planned:
        loaded = entry["new_on_target"] and _target_id(host, entry["id"]) == entry["id"]
        for ref, before in entry["previous"].items():
            if before == entry["id"] or _target_id(host, ref) != entry["id"]:
                continue
            if before is not None and _target_id(host, before) == before:
                host.run(f"docker tag {q(before)} {q(ref)}")
                done.append(f"{ref} points to {before} again")
            elif host.run(f"docker image rm {q(ref)} >/dev/null 2>&1", check=False).status == 0:
                done.append(f"untagged {ref}")
        if not loaded:
            continue
        if _target_id(host, entry["id"]) != entry["id"]:  # untagging its last name removed it
            done.append(f"removed {entry['id']}")
            continue
        users = host.run(f"docker ps -aq --filter ancestor={q(entry['id'])}", check=False).stdout.strip()
        tags = host.run(f"docker image inspect --format '{{{{len .RepoTags}}}}' {q(entry['id'])}", check=False).stdout.strip()
        if not users and tags == "0" and host.run(f"docker image rm {q(entry['id'])}", check=False).status == 0:
            done.append(f"removed {entry['id']}")
    return done


def listing(planned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pre-flight's list of the images to send: names, ID, size, layers the target holds."""
    return [
        {
            "image": ", ".join(p["refs"]) or p["id"],
            "id": p["id"],
            "bytes": p["bytes"],
            "layers": len(p["layers"]),
            "layers_on_target": p["layers_on_target"],
        }
        for p in planned
        if p["send"]
    ]
