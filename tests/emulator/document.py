"""What the sync document's tests share: the document and its script, the
emulator's S3, a codebase bucket, and a run of the script as the agent runs
it (``sh -c``, parameters as ``SSM_<name>`` variables, the AWS CLI from the
venv against the emulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config

URL = os.environ.get("FLEETKEEPER_EMULATOR_URL")
if not URL:
    raise RuntimeError("FLEETKEEPER_EMULATOR_URL is not set: run these tests through `make test`")

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_TEXT = (ROOT / "infra" / "sync-document.yaml").read_text()
DOCUMENT = yaml.safe_load(DOCUMENT_TEXT)
SCRIPT = "\n".join(DOCUMENT["mainSteps"][0]["inputs"]["runCommand"])
VENV_BIN = Path(sys.executable).parent
EXCLUDES = "media/*,*.log"

#: The codebase every test starts from: under app/, with excluded media and
#: logs, and an object outside the prefix.
OBJECTS = {
    "app/index.php": "v1",
    "app/lib/a.php": "a",
    "app/lib/b.php": "b",
    "app/media/1.jpg": "image",
    "app/logs/x.log": "log",
    "other/outside.txt": "not the codebase",
}

s3 = boto3.client(
    "s3",
    endpoint_url=URL,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    config=Config(retries={"total_max_attempts": 1}),
)


def codebase_bucket(prefix: str, *, versioned: bool = False) -> str:
    """A fresh bucket holding :data:`OBJECTS` (versioned from the start: no
    ``null`` versions)."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=name, Key=key, Body=body.encode())
    return name


def run(bucket: str, dest: Path, generation: int, *, shell: str = "sh", path_prefix: str = "", drop: str | None = None, wait: bool = True, extra: dict[str, str] | None = None) -> Any:
    """Runs the script for `generation` into `dest`: (status, stdout, stderr),
    or the process when not `wait`. `drop` leaves a parameter out (an agent
    that does not export it); `path_prefix` puts shims before the venv."""
    env = {
        "PATH": f"{path_prefix}{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(dest.parent),
        "AWS_ENDPOINT_URL": URL,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SSM_bucket": bucket,
        "SSM_prefix": "app/",
        "SSM_destination": str(dest),
        "SSM_excludes": EXCLUDES,
        "SSM_generation": str(generation),
        "SSM_region": "us-east-1",
    }
    env.update(extra or {})
    if drop:
        env.pop(drop, None)
    proc = subprocess.Popen([shell, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err
