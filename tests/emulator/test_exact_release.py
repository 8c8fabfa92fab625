"""The sync document's exact release (``infra/sync-document.yaml`` given a
wave's manifest), run for real.

A manifest (``manifest``, ``manifest_bucket``, ``manifest_region``,
``manifest_sha256``) names the objects the release must hold: the script
fetches what changed since the previous exact release (by version id, or by
``If-Match`` on the ETag), hard-links the rest, and refuses anything else.
As in ``test_sync_document.py`` the script runs with ``sh`` (and ``bash``)
against the emulator's S3 with the AWS CLI from the venv, into temporary
directories standing in for instances, parameters as ``SSM_<name>``
variables. The manifests are written here as the functions write them (the
contract: gzip of JSON lines, a header, then one line per object sorted by
key), from a boto3 listing.
"""

from __future__ import annotations

import ast
import calendar
import datetime
import fnmatch
import gzip
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from document import DOCUMENT, EXCLUDES, SCRIPT, VENV_BIN, codebase_bucket, run, s3

FORMAT = "fleetkeeper-manifest/1"
CODE = {"index.php": "v1", "lib/a.php": "a", "lib/b.php": "b"}
CODE_LIST = "./index.php\n./lib/a.php\n./lib/b.php\n"
MANY = {f"many/{n:03}.txt": "one" for n in range(80)}
STALE = "fleetkeeper: stale: "
NEW_PARAMETERS = ("manifest_bucket", "manifest_region", "manifest", "manifest_sha256", "rollback", "keep_releases", "keep")


@pytest.fixture
def bucket() -> str:
    return codebase_bucket("fk-exact")


@pytest.fixture
def versioned() -> str:
    return codebase_bucket("fk-exact", versioned=True)


@pytest.fixture
def manifests() -> str:
    """The functions' manifest bucket: never the codebase's."""
    name = f"fk-man-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def many(bucket: str, body: bytes = b"one") -> None:
    """80 more keys: more than the 64 fetched one by one."""
    for name in MANY:
        s3.put_object(Bucket=bucket, Key=f"app/{name}", Body=body)


# ---------------------------------------------------------------------------
# Manifests, as the functions write them
# ---------------------------------------------------------------------------


@dataclass
class Manifest:
    params: dict[str, str]
    text: str
    sha256: str

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()[1:]]


def epoch_ms(t: datetime.datetime) -> int:
    return calendar.timegm(t.utctimetuple()) * 1000 + t.microsecond // 1000


def listed(bucket: str, prefix: str, versioned: bool) -> list[dict[str, Any]]:
    """The prefix's objects: on a versioned bucket each key's latest version
    (a key whose latest is a delete marker is absent)."""
    found: list[dict[str, Any]] = []
    if versioned:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            found += [v for v in page.get("Versions", []) if v["IsLatest"]]
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += page.get("Contents", [])
    return found


def header(bucket: str, count: int, *, prefix: str = "app/", versioned: bool = False) -> dict[str, Any]:
    return {"format": FORMAT, "bucket": bucket, "prefix": prefix, "versioned": versioned, "count": count}


def lines_of(bucket: str, *, prefix: str = "app/", excludes: str = EXCLUDES, versioned: bool = False) -> list[dict[str, Any]]:
    """The manifest's lines: its header, then one per object (excluded keys
    left out), sorted by key in byte order."""
    patterns = [p for p in excludes.split(",") if p]
    entries = []
    for o in listed(bucket, prefix, versioned):
        key = o["Key"][len(prefix) :]
        if not key or any(fnmatch.fnmatchcase(key, p) for p in patterns):
            continue
        entries.append(
            {
                "key": key,
                "size": o["Size"],
                "etag": o["ETag"].strip('"'),
                "version": o["VersionId"] if versioned else None,
                "modified": epoch_ms(o["LastModified"]),
            }
        )
    entries.sort(key=lambda e: e["key"].encode())
    return [header(bucket, len(entries), prefix=prefix, versioned=versioned), *entries]


def publish(manifests: str, lines: list[dict[str, Any]], *, region: str = "us-east-1") -> Manifest:
    """Writes the manifest (gzip of JSON lines) content-addressed into the
    manifest bucket; its four document parameters."""
    text = "".join(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in lines)
    body = gzip.compress(text.encode())
    sha = hashlib.sha256(body).hexdigest()
    key = f"manifests/web-{uuid.uuid4().hex[:6]}/{sha}.jsonl.gz"
    s3.put_object(Bucket=manifests, Key=key, Body=body)
    params = {"SSM_manifest_bucket": manifests, "SSM_manifest_region": region, "SSM_manifest": key, "SSM_manifest_sha256": sha}
    return Manifest(params=params, text=text, sha256=sha)


def take(bucket: str, manifests: str, *, versioned: bool = False, region: str = "us-east-1") -> Manifest:
    """The manifest a wave's winner takes now."""
    return publish(manifests, lines_of(bucket, versioned=versioned), region=region)


# ---------------------------------------------------------------------------
# Running the document
# ---------------------------------------------------------------------------


def files(root: Path) -> dict[str, str]:
    """The regular files under root; links are not followed (shared/ is not
    part of a release)."""
    found = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = Path(top) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_text()
    return found


def releases(dest: Path) -> list[str]:
    """The releases: every name of releases/ not starting with a dot."""
    return sorted(p.name for p in (dest / "releases").iterdir() if not p.name.startswith("."))


def hidden(dest: Path) -> list[str]:
    """The rest of releases/: manifests, sources and their sha256, and leftovers (.tmp-*)."""
    return sorted(p.name for p in (dest / "releases").iterdir() if p.name.startswith("."))


def outside(root: Path, dest: Path) -> set[str]:
    """Every path under root but outside dest."""
    return {str(p) for p in root.rglob("*") if p != dest and dest not in p.parents}


def summary(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("fleetkeeper: manifest ")]
    assert len(lines) == 1, out
    return lines[0]


def stale_line(key: str) -> str:
    return f"{STALE}{key} changed since the wave's manifest; current is kept; the next wave takes a fresh manifest"


def ino(dest: Path, release: str, key: str) -> int:
    return os.lstat(dest / "releases" / release / key).st_ino


def assert_kept(dest: Path, before: list[str], content: dict[str, str] | None = None) -> None:
    """A failed run: current, its files and releases/ as they were, nothing left behind."""
    assert os.readlink(dest / "current") == "releases/1"
    assert files(dest / "current") == (CODE if content is None else content)
    assert releases(dest) == ["1"]
    assert hidden(dest) == before, "no temporary release, list, source or manifest is left"


# ---------------------------------------------------------------------------
# The exact release
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_first_exact_sync_holds_exactly_the_manifest(bucket: str, manifests: str, tmp_path: Path, shell: str) -> None:
    dest = tmp_path / "www"
    # Empty manifest_region: the codebase bucket's region.
    m = take(bucket, manifests, region="" if shell == "bash" else "us-east-1")
    code, out, err = run(bucket, dest, 1, shell=shell, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 0 kept, 3 fetched (per key)"
    assert "fleetkeeper: generation 1 synced into releases/1 (3 files)" in out.splitlines()
    assert os.readlink(dest / "current") == "releases/1"
    assert files(dest / "current") == CODE
    assert (dest / "current" / "media").is_symlink(), "excluded media/* is linked to shared/"
    assert os.readlink(dest / "current" / "media") == str(dest / "shared" / "media")
    assert not (dest / "current" / "logs").exists(), "excluded globs are not fetched"
    assert not (dest / "current" / "outside.txt").exists()
    assert (dest / "releases" / ".source-1").read_text() == m.text, "the manifest's lines, header included"
    assert (dest / "releases" / ".manifest-1").read_text() == CODE_LIST
    assert hidden(dest) == [".manifest-1", ".sha256-1", ".source-1"], "no temporary file is left"
    for name in CODE:
        assert os.stat(dest / "current" / name).st_mode & 0o777 == 0o644, f"{name}: readable by the web server"


def test_a_same_size_change_within_the_second_is_fetched(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra=take(bucket, manifests).params)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v2")
    # What aws s3 sync cannot tell apart: the same size, and the same second
    # (the live copy's time is the new object's).
    modified = s3.head_object(Bucket=bucket, Key="app/index.php")["LastModified"].timestamp()
    os.utime(dest / "current" / "index.php", (modified, modified))
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert files(dest / "current") == {**CODE, "index.php": "v2"}
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 2 kept, 1 fetched (per key)"
    assert files(dest / "releases" / "1")["index.php"] == "v1", "the previous release is untouched"


def test_unchanged_files_are_hard_links_and_changed_ones_are_new_files(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra=take(bucket, manifests).params)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/lib/a.php", Body=b"a, second")
    s3.put_object(Bucket=bucket, Key="app/new.php", Body=b"new")
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 4 keys: 2 kept, 2 fetched (per key)"
    for key in ("index.php", "lib/b.php"):
        assert ino(dest, "2", key) == ino(dest, "1", key), f"{key} was not downloaded again"
        assert os.lstat(dest / "releases" / "2" / key).st_nlink == 2
    assert ino(dest, "2", "lib/a.php") != ino(dest, "1", "lib/a.php"), "a changed file is a new file"
    assert files(dest / "releases" / "1") == CODE, "the previous release is untouched"
    assert files(dest / "current") == {**CODE, "lib/a.php": "a, second", "new.php": "new"}
    assert os.stat(dest / "current" / "new.php").st_mode & 0o777 == 0o644
    assert hidden(dest) == [".manifest-1", ".manifest-2", ".sha256-1", ".sha256-2", ".source-1", ".source-2"]


def test_a_file_edited_in_place_on_the_host_is_fetched_again(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m = take(bucket, manifests)
    assert run(bucket, dest, 1, extra=m.params)[0] == 0
    # A same-size hot-fix made on the host: the manifest still names the
    # object, but the file is not what S3 holds.
    edited = dest / "releases" / "1" / "lib" / "b.php"
    fetched_at = edited.stat().st_mtime
    edited.write_text("B")
    # (Two seconds after the object's time, as an edit a moment later: an
    # edit within the same second as the upload is not told apart.)
    os.utime(edited, (fetched_at + 2, fetched_at + 2))
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 2 kept, 1 fetched (per key)"
    assert files(dest / "current")["lib/b.php"] == "b", "S3's content again"
    assert ino(dest, "2", "lib/b.php") != ino(dest, "1", "lib/b.php")


def test_on_a_versioned_bucket_an_upload_after_the_manifest_never_enters_the_release(versioned: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(versioned, dest, 1, extra=take(versioned, manifests, versioned=True).params)[0] == 0
    s3.put_object(Bucket=versioned, Key="app/lib/a.php", Body=b"a, release 2")
    m = take(versioned, manifests, versioned=True)
    # Uploaded while the wave runs, after its manifest was taken.
    s3.put_object(Bucket=versioned, Key="app/lib/a.php", Body=b"a, release 3, uploaded during the wave")
    s3.put_object(Bucket=versioned, Key="app/late.php", Body=b"late")
    code, out, err = run(versioned, dest, 2, extra=m.params)
    assert code == 0, err
    assert files(dest / "current") == {**CODE, "lib/a.php": "a, release 2"}, "the manifest's version, nothing later"
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 2 kept, 1 fetched (per key)"
    # The next wave's manifest brings them.
    code, _, err = run(versioned, dest, 3, extra=take(versioned, manifests, versioned=True).params)
    assert code == 0, err
    assert files(dest / "current") == {**CODE, "lib/a.php": "a, release 3, uploaded during the wave", "late.php": "late"}


def test_bulk_on_a_versioned_bucket_serves_the_manifest_versions(versioned: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    many(versioned)
    m = take(versioned, manifests, versioned=True)
    s3.put_object(Bucket=versioned, Key="app/many/042.txt", Body=b"changed during the wave")
    s3.put_object(Bucket=versioned, Key="app/late.php", Body=b"late")
    code, out, err = run(versioned, dest, 1, extra=m.params)
    assert code == 0, err
    # aws s3 sync brought the new many/042.txt: the listing shows another
    # version, so it was fetched again by the manifest's.
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 83 keys: 0 kept, 83 fetched (bulk, 1 per key)"
    assert files(dest / "current") == {**CODE, **MANY}, "the manifest's versions; late.php, synced too, removed"
    assert (dest / "releases" / ".source-1").read_text() == m.text


def test_bulk_keeps_unchanged_files_and_fetches_same_size_changes(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    many(bucket)
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 1, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 83 keys: 0 kept, 83 fetched (bulk)"
    changed = [f"many/{n:03}.txt" for n in range(70)]
    for name in changed:
        s3.put_object(Bucket=bucket, Key=f"app/{name}", Body=b"two")
    # The same size, and the live copies get the new objects' times: aws s3
    # sync alone would keep them all.
    for o in s3.list_objects_v2(Bucket=bucket, Prefix="app/many/")["Contents"]:
        t = o["LastModified"].timestamp()
        os.utime(dest / "current" / o["Key"][len("app/") :], (t, t))
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 83 keys: 13 kept, 70 fetched (bulk)"
    assert files(dest / "current") == {**CODE, **MANY, **{name: "two" for name in changed}}
    assert files(dest / "releases" / "1") == {**CODE, **MANY}, "the previous release is untouched"
    for key in ("index.php", "many/070.txt", "many/079.txt"):
        assert ino(dest, "2", key) == ino(dest, "1", key), f"{key} was not downloaded again"
    for key in ("many/000.txt", "many/069.txt"):
        assert ino(dest, "2", key) != ino(dest, "1", key), key


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_on_an_unversioned_bucket_an_upload_after_the_manifest_is_stale(bucket: str, manifests: str, tmp_path: Path, shell: str) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, shell=shell, extra=take(bucket, manifests).params)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/lib/a.php", Body=b"a, release 2")
    m = take(bucket, manifests)
    s3.put_object(Bucket=bucket, Key="app/lib/a.php", Body=b"a, release 3, uploaded during the wave")
    code, out, err = run(bucket, dest, 2, shell=shell, extra=m.params)
    assert code == 75, (out, err)
    assert stale_line("lib/a.php") in out.splitlines(), out
    assert stale_line("lib/a.php") in err.splitlines(), err
    assert "synced" not in out
    assert_kept(dest, [".manifest-1", ".sha256-1", ".source-1"])
    # The next wave, with a fresh manifest.
    code, _, err = run(bucket, dest, 2, shell=shell, extra=take(bucket, manifests).params)
    assert code == 0, err
    assert files(dest / "current") == {**CODE, "lib/a.php": "a, release 3, uploaded during the wave"}


def test_bulk_on_an_unversioned_bucket_an_upload_after_the_manifest_is_stale(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    many(bucket)
    m = take(bucket, manifests)
    s3.put_object(Bucket=bucket, Key="app/many/042.txt", Body=b"changed during the wave")
    code, out, err = run(bucket, dest, 1, extra=m.params)
    assert code == 75, (out, err)
    assert stale_line("many/042.txt") in out.splitlines(), out
    assert stale_line("many/042.txt") in err.splitlines(), err
    assert not os.path.lexists(dest / "current")
    assert os.listdir(dest / "releases") == [], "no release, no temporary release, no list"


def test_a_key_deleted_after_the_manifest_is_stale(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m = take(bucket, manifests)
    s3.delete_object(Bucket=bucket, Key="app/lib/b.php")
    code, out, err = run(bucket, dest, 1, extra=m.params)
    assert code == 75, (out, err)
    assert stale_line("lib/b.php") in out.splitlines()
    assert not os.path.lexists(dest / "current")
    assert os.listdir(dest / "releases") == []


def denying_get_object(tmp_path: Path, bucket: str) -> str:
    """A PATH prefix whose `aws` answers every GetObject of `bucket` as AWS
    answers a role whose s3:ListBucket is conditioned on s3:prefix (moto
    enforces no IAM): 403 AccessDenied, whether or not the key exists."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "aws").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = s3api ] && [ "$2" = get-object ] && [ "$3" = "--bucket={bucket}" ]; then\n'
        '  echo "An error occurred (AccessDenied) when calling the GetObject operation: Access Denied" >&2\n'
        "  exit 254\n"
        "fi\n"
        f'exec "{VENV_BIN}/aws" "$@"\n'
    )
    (shim / "aws").chmod(0o755)
    return f"{shim}:"


def test_a_deleted_key_answered_with_403_is_stale_and_a_real_denial_is_not(bucket: str, manifests: str, tmp_path: Path) -> None:
    m = take(bucket, manifests)
    shim = denying_get_object(tmp_path, bucket)
    # The key exists: a real denial is a failure, loudly.
    code, out, err = run(bucket, tmp_path / "a", 1, extra=m.params, path_prefix=shim)
    assert code == 2, (out, err)
    assert "AccessDenied" in err and STALE not in out
    # The key was deleted after the manifest: the listing says so.
    s3.delete_object(Bucket=bucket, Key="app/index.php")
    code, out, err = run(bucket, tmp_path / "b", 1, extra=m.params, path_prefix=shim)
    assert code == 75, (out, err)
    assert stale_line("index.php") in out.splitlines()


def test_a_version_deleted_after_the_manifest_is_stale(versioned: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m = take(versioned, manifests, versioned=True)
    version = next(e["version"] for e in m.entries() if e["key"] == "lib/b.php")
    s3.delete_object(Bucket=versioned, Key="app/lib/b.php", VersionId=version)
    code, out, err = run(versioned, dest, 1, extra=m.params)
    assert code == 75, (out, err)
    assert stale_line("lib/b.php") in err.splitlines()
    assert not os.path.lexists(dest / "current")


def test_a_stale_key_is_shown_url_encoded(bucket: str, manifests: str, tmp_path: Path) -> None:
    # Safe keys may still hold spaces, quotes or non-ASCII letters: the line
    # needs no escaping wherever it is read.
    dest = tmp_path / "www"
    key = "it's a café %20.php"
    s3.put_object(Bucket=bucket, Key=f"app/{key}", Body=b"one")
    m = take(bucket, manifests)
    s3.put_object(Bucket=bucket, Key=f"app/{key}", Body=b"two")
    code, out, err = run(bucket, dest, 1, extra=m.params)
    assert code == 75, (out, err)
    assert stale_line("it%27s%20a%20caf%C3%A9%20%2520.php") in out.splitlines(), out


def test_a_deleted_key_goes_and_excluded_files_the_application_wrote_stay(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra=take(bucket, manifests).params)[0] == 0
    current = dest / "current"
    (current / "logs").mkdir()
    (current / "logs" / "y.log").write_text("written by the application")
    (current / "debug.log").write_text("written by the application")
    (current / "cache").mkdir()
    (current / "cache" / "x.php").write_text("compiled, not excluded")
    (current / "media" / "upload.jpg").write_text("user upload")
    s3.delete_object(Bucket=bucket, Key="app/lib/a.php")
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 2 keys: 2 kept, 0 fetched (per key)"
    assert files(dest / "current") == {
        "index.php": "v1",
        "lib/b.php": "b",
        "logs/y.log": "written by the application",
        "debug.log": "written by the application",
    }, "the deleted key and the file no exclude matches are gone"
    assert (dest / "current" / "media").is_symlink()
    assert (dest / "current" / "media" / "upload.jpg").read_text() == "user upload"
    assert (dest / "releases" / ".manifest-2").read_text() == "./index.php\n./lib/b.php\n"
    assert files(dest / "releases" / "1")["lib/a.php"] == "a", "the previous release is untouched"


def test_a_file_and_a_directory_trade_places(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra=take(bucket, manifests).params)[0] == 0
    (dest / "current" / "conf").write_text("a file the application wrote")
    for key in ("app/lib/a.php", "app/lib/b.php", "app/index.php"):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key="app/lib", Body=b"now a file")
    s3.put_object(Bucket=bucket, Key="app/index.php/inner.php", Body=b"now a directory")
    s3.put_object(Bucket=bucket, Key="app/conf/app.ini", Body=b"ini")
    code, _, err = run(bucket, dest, 2, extra=take(bucket, manifests).params)
    assert code == 0, err
    assert files(dest / "current") == {"lib": "now a file", "index.php/inner.php": "now a directory", "conf/app.ini": "ini"}
    assert files(dest / "releases" / "1") == {**CODE, "conf": "a file the application wrote"}, "the previous release is untouched"


def test_an_unusable_manifest_of_current_means_everything_is_fetched(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1, extra=take(bucket, manifests).params)[0] == 0
    (dest / "releases" / ".source-1").write_text("not a manifest\n")
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert "fleetkeeper: the manifest of current is not usable" in err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 0 kept, 3 fetched (per key)"
    assert files(dest / "current") == CODE
    assert (dest / "releases" / ".source-2").read_text() == m.text


def test_the_first_exact_sync_after_a_plain_one_keeps_what_size_and_time_say_is_unchanged(bucket: str, manifests: str, tmp_path: Path) -> None:
    # An upgrade: current was synced by aws s3 sync, without a manifest.
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/lib/a.php", Body=b"a, second")
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 2 kept, 1 fetched (per key)"
    assert files(dest / "current") == {**CODE, "lib/a.php": "a, second"}
    assert ino(dest, "2", "index.php") == ino(dest, "1", "index.php"), "not downloaded again"


def test_sources_go_with_their_releases(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    m = take(bucket, manifests)
    for generation in range(1, 6):
        assert run(bucket, dest, generation, extra=m.params)[0] == 0
    assert releases(dest) == ["3", "4", "5"]
    assert hidden(dest) == [".manifest-3", ".manifest-4", ".manifest-5", ".sha256-3", ".sha256-4", ".sha256-5", ".source-3", ".source-4", ".source-5"]
    # A sync without a manifest writes no source, and prunes them too.
    code, out, err = run(bucket, dest, 6)
    assert code == 0, err
    assert "fleetkeeper: manifest " not in out
    assert hidden(dest) == [".manifest-4", ".manifest-5", ".manifest-6", ".sha256-4", ".sha256-5", ".source-4", ".source-5"]
    # Current (6) has no source: size and time decide, as aws s3 sync did.
    code, out, err = run(bucket, dest, 7, extra=m.params)
    assert code == 0, err
    assert summary(out) == f"fleetkeeper: manifest {m.sha256[:12]} 3 keys: 3 kept, 0 fetched (per key)"
    assert hidden(dest) == [".manifest-5", ".manifest-6", ".manifest-7", ".sha256-5", ".sha256-7", ".source-5", ".source-7"]
    assert files(dest / "current") == CODE


# ---------------------------------------------------------------------------
# Refusals: exit status 2, current kept
# ---------------------------------------------------------------------------


def test_a_manifest_that_does_not_match_its_sha256_is_refused(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    first = take(bucket, manifests)
    assert run(bucket, dest, 1, extra=first.params)[0] == 0
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"v2")
    m = take(bucket, manifests)
    code, out, err = run(bucket, dest, 2, extra={**m.params, "SSM_manifest_sha256": first.sha256})
    assert code == 2, (out, err)
    assert "fleetkeeper: the manifest does not match its sha256" in err.splitlines()
    assert_kept(dest, [".manifest-1", ".sha256-1", ".source-1"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "fleetkeeper-manifest/2"),
        ("bucket", "another-bucket"),
        ("prefix", "other/"),
        ("prefix", ""),
        ("count", 4),
        ("count", True),
        ("versioned", True),
    ],
)
def test_a_manifest_of_another_codebase_or_format_is_refused(bucket: str, manifests: str, tmp_path: Path, field: str, value: Any) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    lines = lines_of(bucket)
    lines[0][field] = value
    code, out, err = run(bucket, dest, 2, extra=publish(manifests, lines).params)
    assert code == 2, (out, err)
    assert "fleetkeeper: the manifest is refused: " in err, err
    assert_kept(dest, [".manifest-1"])


def test_a_manifest_listing_an_excluded_key_is_refused(bucket: str, manifests: str, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    # Taken without the excludes: logs/x.log and media/1.jpg are listed.
    m = publish(manifests, lines_of(bucket, excludes=""))
    code, out, err = run(bucket, dest, 1, extra=m.params)
    assert code == 2, (out, err)
    assert "fleetkeeper: the manifest is refused: it lists 'logs/x.log', which the excludes match" in err.splitlines()
    assert not os.path.lexists(dest / "current")
    assert not (dest / "shared" / "media" / "1.jpg").exists()


UNSAFE = {
    "parent": ["../x"],
    "deep parent": ["lib/../../../../escape.php"],
    "empty segment": ["a//b"],
    "absolute": ["/abs"],
    "dot": ["a/./b"],
    "trailing slash": ["a/"],
    "newline": ["line\nbreak"],
    "escape": ["\x1b[31mred"],
    "delete": ["x\x7fy"],
    "c1": ["x\x85y"],
    "long segment": ["d/" + "x" * 256],
    "long segment in bytes": ["é" * 128],
    "long key": ["/".join(["k" * 100] * 11)],
    "collision": ["a", "a/b"],
    "empty": [""],
}


@pytest.mark.parametrize("keys", list(UNSAFE.values()), ids=list(UNSAFE))
def test_an_unsafe_key_fails_closed(bucket: str, manifests: str, tmp_path: Path, keys: list[str]) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    before = outside(tmp_path, dest)
    entries = [
        {"key": key, "size": 1, "etag": "0" * 32, "version": None, "modified": 1764000000000}
        for key in sorted(keys, key=lambda k: k.encode())
    ]
    m = publish(manifests, [header(bucket, len(entries)), *entries])
    code, out, err = run(bucket, dest, 2, extra=m.params)
    assert code == 2, (out, err)
    assert "fleetkeeper: the manifest is refused: " in err, err
    assert any(repr(key) in err for key in keys), "the key is named, escaped"
    for line in err.splitlines():
        assert line.isprintable(), f"a raw control character: {line!r}"
    assert_kept(dest, [".manifest-1"])
    assert outside(tmp_path, dest) == before, "nothing is written outside the destination"
    assert not (dest / "releases" / "x").exists() and not (dest / "escape.php").exists()


@pytest.mark.parametrize("missing", ["SSM_manifest_bucket", "SSM_manifest_sha256"])
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_a_manifest_without_its_bucket_or_sha256_fails_closed(bucket: str, manifests: str, tmp_path: Path, missing: str, how: str) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    params = dict(take(bucket, manifests).params)
    if how == "unset":
        del params[missing]
    else:
        params[missing] = ""
    code, out, err = run(bucket, dest, 2, extra=params)
    assert code == 2, (out, err)
    assert f"fleetkeeper: manifest is set without {missing[4:]}" in err.splitlines()
    assert_kept(dest, [".manifest-1"])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSM_manifest", "manifests/../x.jsonl.gz"),
        ("SSM_manifest", "manifests/a/./b.jsonl.gz"),
        ("SSM_manifest", "manifests//x.jsonl.gz"),
        ("SSM_manifest", "manifests/x.jsonl.gz;reboot"),
        ("SSM_manifest", "manifests/$(id).jsonl.gz"),
        ("SSM_manifest", "manifests/x.jsonl.gz\nreboot"),
        ("SSM_manifest", "other/x.jsonl.gz"),
        ("SSM_manifest", "-manifests/x.jsonl.gz"),
        ("SSM_manifest_bucket", "-bucket"),
        ("SSM_manifest_bucket", "Bucket"),
        ("SSM_manifest_bucket", "a"),
        ("SSM_manifest_bucket", "b/c"),
        ("SSM_manifest_region", "us-east-1;id"),
        ("SSM_manifest_region", "--endpoint-url=http://x"),
        ("SSM_manifest_sha256", "A" * 64),
        ("SSM_manifest_sha256", "0" * 63),
        ("SSM_manifest_sha256", "0" * 65),
    ],
)
def test_a_hostile_manifest_value_that_bypasses_ssm_fails_closed(bucket: str, manifests: str, tmp_path: Path, name: str, value: str) -> None:
    dest = tmp_path / "www"
    assert run(bucket, dest, 1)[0] == 0
    before = outside(tmp_path, dest)
    code, out, err = run(bucket, dest, 2, extra={**take(bucket, manifests).params, name: value})
    assert code == 2, (out, err)
    assert err.startswith(f"fleetkeeper: {name[4:]} "), err
    assert_kept(dest, [".manifest-1"])
    assert outside(tmp_path, dest) == before


# ---------------------------------------------------------------------------
# Without a manifest: the older path, untouched
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["absent", "empty", "only the others"])
def test_without_a_manifest_the_older_path_runs(bucket: str, manifests: str, tmp_path: Path, variant: str) -> None:
    dest = tmp_path / "www"
    m = take(bucket, manifests)
    extra = {
        "absent": {},
        "empty": {f"SSM_{name}": "" for name in NEW_PARAMETERS},
        # The other three are not even read.
        "only the others": {**m.params, "SSM_manifest": "", "SSM_manifest_sha256": "not even a sha256"},
    }[variant]
    code, out, err = run(bucket, dest, 1, extra=extra)
    assert code == 0, err
    assert "fleetkeeper: generation 1 synced into releases/1 (3 files)" in out.splitlines()
    assert "fleetkeeper: manifest " not in out
    assert files(dest / "current") == CODE
    assert hidden(dest) == [".manifest-1"], "no source without a manifest"
    # A sync after it, as before: aws s3 sync --delete.
    s3.put_object(Bucket=bucket, Key="app/index.php", Body=b"version 2")
    s3.delete_object(Bucket=bucket, Key="app/lib/a.php")
    code, _, err = run(bucket, dest, 2, extra=extra)
    assert code == 0, err
    assert files(dest / "current") == {"index.php": "version 2", "lib/b.php": "b"}
    assert hidden(dest) == [".manifest-1", ".manifest-2"]


# ---------------------------------------------------------------------------
# The document itself
# ---------------------------------------------------------------------------


def embedded_python() -> str:
    """The program between `python3 -I -X utf8 - <<'PY'` (in exact()) and `PY`."""
    lines = SCRIPT.split("\n")
    starts = [n for n, line in enumerate(lines) if line.endswith("<<'PY'")]
    assert len(starts) == 1, "one program, in a quoted heredoc: the shell expands nothing in it"
    assert "python3 -I -X utf8 - <<'PY'" in lines[starts[0]], "fed on standard input by exact()"
    end = lines.index("PY", starts[0])
    return "\n".join(lines[starts[0] + 1 : end])


def test_the_embedded_python_is_python_3_9_and_runs_no_shell() -> None:
    source = embedded_python()
    tree = ast.parse(source, feature_version=(3, 9))
    assert "{{" not in source and "SSM_" not in source, "its inputs come from the environment (FK_*)"
    assert "shell=True" not in source and "os.system" not in source and "os.popen" not in source
    # Every option given to the CLI carries its value as --opt=VALUE: a key
    # starting with - can never be read as an option.
    flags = {"--exact-timestamps", "--no-follow-symlinks", "--only-show-errors", "--no-progress"}
    options = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("--")]
    assert options, "the CLI's options are in the program"
    for option in options:
        assert option in flags or re.fullmatch(r"--[a-z-]+=.*", option), option


def test_the_new_parameters_keep_the_older_behaviour_by_default() -> None:
    for name in NEW_PARAMETERS:
        spec = DOCUMENT["parameters"][name]
        assert spec["type"] == "String", name
        assert spec["default"] == "", name
        assert spec["interpolationType"] == "ENV_VAR", name
        assert spec["description"], name
        assert re.fullmatch(spec["allowedPattern"], ""), f"{name}: empty is the default"
        assert f"${{SSM_{name}-}}" in SCRIPT, f"{name} is read whether or not the agent exports it"
        assert f"${{SSM_{name}+set}}" not in SCRIPT, f"{name} must not fail closed when unset"


# (Their allowedPatterns are checked against shared/fixtures/parameters.json
# with every other parameter's: test_sync_document.py and the Rust suite.)


def test_the_document_leaves_room_under_the_ssm_size_limit() -> None:
    # SSM documents are at most 64 KB, as JSON or YAML; the parameters a run
    # is sent count toward a command's size too. Keep a margin.
    as_json = json.dumps(DOCUMENT, separators=(",", ":"))
    assert len(as_json.encode()) < 56 * 1024, len(as_json.encode())
