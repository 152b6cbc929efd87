"""`davit repository copy` through davitd, as an operator keeps an off-site copy: killed with
`kill -9` in the middle, the copy resumes after a restart without sending a sealed pack again,
and the copy restores identical; copying again sends nothing. A copy into an S3 bucket and from
it into a third repository restores identical too."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, make_big_tree, tree_digest, write_job
from tests.e2e.test_remote_repository_kinds import bucket_view, make_source, s3_section
from tests.peers.state import S3Peer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADHOC = "repository-copy"  # the job name of `davit repository copy` runs


def config(davit: Davit) -> str:
    key = davit.home / "offsite.passphrase"
    key.write_text("the off-site passphrase, not the local one\n")
    key.chmod(0o600)
    return (
        "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.5\n"
        '[repositories.local]\npath = "repository"\n'
        f'[repositories.offsite]\npath = "offsite"\npassphrase_file = "{key}"\n'
    )


def checkpoints(davit: Davit, run_id: str) -> list[dict[str, object]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]


def packs(root: Path) -> int:
    return len(list((root / "index").glob("*.idx")))


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("big") / "tree"
    make_big_tree(root, 150)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def test_a_copy_killed_mid_run_resumes_without_resending_and_the_copy_restores_identical(
    davit: Davit, big_tree: Path, tmp_path: Path
) -> None:
    davit.configure(config(davit))
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{big_tree}"\n')
    backup = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=300)
    assert backup["state"] == "succeeded", backup

    run_id = davit.cli("repository", "copy", "local", "offsite").stdout.strip()
    davit.wait_for(lambda: len(checkpoints(davit, run_id)) >= 3, 120, "3 checkpoints of the copy", poll=0.005)
    davit.kill9()
    before = checkpoints(davit, run_id)
    assert davit.runs(ADHOC)[-1]["state"] == "running", "the kill must land in the middle of the copy"

    davit.start()
    run = davit.wait_run_state(ADHOC, {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    after = checkpoints(davit, run_id)
    # the resume went on from what was recorded, and recorded no checkpoint again (a kill after
    # the copy's last line was checkpointed leaves nothing more to record: no `len(after) >
    # len(before)`, which held only by the closing checkpoint being recorded a second time)
    assert after[: len(before)] == before
    cursors = [json.dumps(cp["cursor"], sort_keys=True) for cp in after]
    assert len(cursors) == len(set(cursors)), "a checkpoint was recorded twice"
    written = [c for cp in after for c in cp["chunks_written"]]  # type: ignore[attr-defined]
    assert len(written) == len(set(written)), "a chunk was sent twice"
    # every pack in the destination is one a checkpoint recorded, but for at most the one a kill
    # caught sealed and not yet recorded (its chunks were then in the index: not sent again)
    offsite = davit.home / "offsite"
    recorded = sum(1 for cp in after if cp["chunks_written"])
    assert recorded <= packs(offsite) <= recorded + 1

    # the copy is complete and verifies in the destination, under the destination's key
    assert "0 problems" in davit.cli("verify", backup["run_id"], "--repository", "offsite").stdout
    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "files.restore"\nrepository = "offsite"\n'
        f'[source]\njob = "big"\n[target]\npath = "{tmp_path / "restored"}"\n',
    )
    restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert restored["state"] == "succeeded", restored
    assert tree_digest(tmp_path / "restored") == tree_digest(big_tree)

    # copying again sends nothing: no new pack, no checkpoint with a chunk
    sealed = packs(offsite)
    again = davit.cli("repository", "copy", "local", "offsite", "--wait", timeout=300).stdout.strip()
    assert packs(offsite) == sealed
    assert not [c for cp in checkpoints(davit, again) for c in cp["chunks_written"]]  # type: ignore[attr-defined]


def test_a_copy_naming_a_repository_the_config_lacks_is_refused_before_davitd_is_asked(davit: Davit) -> None:
    davit.configure(config(davit))
    davit.start()
    refused = davit.cli("repository", "copy", "local", "nowhere", check=False)
    assert refused.returncode == 2
    assert "nowhere" in refused.stderr
    assert "passphrase" not in refused.stderr + refused.stdout
    same = davit.cli("repository", "copy", "local", "local", check=False)
    assert same.returncode == 2 and "same" in same.stderr
    assert not davit.runs(ADHOC)


def passphrase(davit: Davit, name: str, text: str) -> Path:
    key = davit.home / f"{name}.passphrase"
    key.write_text(text)
    key.chmod(0o600)
    return key


def test_a_copy_into_an_s3_repository_and_back_into_a_third_restores_identical(
    davit: Davit, seaweedfs_peer: S3Peer, tmp_path: Path
) -> None:
    """An operator copies the local repository (plain) into a bucket (encrypted) and, to recover,
    from the bucket into a new local one under another passphrase: every hop seals again under
    its destination's key, and what comes back is what went in."""
    prefix = f"e2e-copy/{uuid.uuid4().hex[:10]}"
    cloud_key = passphrase(davit, "cloud", "the bucket's passphrase\n")
    back_key = passphrase(davit, "back", "the recovered repository's passphrase, a third one\n")
    sealed_in_the_bucket = f'passphrase_file = "{cloud_key}"\n'
    davit.configure(
        "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.5\n"
        '[repositories.local]\npath = "repository"\n'
        f"[repositories.cloud]\n{s3_section(seaweedfs_peer, prefix, sealed_in_the_bucket)}"
        f'[repositories.back]\npath = "back"\npassphrase_file = "{back_key}"\n'
    )
    source = tmp_path / "source"
    make_source(source)
    davit.start()
    write_job(davit, "f.toml", f'name = "f"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    backup = davit.wait_run_state("f", {"succeeded", "failed"}, timeout=300)
    assert backup["state"] == "succeeded", backup

    for origin, destination in (("local", "cloud"), ("cloud", "back")):
        davit.cli("repository", "copy", origin, destination, "--wait", timeout=300)
        copied = davit.runs(ADHOC)[-1]
        assert copied["state"] == "succeeded", copied
        verified = davit.json_lines("verify", backup["run_id"], "--repository", destination)[0]
        assert verified["ok"] and verified["chunks_checked"] > 0, verified
    # the bucket holds the snapshot, sealed: no chunk of the source is there in the clear
    bucket = bucket_view(seaweedfs_peer, prefix)
    assert bucket.stat(f"snapshots/{backup['run_id']}/manifest.json") is not None
    packs = [info.key for info in bucket.list("packs/")]
    assert packs
    plain = (source / "random.bin").read_bytes()[1000:1064]  # incompressible: stored as is if not sealed
    assert all(plain not in bucket.get(key) for key in packs)
    assert [s["authenticated"] for s in davit.json_lines("snapshots") if s["repository"] != "local"] == [True, True]

    write_job(
        davit,
        "restore.toml",
        f'name = "restore"\nkind = "files.restore"\nrepository = "back"\n'
        f'[source]\njob = "f"\n[target]\npath = "{tmp_path / "restored"}"\n',
    )
    restored = davit.wait_run_state("restore", {"succeeded", "failed"}, timeout=300)
    assert restored["state"] == "succeeded", restored
    assert tree_digest(tmp_path / "restored") == tree_digest(source)
