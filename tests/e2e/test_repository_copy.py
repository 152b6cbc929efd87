"""`davit repository copy` through davitd, as an operator keeps an off-site copy: killed with
`kill -9` in the middle, the copy resumes after a restart without sending a sealed pack again,
and the copy restores identical; copying again sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, make_big_tree, tree_digest, write_job

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
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "tree"
    make_big_tree(root, 150)
    return root


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
    assert len(after) > len(before)
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
