"""The sync document's rollback and retention (``rollback``, ``keep_releases``,
``keep``), run for real as in ``test_exact_release.py``.

A rollback is a new generation whose manifest is an older release's: an
instance that holds that release intact switches ``current`` to it with no
S3 request and no copy; any other materializes it from the manifest. The
fence moves to ``.fleetkeeper/fence`` so that the older release put back is
never undone by an older generation arriving late.

The counts are real: a shim ``aws`` first on ``PATH`` records every AWS CLI
call, a shim ``mv`` every rename (then runs the real one).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from document import VENV_BIN, codebase_bucket, run, s3
from test_exact_release import CODE, files, hidden, manifests, releases, take

MV = shutil.which("mv") or "/bin/mv"
__all__ = ["manifests"]  # (the manifest bucket fixture, shared)


@pytest.fixture
def versioned_bucket() -> str:
    return codebase_bucket("fk-roll", versioned=True)


def counting(tmp_path: Path) -> tuple[str, Path, Path]:
    """A PATH prefix whose `aws` and `mv` log each call (one line each) and
    then run the real command; the two logs."""
    shim = tmp_path / "counting"
    shim.mkdir()
    aws_log, mv_log = tmp_path / "aws.log", tmp_path / "mv.log"
    (shim / "aws").write_text(f'#!/bin/sh\necho "$*" >> "{aws_log}"\nexec "{VENV_BIN}/aws" "$@"\n')
    (shim / "mv").write_text(f'#!/bin/sh\necho "$*" >> "{mv_log}"\nexec "{MV}" "$@"\n')
    for tool in ("aws", "mv"):
        (shim / tool).chmod(0o755)
    return f"{shim}:", aws_log, mv_log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def two_releases(bucket: str, manifests: str, dest: Path):
    """Generation 1 serves CODE, generation 2 a new index.php: the two
    manifests."""
    m1 = take(bucket, manifests, versioned=True)
    assert run(bucket, dest, 1, extra=m1.params)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v2, broken")
    m2 = take(bucket, manifests, versioned=True)
    assert run(bucket, dest, 2, extra=m2.params)[0] == 0
    assert files(dest / "current") == {**CODE, "index.php": "v2, broken"}
    return m1, m2


def rollback(m) -> dict[str, str]:
    return {**m.params, "SSM_rollback": "true"}


def test_a_rollback_to_a_release_held_here_makes_no_s3_request_and_one_switch(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m1, _ = two_releases(versioned_bucket, manifests, dest)
    inodes = {key: os.lstat(dest / "releases" / "1" / key).st_ino for key in CODE}
    before = (releases(dest), hidden(dest))
    shim, aws_log, mv_log = counting(tmp_path)
    code, out, err = run(versioned_bucket, dest, 3, extra=rollback(m1), path_prefix=shim)
    assert code == 0, err
    assert "fleetkeeper: rollback: generation 3 switched current to releases/1, nothing downloaded" in out.splitlines()
    assert lines(aws_log) == [], "not one S3 request: the manifest is not even fetched"
    renames = lines(mv_log)
    assert len(renames) == 2, renames
    assert renames[0] == f"{dest}/.fleetkeeper/fence.tmp {dest}/.fleetkeeper/fence", "the fence first"
    assert renames[1].startswith(f"-T {dest}/.current.") and renames[1].endswith(f" {dest}/current"), (
        "then one switch of current: nothing else is renamed, nothing copied"
    )
    assert os.readlink(dest / "current") == "releases/1"
    assert files(dest / "current") == CODE
    assert (releases(dest), hidden(dest)) == before, "no release made, none removed"
    assert {key: os.lstat(dest / "releases" / "1" / key).st_ino for key in CODE} == inodes
    assert (dest / ".fleetkeeper" / "fence").read_text() == "- 3 2\n", "fenced at 3; the previous release is 2"


def test_after_a_rollback_an_older_generation_arriving_late_is_superseded(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m1, m2 = two_releases(versioned_bucket, manifests, dest)
    assert run(versioned_bucket, dest, 3, extra=rollback(m1))[0] == 0
    # Generation 2's command delivered again (an agent back online).
    code, out, err = run(versioned_bucket, dest, 2, extra=m2.params)
    assert code == 0, err
    assert "fleetkeeper: generation 2 superseded by 3: nothing to do" in out.splitlines()
    assert os.readlink(dest / "current") == "releases/1", "the rollback holds although current names release 1"
    # The next generation (after a resume) syncs as usual, and keeps the
    # release it replaced as the previous one.
    m4 = take(versioned_bucket, manifests, versioned=True)
    code, out, err = run(versioned_bucket, dest, 4, extra=m4.params)
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/4"
    assert (dest / ".fleetkeeper" / "fence").read_text() == "- 4 1\n"


def test_a_release_changed_on_the_host_is_not_switched_to_but_fetched(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m1, _ = two_releases(versioned_bucket, manifests, dest)
    (dest / "releases" / "1" / "lib" / "a.php").write_text("edited by hand")
    code, out, err = run(versioned_bucket, dest, 3, extra=rollback(m1))
    assert code == 0, err
    assert "changed on this host ('lib/a.php'): not switched to" in err
    assert f"fleetkeeper: rollback: no release here is intact and made from manifest {m1.sha256[:12]}: it is fetched" in out
    assert os.readlink(dest / "current") == "releases/3"
    assert files(dest / "current") == CODE, "the manifest's objects, by version id: release 1 as it was"


def test_a_release_never_held_here_is_materialized_from_its_versions(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    m1 = take(versioned_bucket, manifests, versioned=True)
    s3.put_object(Bucket=versioned_bucket, Key="app/index.php", Body=b"v2, broken")
    s3.delete_object(Bucket=versioned_bucket, Key="app/lib/b.php")
    dest = tmp_path / "new-instance"
    code, out, err = run(versioned_bucket, dest, 3, extra=rollback(m1))
    assert code == 0, err
    assert files(dest / "current") == CODE, "a key deleted since, and one overwritten, come back by version id"


def test_a_rollback_needs_a_manifest_and_is_said_plainly(versioned_bucket: str, tmp_path: Path) -> None:
    code, _, err = run(versioned_bucket, tmp_path / "www", 1, extra={"SSM_rollback": "true"})
    assert code == 2
    assert "fleetkeeper: rollback is set without manifest" in err
    for hostile in ("yes", "true;reboot", "TRUE"):
        code, _, err = run(versioned_bucket, tmp_path / "www", 1, extra={"SSM_rollback": hostile})
        assert code == 2 and "rollback is not true or empty" in err, hostile


def test_keep_keeps_the_fleet_rollback_targets_and_the_previous_release(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    made = {}
    for generation in range(1, 6):
        s3.put_object(Bucket=versioned_bucket, Key="app/index.php", Body=f"v{generation}".encode())
        m = take(versioned_bucket, manifests, versioned=True)
        made[generation] = m.sha256[:12]
        # The fleet's rollback targets: releases 2 and 3 (by the sha256 of their manifests).
        keep = {"SSM_keep_releases": "1", "SSM_keep": ",".join(made[g] for g in (2, 3) if g in made)}
        assert run(versioned_bucket, dest, generation, extra={**m.params, **keep})[0] == 0
    assert releases(dest) == ["2", "3", "4", "5"], "the newest, the previous one (4), and the two keep names"
    assert (dest / "releases" / ".sha256-2").read_text().startswith(made[2])
    # Without keep: the newest and the previous one only; the sha256 files go with their releases.
    s3.put_object(Bucket=versioned_bucket, Key="app/index.php", Body=b"v6")
    m = take(versioned_bucket, manifests, versioned=True)
    assert run(versioned_bucket, dest, 6, extra={**m.params, "SSM_keep_releases": "1"})[0] == 0
    assert releases(dest) == ["5", "6"]
    assert hidden(dest) == [f".{kind}-{n}" for kind in ("manifest", "sha256", "source") for n in (5, 6)]
    for hostile in ("0123456789AB", "$(reboot)", "../x"):
        code, _, err = run(versioned_bucket, dest, 7, extra={**m.params, "SSM_keep": hostile})
        assert code == 2 and "keep is not a list of release ids" in err, hostile


def test_the_fence_of_another_lineage_does_not_hold(versioned_bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    epoch_a, epoch_b = "a" * 32, "b" * 32
    m1 = take(versioned_bucket, manifests, versioned=True)
    assert run(versioned_bucket, dest, 7, extra={**m1.params, "SSM_epoch": epoch_a})[0] == 0
    assert (dest / ".fleetkeeper" / "fence").read_text() == f"{epoch_a} 7 -\n"
    # A new lock table: the counter starts again, and generation 1 syncs.
    code, out, err = run(versioned_bucket, dest, 1, extra={**m1.params, "SSM_epoch": epoch_b})
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/1"
    code, out, _ = run(versioned_bucket, dest, 6, extra={**m1.params, "SSM_epoch": epoch_a})
    assert os.readlink(dest / "current") == "releases/6", "lineage a is not the fence's any more"
