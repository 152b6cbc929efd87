"""The target side of a migration: what davit does on the other host, over SSH.

Everything goes through one verified asyncssh connection (`davit/adapters/ssh/remote.py`): shell
commands, and data streamed to their stdin. Chunks live in a content-addressed store on the
target (`<base_path>/.davit/<project>/chunks/<sha256>.zst`); a chunk is written under
`incoming/` and renamed into `chunks/` only once fsynced, and `incoming/` is dropped before the
store is listed (an earlier davit's store names its one chunk that may be cut short in
`writing`: dropped too), so a listed chunk is always complete and a resumed transfer sends only
what the store lacks (the streaming itself is `davit/adapters/compose/pipeline.py`). After a
migration the store stays as a transfer cache (`keep_transfer_cache`, `prune_store`): its
chunks only, which a later migration checks against their names before it unpacks them. A
volume is unpacked by `tar -x` in a helper container (a local image on the target, never
pulled) with the volume mounted, or by the host's tar straight into its mountpoint where that
is the engine's very directory (`direct_mountpoints`); a bind path through a helper container
too, with its directory mounted (`bind_unpacker`): never by the host's tar.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from davit.adapters.compose import confined, remotebatch, unpacked
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteCommandFailed, RemoteHost
from davit.domain.errors import PermanentError

q = shlex.quote
# What the target host runs (`pipeline.store_command`, `unpack_command`, `present_chunks`,
# `unpacker_for`): each check prints the tool's name when it fails, with the flags used.
HOST_TOOLS = {
    "zstd": "command -v zstd >/dev/null",
    # GNU tar: a volume's direct unpack (`direct_unpacker`) is by the host's tar as root, and GNU
    # tar's defaults are what keep that inside its directory (members with `..` refused, leading `/` stripped, a symlink
    # to an absolute or climbing target created only at the end so nothing is extracted through
    # it, a symlink found where a directory is unpacked replaced rather than followed)
    "GNU tar": "tar --version 2>/dev/null | head -n 1 | grep -q 'GNU tar'",
    "dd (with iflag=fullblock, status=none)": "dd if=/dev/null of=/dev/null bs=1 count=1 iflag=fullblock status=none",
    "stat -c": "stat -c %s / >/dev/null",
    # the store's writer fsyncs the files and the directory it names (`pipeline.store_command`)
    "sync FILE": 't=$(mktemp) && sync -- "$t" "${t%/*}"; r=$?; rm -f "$t"; [ $r -eq 0 ]',
    # a chunk kept in the store from an earlier migration is checked against its name before
    # it is unpacked (`pipeline.unpack_command`)
    "sha256sum": "echo | sha256sum >/dev/null",
    # a store writer holds a lock on its directory; the listing drops only unlocked ones
    # (`pipeline.WRITER_DIR`, `DROP_ABANDONED`)
    "flock (on a directory)": "flock -n / true",
}
# What a helper container runs, checked as it is run there. A volume is unpacked by `tar -x`
# run as the container's command (`volume_unpacker`): `tar` is looked for the same way. A bind
# path's helper runs `sh -c`, which first compares the device and inode of its mount (`stat -c
# %d:%i`, `bind_unpacker`) with what davit holds, then `tar -x`: a `stat` missing or printing
# something else would refuse every bind unpack after the source was stopped, so pre-flight
# runs those in the helper's `sh` and checks what `stat` prints.
HELPER_TOOLS = ("tar", "sh", "stat -c %d:%i")
HELPER_SH_CHECKS = {
    "stat -c %d:%i": "s=$(stat -c %d:%i /) && case $s in *[!0-9:]* | :* | *: | *:*:*) exit 1 ;; *:*) exit 0 ;; esac; exit 1",
    "tar": "command -v tar",
}
NOT_FOUND = (126, 127)  # docker run's exit status when the command is not in the image
# run in the helper with the bind directory mounted at BIND_MOUNT: the stream's owners are numeric
# (`pipeline.py` writes them so), root in the helper sets them and the modes and mtimes
BIND_MOUNT = "/b"
BIND_UNPACK = f"tar -x --numeric-owner -C {BIND_MOUNT}"


class PreflightFailed(PermanentError):
    pass


class TargetNotHealthy(PermanentError):
    pass


@dataclass(frozen=True)
class TargetLayout:
    base_path: str
    project: str

    @property
    def project_dir(self) -> str:
        return f"{self.base_path.rstrip('/')}/{self.project}"

    @property
    def store(self) -> str:
        return f"{self.base_path.rstrip('/')}/.davit/{self.project}"

    @property
    def chunks(self) -> str:
        return f"{self.store}/chunks"


def preflight(
    host: RemoteHost, layout: TargetLayout, items: list[Item], helper_image: str, need_bytes: int, images: list[str]
) -> dict[str, Any]:
    """Check the target can take the project; raise `PreflightFailed` listing every problem.
    The checks are independent of each other: they run side by side in one session
    (`remotebatch.py`), not one session each."""
    problems: list[str] = []
    facts: dict[str, Any] = {}
    checks = {
        "version": "docker version --format '{{.Server.Version}}'",
        "compose": "docker compose version --short",
        "tools": host_tools_script(),
        "helper": helper_script(
            helper_image, probe=items_have_volumes(items) or items_have_binds(items), binds=items_have_binds(items)
        ),
        "taken": f"docker ps -aq --filter label=com.docker.compose.project={q(layout.project)}",
        "project_dir": f'test -e {q(layout.project_dir)} && test -n "$(ls -A {q(layout.project_dir)})"',
        "free": f'p={q(layout.base_path)}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; df -Pk "$p" | tail -1',
    }
    for n, item in enumerate(items):
        if item.kind == "volume":
            checks[f"item{n}"] = f"docker volume inspect {q(item.target)} >/dev/null 2>&1"
        elif item.kind == "bind" and not item.target.startswith(layout.project_dir + "/"):
            checks[f"item{n}"] = f"test -e {q(item.target)}"
    for n, img in enumerate(images):
        checks[f"image{n}"] = f"docker image inspect {q(img)} >/dev/null 2>&1"
    got = remotebatch.run_batch(host, checks, timeout=600)
    version = got["version"]
    if version.status != 0:
        problems.append(f"docker does not answer: {version.stderr.strip()[-300:]}")
    facts["docker"] = version.stdout.strip()
    compose = got["compose"]
    if compose.status != 0:
        problems.append(f"docker compose is not installed: {compose.stderr.strip()[-300:]}")
    facts["compose"] = compose.stdout.strip()
    missing_tools = [line for line in got["tools"].stdout.splitlines() if line in HOST_TOOLS]
    facts["zstd"] = "zstd" not in missing_tools
    if missing_tools:
        problems.append(f"the target lacks {', '.join(missing_tools)} on its PATH (the transfer and unpacking run them there)")
    helper = got["helper"].stdout.splitlines()
    if got["helper"].status != 0 or "absent" in helper:
        problems.append(f"helper image {helper_image} is not on the target (it is never pulled)")
    elif lacking := list(dict.fromkeys(t for line in helper if (t := line.removeprefix("lacks ")) in HELPER_TOOLS)):
        problems.append(
            f"helper image {helper_image} has no {', '.join(lacking)} "
            "(the helper unpacks each volume and bind path with `tar`, checking a bind's mount with `stat`)"
        )
    if got["taken"].stdout.strip():
        problems.append(f"compose project {layout.project} already has containers on the target")
    for n, item in enumerate(items):
        if f"item{n}" in got and got[f"item{n}"].status == 0:
            where = "volume" if item.kind == "volume" else "bind path"
            problems.append(f"{where} {item.target} already exists on the target")
    if got["project_dir"].status == 0:
        problems.append(f"project directory {layout.project_dir} exists and is not empty")
    free = got["free"]
    try:
        facts["free_bytes"] = int(free.stdout.split()[3]) * 1024
        if facts["free_bytes"] < need_bytes:
            problems.append(f"{facts['free_bytes']} bytes free under {layout.base_path}, {need_bytes} needed")
    except (IndexError, ValueError):
        problems.append(f"cannot tell the free space under {layout.base_path}: {free.stderr.strip()[-200:]}")
    facts["images_missing"] = [img for n, img in enumerate(images) if got[f"image{n}"].status != 0]
    if problems:
        raise PreflightFailed(f"pre-flight on {host.address.where} failed: " + "; ".join(problems))
    return facts


def host_tools_script() -> str:
    """Prints the name of each tool of `HOST_TOOLS` the target's shell cannot run as the migration runs it."""
    return "; ".join(f"{{ {check}; }} >/dev/null 2>&1 || echo {q(name)}" for name, check in HOST_TOOLS.items())


def helper_script(helper_image: str, probe: bool, binds: bool = True) -> str:
    """Prints `absent` where the helper image is not on the target, else (with `probe`)
    `lacks TOOL` for each tool of `HELPER_TOOLS` a container of it cannot run as davit runs it
    (`sh` and what runs in it only with `binds`)."""
    script = f"docker image inspect {q(helper_image)} >/dev/null 2>&1 || {{ echo absent; exit 0; }}"
    if not probe:
        return script
    run = f"docker run --rm --network none {q(helper_image)}"
    script += (
        f"; {run} tar --help >/dev/null 2>&1; s=$?; "
        f"if [ $s -eq {NOT_FOUND[0]} ] || [ $s -eq {NOT_FOUND[1]} ]; then echo 'lacks tar'; fi"
    )
    if binds:
        inner = "".join(f"( {check} ) >/dev/null 2>&1 || echo {q('lacks ' + tool)}; " for tool, check in HELPER_SH_CHECKS.items())
        # a container that cannot run the checks (no `sh`: 126/127) lacks `sh`; of its output
        # only these lines count
        script += (
            f"; o=$({run} sh -c {q(inner)} 2>/dev/null); s=$?; "
            f"if [ $s -eq {NOT_FOUND[0]} ] || [ $s -eq {NOT_FOUND[1]} ]; then echo 'lacks sh'; "
            "else printf '%s\\n' \"$o\" | grep '^lacks '; fi; true"
        )
    return script


def missing_host_tools(host: RemoteHost) -> list[str]:
    """The tools of `HOST_TOOLS` the target's shell cannot run as the migration runs them."""
    out = host.run(host_tools_script(), check=False).stdout
    return [line for line in out.splitlines() if line in HOST_TOOLS]


def items_have_volumes(items: list[Item]) -> bool:
    return any(item.kind == "volume" for item in items)


def items_have_binds(items: list[Item]) -> bool:
    return any(item.kind == "bind" for item in items)


def missing_helper_tools(host: RemoteHost, helper_image: str) -> list[str]:
    """The tools of `HELPER_TOOLS` that a container of `helper_image` cannot run as davit runs them."""
    out = host.run(helper_script(helper_image, probe=True), check=False, timeout=120).stdout
    return list(dict.fromkeys(t for line in out.splitlines() if (t := line.removeprefix("lacks ")) in HELPER_TOOLS))


# Run in the store: removes what abandoned writers left under incoming/, never what a live
# writer holds. A writer holds a `flock` on its own directory while it lives
# (`pipeline.WRITER_DIR`); a directory is removed only under that lock, taken without waiting,
# so a live writer's (a killed attempt's writer still draining its stream, another item's or
# another daemon's run on the same store) is left alone. Anything else there (no writer's
# directory: an older davit's file, a symlink) is removed as the entry itself, never followed.
DROP_ABANDONED = (
    "mkdir -p chunks && exec 7<chunks && flock -x 7 || exit 1; "  # no writer between mktemp and flock
    "if [ -L incoming ] || { [ -e incoming ] && [ ! -d incoming ]; }; then rm -f incoming; fi; "
    "for d in incoming/* incoming/.[!.]* incoming/..?*; do "
    '[ -e "$d" ] || [ -L "$d" ] || continue; '
    'if [ -d "$d" ] && [ ! -L "$d" ]; then flock -n "$d" rm -rf -- "$d" || true; else rm -f -- "$d"; fi; done; exec 7<&-;'
)

# Run in the store: an empty incoming/ goes too, only while no writer runs (each holds a shared
# lock on the store for its life, `pipeline.store_command`; one starting meanwhile waits)
DROP_EMPTY_INCOMING = "flock -n . rmdir incoming 2>/dev/null;"


def present_chunks(host: RemoteHost, layout: TargetLayout) -> dict[str, int]:
    """The chunks already in the target's store (complete by construction), with their sizes."""
    # a chunk the store writer was writing when its sender went away may be cut short: drop it
    out = host.run(
        f"mkdir -p {q(layout.chunks)} && cd {q(layout.store)} && "
        'if [ -s writing ]; then read -r w < writing; rm -f "chunks/$w.zst"; fi; : > writing; '
        # chunks written but not yet filed (`pipeline.store_command`): never complete by
        # construction; only an abandoned writer's go, a live one's stay (`DROP_ABANDONED`)
        f"{DROP_ABANDONED} "
        # one `stat` for many chunks (xargs batches them), not one process per chunk
        "cd chunks && printf '%s\\0' *.zst | xargs -0 stat -c '%n %s' -- 2>/dev/null; true"
    ).stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        name, _, size = line.partition(" ")
        if name.endswith(".zst") and size.isdigit():
            found[name.removesuffix(".zst")] = int(size)
    return found


def prune_store(host: RemoteHost, layout: TargetLayout, keep: set[str]) -> int:
    """Keep the store as a transfer cache (`keep_transfer_cache`): only the chunks in `keep` (the
    finished migration's), nothing else of it. The tar indexes, unpack records and image load
    notes go: they describe this migration's sources and destinations, and a later migration
    must unpack into its own destinations whatever they say (a kept record could let it skip an
    unpack; a kept index could name chunks that are not its source's). What is removed is only
    ever a `<sha256>.zst` file in `chunks/` (names as `ls` prints them, matched whole: a name
    with a newline in it cannot make another path); `chunks` must not be a symlink. Returns
    the number of chunks removed."""
    names = "".join(f"{name}\n" for name in sorted(keep) if _is_chunk_name(name))
    out = host.run(
        f"cd {q(layout.store)} 2>/dev/null || {{ echo 0; exit 0; }}; "
        "rm -rf tars unpacked images writing || { echo 0; exit 0; }; "
        f"{DROP_ABANDONED} {DROP_EMPTY_INCOMING} [ ! -L chunks ] && cd chunks || {{ echo 0; exit 0; }}; "
        "l=$(mktemp) || exit 1; { cat; echo END; ls -A | grep -xE '[0-9a-f]{64}[.]zst'; } "
        '| awk \'e { if (!($0 in k)) print; next } $0 == "END" { e = 1; next } { k[$0 ".zst"] = 1 }\' > "$l" '
        '&& n=$(wc -l < "$l") && xargs rm -f -- < "$l"; r=$?; rm -f "$l"; [ $r -eq 0 ] && echo "$n"',
        input=names.encode(),
    ).stdout
    return int(out.split()[-1]) if out.split() and out.split()[-1].isdigit() else 0


def _is_chunk_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def unpacker_for(host: RemoteHost, item: Item, helper_image: str, project: str) -> str:
    """Make the item's destination ready; the shell command that unpacks its tar stream there:
    into its volume or its bind directory through a helper container."""
    if item.kind == "volume":
        host.run(volume_create_command(item, project))
        return volume_unpacker(item, helper_image)
    dest = item.target.rsplit("/", 1)[0] or "/" if item.is_file else item.target
    return bind_unpacker(dest, helper_image)


def bind_unpacker(dest: str, helper_image: str) -> str:
    """The command unpacking a tar stream into the bind directory `dest` (created as needed)
    through a helper container with `dest` mounted at `BIND_MOUNT`, never by the host's tar.

    A container or a local user writing in `dest` while tar runs can swap a directory tar made
    for a symlink to a host path; tar resolves a member's parents again at each open and would
    follow it. Inside the helper such a symlink resolves in the helper's own throwaway root
    file system, never on the host. `dest` is reached from `/` without following a symlink,
    created as needed (`confined.py`); the engine resolves the path again when it mounts it, so
    a component swapped for a symlink after the walk would mount another directory: the helper
    compares the device and inode of what it got with those of the directory the walk holds,
    and refuses (`confined.REFUSED`) before it writes anything where they differ."""
    mount = f'type=bind,"source={dest.replace(chr(34), chr(34) * 2)}",target={BIND_MOUNT}'
    refused = f"{dest} changed while davit mounted it (a symlink or a move on the target): refused"
    inner = (
        f"m=$(stat -c %d:%i {BIND_MOUNT}) || {{ echo 'no stat in the helper image' >&2; exit {confined.REFUSED}; }}; "
        f'[ "$m" = "$1" ] || {{ printf \'%s\\n\' "$2" >&2; exit {confined.REFUSED}; }}; '
        f"exec {BIND_UNPACK}"
    )
    held = f"f=$(stat -c %d:%i .) || exit {confined.REFUSED}"
    run = f'docker run --rm -i --network none --mount {q(mount)} {q(helper_image)} sh -c {q(inner)} sh "$f" {q(refused)}'
    return confined.unpack_into(dest, f"{held}; {run}")


def volume_create_command(item: Item, project: str) -> str:
    """Create the item's volume, labelled as compose labels it, unless it exists."""
    labels = f"--label com.docker.compose.project={q(project)} --label com.docker.compose.volume={q(item.key)}"
    return f"docker volume inspect {q(item.target)} >/dev/null 2>&1 || docker volume create {labels} {q(item.target)} >/dev/null"


def volume_unpacker(item: Item, helper_image: str) -> str:
    """The command unpacking a tar stream into the item's volume (made by `volume_create_command`)."""
    return f"docker run --rm -i --network none -v {q(item.target)}:/v {q(helper_image)} tar -x -C /v"


def create_volumes(host: RemoteHost, items: list[Item], project: str) -> None:
    """`volume_create_command` for every volume item, side by side in one session."""
    volumes = [item for item in items if item.kind == "volume"]
    if not volumes:
        return
    commands = {item.target: volume_create_command(item, project) for item in volumes}
    for name, result in remotebatch.run_batch(host, commands).items():
        if result.status != 0:
            raise RemoteCommandFailed(host.address.where, commands[name], result.status, result.stderr)


# A volume unpacked by the host's tar straight into its mountpoint: the stream then skips the
# docker CLI, dockerd and the container's stdin, which cost the target more CPU than the unpack.
DIRECT_UNPACK = "tar -x --numeric-owner --same-owner -p -C ."
# what is compared of a volume's directory from the SSH user's shell and from a container
SAME_DIR = "%d:%i:%u:%g:%Z"


def direct_mountpoints(host: RemoteHost, items: list[Item], helper_image: str) -> dict[str, str]:
    """The volumes (by name) whose mountpoint the SSH user's shell reaches as the very directory
    the engine mounts into containers: unpacked there by the host's tar (`direct_unpacker`),
    the others through the helper. One session, one helper container for all of them.

    Only where the shell is root (it sets owners as the helper's root does) and the volume is
    the `local` driver's without options (with options the engine mounts something over the
    mountpoint only while a container uses it: writes under it would land beneath). The
    directory's device, inode, owner and ctime must be the same seen from the shell (reached
    from `/` without a symlink: `confined.py`) and from a helper container: an engine on another
    host (the session's DOCKER_HOST may point anywhere) or one remapping user IDs (userns-remap,
    rootless) differs in one of them, and keeps the helper.

    Nor where any container, running or not, mounts the volume: GNU tar resolves a member's
    parent directories again at each open, so a container writing in the volume while the
    host's tar runs (it moves a directory tar made aside and puts a symlink to a host path in
    its place) would have root write outside the volume; the helper resolves such a symlink in
    its own file system. A container made later needs the engine's API (root's equal); one
    mounting it already would keep it, and `direct_unpacker` checks again just before tar."""
    volumes = sorted({item.target for item in items if item.kind == "volume"})
    if not volumes:
        return {}
    inspect = "docker volume inspect --format '{{.Driver}}|{{json .Options}}|{{.Mountpoint}}'"
    lines = [
        '[ "$(id -u)" = 0 ] || exit 0',
        # `h N DIR-FACTS` and `p N PATH` for a local volume without options whose mountpoint
        # the shell enters from `/` without a symlink (`pwd -P` names it as the engine does)
        "probe() { m=$("
        + inspect
        + ' "$2") || return 0; case "$m" in "local|null|/"*|"local|{}|/"*) ;; *) return 0;; esac; '
        + in_use('"$2"')
        + "&& return 0; "
        'p=${m#*|*|}; f=$(cd / && cd -P -- "$p" 2>/dev/null && [ "$(env pwd -P)" = "$p" ] && stat -c ' + q(SAME_DIR) + " .) "
        '|| return 0; printf \'h %s %s\\np %s %s\\n\' "$1" "$f" "$1" "$p"; }',
    ]
    lines += [f"probe {n} {q(name)}" for n, name in enumerate(volumes)]
    mounts = " ".join(f"-v {q(name)}:/v{n}:ro" for n, name in enumerate(volumes))
    paths = " ".join(f"/v{n}" for n in range(len(volumes)))
    lines.append(f"docker run --rm --network none {mounts} {q(helper_image)} stat -c {q('c %n ' + SAME_DIR)} {paths}")
    out = host.run("\n".join(lines), check=False, timeout=120).stdout
    seen: dict[str, dict[str, str]] = {"h": {}, "p": {}, "c": {}}
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        key, _, value = rest.partition(" ")
        if kind in seen and value:
            seen[kind][key.removeprefix("/v")] = value
    direct = {}
    for n, name in enumerate(volumes):
        path, mine, theirs = seen["p"].get(str(n)), seen["h"].get(str(n)), seen["c"].get(str(n))
        if path and mine and mine == theirs and path.startswith("/") and "\n" not in path:
            direct[name] = path
    return direct


def in_use(volume: str) -> str:
    """A shell test true where a container (running or not) mounts `volume` (a shell word), or
    where the engine cannot tell."""
    return f'{{ u=$(docker ps -aq --filter volume={volume}) || u=unknown; [ -n "$u" ]; }} '


def direct_unpacker(mountpoint: str, volume: str) -> str:
    """The command unpacking a tar stream into a volume's mountpoint (`direct_mountpoints`),
    reached from `/` without following a symlink, by the host's GNU tar (confined by its
    defaults); refused (`confined.REFUSED`) where a container mounts
    the volume by then (`direct_mountpoints`: it could swap a directory for a symlink under tar)."""
    refuse = q(f"volume {volume} is mounted by a container: not unpacked by the host's tar: refused")
    return f"if {in_use(q(volume))}; then printf '%s\\n' {refuse} >&2; exit {confined.REFUSED}; fi; " + confined.unpack_into(
        mountpoint, DIRECT_UNPACK
    )


def direct_walker(mountpoint: str) -> str:
    """`walker_for` of a volume unpacked into its mountpoint: the host's `find` and `stat`."""
    return unpacked.listing_command(mountpoint)


def walker_for(item: Item, helper_image: str) -> str:
    """The shell command listing what `unpacker_for`'s command wrote (`unpacked.LISTING`): the
    volume read-only through a helper container, a bind path by the host's `find` and `stat`.
    It only reads; where it fails (a helper image without `find`), nothing is recorded and a
    repeat unpacks again."""
    if item.kind == "volume":
        inner = unpacked.listing_command("/v")
        return f"docker run --rm --network none -v {q(item.target)}:/v:ro {q(helper_image)} sh -c {q(inner)}"
    if item.is_file:
        return unpacked.listing_command(item.target.rsplit("/", 1)[0] or "/", "./" + item.source.rstrip("/").rsplit("/", 1)[-1])
    return unpacked.listing_command(item.target)


def write_project(host: RemoteHost, layout: TargetLayout, files: dict[str, tuple[bytes, int]]) -> None:
    """Write the project's files (content and mode) under its directory on the target, each
    from inside its directory reached without following a symlink (`confined.py`), through a
    temporary name created exclusively (`set -C`: a symlink planted there is not followed) and
    renamed over the file (a symlink there is replaced)."""
    for rel, (data, mode) in files.items():
        parent, name = posixpath.split(f"{layout.project_dir}/{rel}")
        tmp, final = q(f"./{name}.davit-tmp"), q(f"./{name}")
        host.run(
            f"{confined.walk_into(parent, create=True)}; rm -f {tmp} && (set -C; cat > {tmp}) "
            f"&& chmod {mode:o} {tmp} && mv -f {tmp} {final}",
            input=data,
        )


def compose(host: RemoteHost, layout: TargetLayout, args: str, timeout: float = 600) -> str:
    return host.run(f"cd {q(layout.project_dir)} && docker compose {args}", timeout=timeout).stdout


def wait_healthy(
    host: RemoteHost, layout: TargetLayout, project_args: str, services: list[str], timeout: float, check_stop: Callable[[], None]
) -> dict[str, str]:
    """Poll until every service has a running container that is healthy (or has no check)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        check_stop()
        out = compose(host, layout, f"{project_args} ps -a --format json", timeout=120)
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if len(rows) == 1 and out.strip().startswith("["):
            rows = json.loads(out)
        states = {s: "missing" for s in services}
        for row in rows:
            health = row.get("Health") or ""
            states[row.get("Service", "?")] = row.get("State", "?") + (f"/{health}" if health else "")
        if all(v in ("running", "running/healthy") for v in states.values()):
            return states
        if (
            any(v.startswith(("exited", "dead")) or v.endswith("/unhealthy") for v in states.values())
            or time.monotonic() > deadline
        ):
            raise TargetNotHealthy(
                f"on {host.address.where} the services are not all running and healthy after {timeout:.0f}s: {states}"
            )
        time.sleep(1.0)


def remove_target(host: RemoteHost, layout: TargetLayout, project_args: str, items: list[Item], keep: bool) -> None:
    """Stop the target stack; unless `keep`, remove it with its volumes, bind data and files."""
    exists = host.run(f"test -d {q(layout.project_dir)}", check=False).status == 0
    if exists:
        try:
            compose(host, layout, f"{project_args} {'stop' if keep else 'down -v --remove-orphans'} --timeout 5")
        except RemoteCommandFailed:
            pass  # the stack may never have been written completely; clean up by label below
    if keep:
        return
    ids = host.run(f"docker ps -aq --filter label=com.docker.compose.project={q(layout.project)}").stdout.split()
    if ids:
        host.run("docker rm -f " + " ".join(q(i) for i in ids))
    for item in items:
        if item.kind == "volume":
            host.run(f"docker volume rm -f {q(item.target)} >/dev/null 2>&1 || true")
        elif not item.target.startswith(layout.project_dir + "/"):
            host.run(confined.remove(item.target))  # never through a symlink planted since
    host.run(confined.remove(layout.project_dir))
