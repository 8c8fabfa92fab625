"""The sync document (``infra/sync-document.yaml``), run for real.

Its script is run with ``sh`` (and ``bash``), as the agent runs it, against
the emulator's S3 with the AWS CLI from the venv, into temporary directories
standing in for instances. Parameters are passed the way the agent passes
them with ``interpolationType: ENV_VAR``: as ``SSM_<name>`` variables.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from document import DOCUMENT, DOCUMENT_TEXT, ROOT, SCRIPT, URL, VENV_BIN, codebase_bucket, run, s3

FIXTURE = json.loads((ROOT / "shared" / "fixtures" / "parameters.json").read_text())


@pytest.fixture
def bucket() -> str:
    return codebase_bucket("fk-doc")


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def releases(dest: Path) -> list[str]:
    """What releases/ holds, the releases' manifests left out (a leftover
    temporary release is not)."""
    return sorted(p.name for p in (dest / "releases").iterdir() if not p.name.startswith(".manifest-"))


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_first_sync_creates_a_release_and_points_current_at_it(bucket: str, tmp_path: Path, shell: str) -> None:
    dest = tmp_path / "www"
    code, out, err = run(bucket, dest, 1, shell=shell)
    assert code == 0, err
    assert "generation 1 synced into releases/1" in out
    assert os.readlink(dest / "current") == "releases/1"
    assert files(dest / "current") == {"index.php": "v1", "lib/a.php": "a", "lib/b.php": "b"}
    assert (dest / "current" / "media").is_symlink(), "excluded media/* is linked to shared/"
    assert os.readlink(dest / "current" / "media") == str(dest / "shared" / "media")
    assert not list((dest / "current").rglob("*.log")), "excluded globs are not copied"
    assert not (dest / "current" / "outside.txt").exists()


def test_changes_and_deletions_arrive_in_a_new_release(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    # A different size: S3 timestamps have one-second granularity, and a
    # same-size change within the second is invisible to `aws s3 sync`.
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 2")
    s3.delete_object(Bucket=bucket, Key="app/lib/a.php")
    code, _, err = run(bucket, dest, 2)
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/2"
    assert files(dest / "current") == {"index.php": "version 2", "lib/b.php": "b"}, "a deleted key disappears"
    assert files(dest / "releases" / "1")["index.php"] == "v1", "the old release is untouched"


def test_an_older_generation_is_a_no_op(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 3)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"stale wave")
    code, out, _ = run(bucket, dest, 2)
    assert code == 0
    assert "generation 2 superseded by 3" in out
    assert os.readlink(dest / "current") == "releases/3"
    assert releases(dest) == ["3"]


def test_an_equal_generation_is_synced_again(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 4)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 4b")
    code, out, _ = run(bucket, dest, 4)
    assert code == 0 and "releases/4.2" in out
    assert os.readlink(dest / "current") == "releases/4.2"
    assert files(dest / "current")["index.php"] == "version 4b"


def test_three_releases_are_kept(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    for generation in (1, 2, 3, 3, 5):
        assert run(bucket, dest, generation)[0] == 0
    assert releases(dest) == ["3", "3.2", "5"]
    assert os.readlink(dest / "current") == "releases/5"


def test_shared_content_survives_and_is_linked_into_every_release(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    # A tree from before fleetkeeper: media/ is a real directory in the release.
    legacy = dest / "releases" / "0"
    (legacy / "media").mkdir(parents=True)
    (legacy / "media" / "upload.jpg").write_text("user upload")
    (dest / "current").symlink_to("releases/0")
    assert run(bucket, dest, 1)[0] == 0
    assert (dest / "shared" / "media" / "upload.jpg").read_text() == "user upload", "moved, not lost"
    assert (dest / "current" / "media" / "upload.jpg").read_text() == "user upload"
    assert run(bucket, dest, 2)[0] == 0
    assert (dest / "current" / "media").is_symlink()
    assert (dest / "current" / "media" / "upload.jpg").read_text() == "user upload"


def test_concurrent_runs_serialize(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    # An `aws` first on PATH that logs when each sync starts and ends.
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "aws.log"
    (shim / "aws").write_text(f'#!/bin/sh\necho "start $SSM_generation $(date +%s.%N)" >> {log}\nsleep 0.3\n"{VENV_BIN}/aws" "$@"\nstatus=$?\necho "end $SSM_generation $(date +%s.%N)" >> {log}\nexit $status\n')
    (shim / "aws").chmod(0o755)
    procs = [run(bucket, dest, g, path_prefix=f"{shim}:", wait=False) for g in (5, 6, 6)]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [o[2] for o in outcomes] == [0, 0, 0], outcomes
    events = [line.split() for line in log.read_text().splitlines()]
    spans: list[tuple[float, float]] = []
    open_at: float | None = None
    for kind, _, at in events:
        if kind == "start":
            assert open_at is None, f"two syncs overlapped: {events}"
            open_at = float(at)
        else:
            assert open_at is not None
            spans.append((open_at, float(at)))
            open_at = None
    assert len(spans) in (2, 3), events
    assert os.readlink(dest / "current").startswith("releases/6"), "the highest generation wins"
    assert not [p for p in (dest / "releases").iterdir() if p.name.startswith(".tmp-")]


def test_a_reader_never_sees_a_missing_or_half_filled_tree(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    for n in range(60):
        s3.put_object(Bucket=bucket, Key=f"app/many/{n:03}.txt", Body=b"one")
    assert run(bucket, dest, 1)[0] == 0
    for n in range(60):
        s3.put_object(Bucket=bucket, Key=f"app/many/{n:03}.txt", Body=b"second")
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                # Resolve `current` once per read, as a web server resolves
                # its document root per request: that resolution must always
                # land on one complete tree.
                root = Path(os.path.realpath(dest / "current")) / "many"
                names = list(root.iterdir())
                contents = {p.read_text() for p in names}
                count = len(names)
            except OSError as e:
                problems.append(f"missing: {e}")
                continue
            if count != 60 or len(contents) != 1:
                problems.append(f"half-filled: {count} files, contents {contents}")
            seen.update(contents)

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert run(bucket, dest, 2)[0] == 0
    finally:
        stop.set()
        t.join()
    assert problems == []
    assert seen == {"one", "second"}, "the reader saw both trees, each whole"


@pytest.mark.parametrize("missing", ["SSM_bucket", "SSM_destination", "SSM_generation", "SSM_region"])
def test_a_missing_required_parameter_fails_closed(bucket: str, tmp_path: Path, missing: str) -> None:
    dest = tmp_path / "www"
    code, _, err = run(bucket, dest, 1, drop=missing)
    assert code == 2
    assert f"{missing} is not set" in err and "3.3.2746.0" in err
    assert not (dest / "current").exists()


@pytest.mark.parametrize("exported", [False, True])
def test_optional_parameters_work_whether_or_not_the_agent_exports_them_empty(bucket: str, tmp_path: Path, exported: bool) -> None:
    # An agent may or may not export a parameter whose value is empty (AWS
    # does not say): the defaults (no excludes, no lineage) hold either way.
    dest = tmp_path / "www"
    extra = {"SSM_excludes": "", "SSM_epoch": ""} if exported else {}
    code, out, err = run(bucket, dest, 1, extra=extra, drop=None if exported else "SSM_excludes")
    assert code == 0, err
    assert (dest / "current" / "logs" / "x.log").exists(), "nothing excluded"
    assert (dest / "current" / "index.php").exists()


EPOCH_A = "a" * 32
EPOCH_B = "b" * 32


def test_a_new_lineage_is_never_superseded_by_an_old_generation(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 57, extra={"SSM_epoch": EPOCH_A})[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"after the reset")
    # The lock table was recreated: generation 1 of another lineage.
    code, out, _ = run(bucket, dest, 1, extra={"SSM_epoch": EPOCH_B})
    assert code == 0 and "superseded" not in out, out
    assert files(dest / "current")["index.php"] == "after the reset"
    assert (dest / ".fleetkeeper.epoch").read_text().strip() == EPOCH_B
    # Within the new lineage, fencing holds again.
    code, out, _ = run(bucket, dest, 0, extra={"SSM_epoch": EPOCH_B})
    assert code == 0 and "superseded" in out
    # Without a lineage (an older function), generations compare as before.
    code, out, _ = run(bucket, dest, 0)
    assert "superseded" in out


def test_releases_of_another_lineage_are_cleaned_up_by_age(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    for generation in (55, 56, 57):
        assert run(bucket, dest, generation, extra={"SSM_epoch": EPOCH_A})[0] == 0
    for generation in (1, 2, 3):
        assert run(bucket, dest, generation, extra={"SSM_epoch": EPOCH_B})[0] == 0
    assert releases(dest) == ["1", "2", "3"], "the old lineage's releases are gone, however large their numbers"


def test_moving_excluded_content_tolerates_cp_n_exiting_1_on_a_skip(bucket: str, tmp_path: Path) -> None:
    # coreutils 9.2 to 9.4 make `cp -n` exit 1 when it skips an existing file.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "cp").write_text(
        "#!/bin/sh\n"
        "status=0\n"
        'for a in "$@"; do case "$a" in -n) n=1 ;; esac; done\n'
        '/bin/cp "$@" || status=$?\n'
        '[ -n "${n:-}" ] && [ "${FK_SKIPPED:-}" = yes ] && exit 1\n'
        "exit $status\n"
    )
    (shim / "cp").chmod(0o755)
    dest = tmp_path / "www"
    legacy = dest / "releases" / "0"
    (legacy / "media").mkdir(parents=True)
    (legacy / "media" / "kept.jpg").write_text("release copy")
    (legacy / "media" / "new.jpg").write_text("only in the release")
    (dest / "current").symlink_to("releases/0")
    (dest / "shared" / "media").mkdir(parents=True)
    (dest / "shared" / "media" / "kept.jpg").write_text("shared copy")
    code, _, err = run(bucket, dest, 1, path_prefix=f"{shim}:", extra={"FK_SKIPPED": "yes"})
    assert code == 0, err
    assert (dest / "shared" / "media" / "kept.jpg").read_text() == "shared copy", "what shared/ held is kept"
    assert (dest / "shared" / "media" / "new.jpg").read_text() == "only in the release", "and the rest moved"


def test_a_failed_sync_leaves_current_alone(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    code, _, _ = run(f"{bucket}-does-not-exist", dest, 2)
    assert code != 0
    assert os.readlink(dest / "current") == "releases/1"
    assert releases(dest) == ["1"], "no half-made release is left behind"


CODE = {"index.php": "v1", "lib/a.php": "a", "lib/b.php": "b"}
REFUSED = "fleetkeeper: refused: "


def empty_prefix(bucket: str) -> None:
    """Deletes every object under app/, excluded ones included."""
    for o in s3.list_objects_v2(Bucket=bucket, Prefix="app/").get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])


def refusal(err: str) -> str:
    """The one refusal line the functions read; it needs no JSON escaping."""
    lines = [line for line in err.splitlines() if line.startswith(REFUSED)]
    assert len(lines) == 1, err
    line = lines[0]
    assert json.dumps(line) == f'"{line}"' and not set(line) & set("{}'`"), line
    assert "current is kept" in line and "allow_shrink" in line, line
    return line


def assert_kept(dest: Path, release: str = "releases/1", content: dict[str, str] | None = None) -> None:
    assert os.readlink(dest / "current") == release
    assert files(dest / "current") == (CODE if content is None else content)
    assert releases(dest) == [release.split("/")[1]], "no new release, no temporary release or list is left"


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("max_shrink", ["50", "100"])
def test_an_emptied_prefix_is_refused_and_current_kept(bucket: str, tmp_path: Path, shell: str, max_shrink: str) -> None:
    dest = tmp_path / "www"
    code, _, err = run(bucket, dest, 1, shell=shell, extra={"SSM_max_shrink": max_shrink, "SSM_epoch": EPOCH_A, "SSM_release": "v1"})
    assert code == 0, err
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, shell=shell, extra={"SSM_max_shrink": max_shrink, "SSM_epoch": EPOCH_B, "SSM_release": "v2"})
    assert code == 65, (out, err)
    line = refusal(err)
    assert "empty" in line and "releases/1 has 3 files" in line, line
    assert "synced" not in out
    assert_kept(dest)
    assert (dest / "current" / "media").is_symlink(), "shared/ stays linked"
    assert (dest / ".fleetkeeper.epoch").read_text().strip() == EPOCH_A
    assert (dest / ".fleetkeeper.release").read_text().strip() == "v1"


def test_losing_more_than_max_shrink_is_refused_with_the_numbers(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    s3.delete_object(Bucket=bucket, Key="app/lib/a.php")
    s3.delete_object(Bucket=bucket, Key="app/lib/b.php")
    code, _, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "50"})
    assert code == 65, err
    line = refusal(err)
    assert "loses 2 of the 3 files of current (67% > max_shrink 50%)" in line, line
    assert_kept(dest)


@pytest.mark.parametrize(
    ("max_shrink", "switches"),
    # One file of three lost is 33.3%.
    [("50", True), ("34", True), ("100", True), ("33", False), ("0", False), ("08", False)],
)
def test_a_loss_within_max_shrink_switches(bucket: str, tmp_path: Path, max_shrink: str, switches: bool) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    s3.delete_object(Bucket=bucket, Key="app/lib/a.php")
    code, out, err = run(bucket, dest, 2, extra={"SSM_max_shrink": max_shrink})
    if switches:
        assert code == 0, err
        assert os.readlink(dest / "current") == "releases/2"
        assert files(dest / "current") == {"index.php": "v1", "lib/b.php": "b"}
        assert "refused" not in err and "lifted" not in out
        assert not [p for p in (dest / "releases").iterdir() if p.name.startswith(".tmp-")], "no list is left"
    else:
        assert code == 65, (out, err)
        assert f"loses 1 of the 3 files of current (34% > max_shrink {int(max_shrink)}%)" in refusal(err)
        assert_kept(dest)


def test_renamed_files_count_as_lost_though_the_count_is_unchanged(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    for old, new in {"index.php": "main.php", "lib/a.php": "src/a.php", "lib/b.php": "src/b.php"}.items():
        s3.delete_object(Bucket=bucket, Key=f"app/{old}")
        s3.put_object(Bucket=bucket, Key=f"app/{new}", Body=b"renamed")
    code, _, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "50"})
    assert code == 65, err
    assert "loses 3 of the 3 files of current (100% > max_shrink 50%)" in refusal(err)
    assert_kept(dest)


def test_any_lifts_the_guard_and_switches_to_an_empty_release(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra={"SSM_max_shrink": "any"})[0] == 0
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "any"})
    assert code == 0, err
    assert "fleetkeeper: shrink guard lifted by request" in out.splitlines()
    assert "refused" not in err
    assert os.readlink(dest / "current") == "releases/2"
    assert files(dest / "current") == {}


@pytest.mark.parametrize("exported", [False, True])
def test_without_max_shrink_an_empty_release_becomes_current_as_before(bucket: str, tmp_path: Path, exported: bool) -> None:
    # What an older function sends: no guard at all.
    dest = tmp_path / "www"
    extra = {"SSM_max_shrink": "", "SSM_release": ""} if exported else {}
    assert run(bucket, dest, 1, extra=extra)[0] == 0
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, extra=extra)
    assert code == 0, err
    assert "generation 2 synced into releases/2 (0 files)" in out and "release" not in out.split("(0 files)")[1]
    assert "lifted" not in out and "refused" not in err
    assert os.readlink(dest / "current") == "releases/2"
    assert files(dest / "current") == {}
    assert not (dest / ".fleetkeeper.release").exists()


def test_with_nothing_live_an_empty_prefix_is_not_refused(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 1, extra={"SSM_max_shrink": "50"})
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/1"
    assert files(dest / "current") == {}
    # An empty current has nothing to protect either.
    code, _, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "0"})
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/2"


def manifest_of(dest: Path) -> Path:
    """The manifest of the release current points at (releases/.manifest-<name>)."""
    return dest / "releases" / (".manifest-" + os.readlink(dest / "current").split("/")[-1])


CODE_LIST = "./index.php\n./lib/a.php\n./lib/b.php\n"


def test_files_the_application_wrote_into_current_are_not_lost(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra={"SSM_max_shrink": "50"})[0] == 0
    # Compiled templates in a path the excludes do not cover: --delete
    # removes them, and they are no loss of code.
    cache = dest / "current" / "cache"
    cache.mkdir(exist_ok=True)
    for n in range(5):
        (cache / f"{n}.php").write_text("compiled")
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 2")
    code, out, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "50"})
    assert code == 0, (out, err)
    assert "refused" not in err
    assert os.readlink(dest / "current") == "releases/2"
    assert files(dest / "current") == {**CODE, "index.php": "version 2"}, "--delete removed them"
    # Listing the live tree instead (an instance without a manifest, as an
    # older document left it) counts them: 5 of 8 files.
    manifest_of(dest).unlink()
    cache = dest / "current" / "cache"
    cache.mkdir(exist_ok=True)
    for n in range(5):
        (cache / f"{n}.php").write_text("compiled")
    code, _, err = run(bucket, dest, 3, extra={"SSM_max_shrink": "50"})
    assert code == 65, err
    assert "loses 5 of the 8 files of current (63% > max_shrink 50%)" in refusal(err)


def test_the_manifest_lists_the_synced_files_and_a_refused_sync_leaves_it(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    # Written without a guard too, so that the next guarded sync has it.
    assert run(bucket, dest, 1)[0] == 0
    assert manifest_of(dest).read_text() == CODE_LIST, "media/* (shared/) and *.log are not synced"
    # Excluded files in the release: seeded into the next one, not listed.
    (dest / "current" / "logs").mkdir()
    (dest / "current" / "logs" / "y.log").write_text("written by the application")
    (dest / "current" / "debug.log").write_text("written by the application")
    s3.put_object(Bucket=bucket, Key="app/Zeta.php", Body=b"z")
    code, out, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "any"})
    assert code == 0, (out, err)
    assert files(dest / "current") == {**CODE, "Zeta.php": "z", "logs/y.log": "written by the application", "debug.log": "written by the application"}
    assert manifest_of(dest).read_text() == "./Zeta.php\n" + CODE_LIST, "sorted bytewise, excluded files left out"
    assert not [n for n in os.listdir(dest / "current") if n.startswith(".")], "nothing is written into the served tree"
    hidden = sorted(n for n in os.listdir(dest / "releases") if n.startswith("."))
    assert hidden == [".manifest-1", ".manifest-2"], "one manifest per release, no list left behind"
    # A refused sync leaves it as it was.
    empty_prefix(bucket)
    code, _, err = run(bucket, dest, 3, extra={"SSM_max_shrink": "50"})
    assert code == 65, err
    assert "empty" in refusal(err)
    assert os.readlink(dest / "current") == "releases/2"
    assert manifest_of(dest).read_text() == "./Zeta.php\n" + CODE_LIST
    assert not (dest / "releases" / ".manifest-3").exists(), "a refused release has no manifest"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_an_emptied_prefix_is_refused_though_excluded_files_remain(bucket: str, tmp_path: Path, shell: str) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, shell=shell, extra={"SSM_max_shrink": "100"})[0] == 0
    # *.log is excluded: never downloaded, never deleted, so the new
    # release still holds this one when the prefix is emptied.
    (dest / "current" / "logs").mkdir()
    (dest / "current" / "logs" / "y.log").write_text("written by the application")
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, shell=shell, extra={"SSM_max_shrink": "100"})
    assert code == 65, (out, err)
    line = refusal(err)
    assert "empty" in line and "releases/1 has 3 files" in line, line
    assert_kept(dest, content={**CODE, "logs/y.log": "written by the application"})
    assert manifest_of(dest).read_text() == CODE_LIST


def test_without_a_manifest_an_emptied_prefix_is_still_refused(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    # An instance last synced by an older document: current is listed,
    # without the excluded files.
    manifest_of(dest).unlink()
    (dest / "current" / "logs").mkdir()
    (dest / "current" / "logs" / "y.log").write_text("written by the application")
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, extra={"SSM_max_shrink": "100"})
    assert code == 65, (out, err)
    line = refusal(err)
    assert "empty" in line and "releases/1 has 3 files" in line, line
    assert_kept(dest, content={**CODE, "logs/y.log": "written by the application"})
    assert not (dest / "releases" / ".manifest-2").exists(), "a refused sync writes no manifest"
    # The next sync that switches writes it.
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v3")
    code, _, err = run(bucket, dest, 3, extra={"SSM_max_shrink": "100"})
    assert code == 0, err
    assert manifest_of(dest).read_text() == "./index.php\n"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_excludes_filter_the_lists_as_aws_s3_sync_matches_them(bucket: str, tmp_path: Path, shell: str) -> None:
    # * and ? cross /, [!a] is a negated set, a leading dot is no special case.
    excludes = "media/*,*.log,.env,conf/[!a]?.ini"
    extra = {"SSM_excludes": excludes, "SSM_max_shrink": "50"}
    for key in ("app/conf/a1.ini", "app/conf/b1.ini"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"ini")
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, shell=shell, extra=extra)[0] == 0
    assert files(dest / "current") == {**CODE, "conf/a1.ini": "ini"}, "aws s3 sync excluded conf/b1.ini"
    for name in (".env", "conf/b2.ini", "deep/er/x.log", ".hidden.log"):
        (dest / "current" / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / "current" / name).write_text("local")
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 2")
    code, _, err = run(bucket, dest, 2, shell=shell, extra=extra)
    assert code == 0, err
    assert set(files(dest / "current")) == {*CODE, "conf/a1.ini", ".env", "conf/b2.ini", "deep/er/x.log", ".hidden.log"}, "excluded files are kept"
    assert manifest_of(dest).read_text() == "./conf/a1.ini\n" + CODE_LIST, "the manifest holds what aws s3 sync manages"
    # Emptied: the excluded files left behind are no release.
    empty_prefix(bucket)
    code, _, err = run(bucket, dest, 3, shell=shell, extra=extra)
    assert code == 65, err
    assert "empty" in refusal(err) and "releases/2 has 4 files" in refusal(err)


@pytest.mark.parametrize("exported", [False, True])
def test_the_release_id_follows_current(bucket: str, tmp_path: Path, exported: bool) -> None:
    dest = tmp_path / "www"
    marker = dest / ".fleetkeeper.release"
    code, out, err = run(bucket, dest, 1, extra={"SSM_release": "v2026.11.27-1", "SSM_max_shrink": "50"})
    assert code == 0, err
    assert "synced into releases/1 (3 files) (release v2026.11.27-1)" in out
    assert marker.read_text() == "v2026.11.27-1\n"
    # A different size: S3 timestamps have one-second granularity.
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 2")
    code, out, err = run(bucket, dest, 2, extra={"SSM_release": "1.2.3+build:7", "SSM_max_shrink": "50"})
    assert code == 0, err
    assert "(release 1.2.3+build:7)" in out
    assert marker.read_text() == "1.2.3+build:7\n", "replaced by the next sync's id"
    assert not [n for n in os.listdir(dest / "current") if n.startswith(".")], "nothing is written into the served tree"
    assert not (dest / ".fleetkeeper.release.tmp").exists()
    # A refused sync leaves it as it was.
    empty_prefix(bucket)
    code, _, err = run(bucket, dest, 3, extra={"SSM_release": "v3", "SSM_max_shrink": "50"})
    assert code == 65, err
    assert marker.read_text() == "1.2.3+build:7\n"
    assert os.readlink(dest / "current") == "releases/2"
    # The lock was released by the refusal's exit. A sync without an id:
    # the release of current is unknown.
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 4 after all")
    code, out, err = run(bucket, dest, 4, extra={"SSM_release": ""} if exported else {})
    assert code == 0, err
    assert os.readlink(dest / "current") == "releases/4"
    assert files(dest / "current") == {"index.php": "version 4 after all"}
    assert not marker.exists(), "removed when the sync sends no id"
    assert "(release" not in out


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSM_release", "x;rm"),
        ("SSM_release", "$(id)"),
        ("SSM_release", "../etc"),
        ("SSM_release", ".hidden"),
        ("SSM_release", "v1 2"),
        ("SSM_release", "v1\nreboot"),
        ("SSM_release", "r" + "0" * 128),
        ("SSM_max_shrink", "101"),
        ("SSM_max_shrink", "-1"),
        ("SSM_max_shrink", "ANY"),
        ("SSM_max_shrink", "50%"),
        ("SSM_max_shrink", "008"),
        ("SSM_max_shrink", "1;rm"),
    ],
)
def test_a_hostile_value_that_bypasses_ssm_fails_closed(bucket: str, tmp_path: Path, name: str, value: str) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra={"SSM_release": "v1"})[0] == 0
    empty_prefix(bucket)
    code, out, err = run(bucket, dest, 2, extra={name: value})
    assert code == 2, (out, err)
    assert f"{name[4:]} is not" in err
    assert not [line for line in err.splitlines() if line.startswith(REFUSED)], "a bad value is a failure, not a refusal"
    assert_kept(dest)
    assert (dest / ".fleetkeeper.release").read_text() == "v1\n"


def test_the_script_never_references_a_parameter_in_braces() -> None:
    assert "{{" not in SCRIPT, "the agent substitutes {{ }} even with ENV_VAR interpolation"
    for name, spec in DOCUMENT["parameters"].items():
        if name == "executionTimeout":
            continue  # used by the step's timeoutSeconds, not by the script
        assert spec.get("interpolationType") == "ENV_VAR", name
        assert spec["allowedPattern"].startswith("^") and spec["allowedPattern"].endswith("$"), name


def test_document_patterns_accept_valid_and_refuse_hostile_values() -> None:
    for name, values in FIXTURE.items():
        pattern = DOCUMENT["parameters"][name]["allowedPattern"]
        for v in values["valid"]:
            assert re.fullmatch(pattern, v), f"{name}: {v!r} should pass"
        for v in values["hostile"]:
            assert re.fullmatch(pattern, v) is None, f"{name}: {v!r} should be refused"


def test_the_emulator_enforces_the_document_like_ssm() -> None:
    ssm = boto3.client("ssm", endpoint_url=URL, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", endpoint_url=URL, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"fk-doc-{uuid.uuid4().hex[:10]}"
    ssm.create_document(Name=name, Content=DOCUMENT_TEXT, DocumentType="Command", DocumentFormat="YAML")
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    good = {k: [v["valid"][1] if len(v["valid"]) > 1 else v["valid"][0]] for k, v in FIXTURE.items()}
    ssm.send_command(InstanceIds=[instance], DocumentName=name, Parameters=good)
    for param, values in FIXTURE.items():
        for hostile in values["hostile"][:3]:
            with pytest.raises(ClientError) as err:
                ssm.send_command(InstanceIds=[instance], DocumentName=name, Parameters={**good, param: [hostile]})
            assert err.value.response["Error"]["Code"] == "InvalidParameters", (param, hostile)


def test_a_manifest_belongs_to_its_release_and_goes_with_it(bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    for gen in range(1, 6):
        s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v" * gen)
        assert run(bucket, dest, gen, extra={"SSM_max_shrink": "50"})[0] == 0
    hidden = sorted(n for n in os.listdir(dest / "releases") if n.startswith("."))
    assert hidden == [".manifest-3", ".manifest-4", ".manifest-5"], "pruned with the releases"
    # current switched by hand (a rollback to release 4): the guard reads
    # release 4's manifest, so the application's file there is no loss.
    (dest / "current").unlink()
    (dest / "current").symlink_to("releases/4")
    (dest / "current" / "cache.php").write_text("written by the application")
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v6")
    code, _, err = run(bucket, dest, 6, extra={"SSM_max_shrink": "20"})
    assert code == 0, err
    # A release without a manifest (made by an older document) is listed
    # as it is: never compared with another release's manifest.
    (dest / "current").unlink()
    (dest / "current").symlink_to("releases/5")
    (dest / "releases" / ".manifest-5").unlink()
    (dest / "current" / "cache.php").write_text("written by the application")
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v7")
    code, _, err = run(bucket, dest, 7, extra={"SSM_max_shrink": "20"})
    assert code == 65, err
    assert "loses 1 of the 4 files" in refusal(err), "listed: release 5's own files, the app's included"
