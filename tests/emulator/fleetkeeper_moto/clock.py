"""One clock for the emulator's timed behaviour: wall time plus an offset
per account, set by tests through ``POST /moto-api/fleetkeeper/clock``.

Every timed behaviour of the patch layer (lifecycle timeouts, invocation
timeouts, readiness delays, the timestamps of events it emits and of
commands it records) reads :func:`now` for the account of the resource,
lazily, when a request arrives: nothing runs in the background. Tests run
side by side in separate accounts (see :mod:`fleetkeeper_moto.accounts`),
so moving one test's clock never moves another's.

moto's own timestamps stay on wall time: EC2 ``LaunchTime``, S3
``LastModified``, DynamoDB, the ``time`` of moto's S3 EventBridge events.
fleetkeeper only compares those with each other (the codebase fingerprint)
or never reads them, so a test that moves its clock forward is unaffected;
where the patch layer needs one on the test clock (a command's
``RequestedDateTime``, which ``ListCommands`` filters by), it sets it.
"""

from __future__ import annotations

import datetime
import threading

LOCK = threading.Lock()
#: account -> offset in milliseconds
OFFSETS: dict[str, int] = {}


def offset_ms(account: str) -> int:
    with LOCK:
        return OFFSETS.get(account, 0)


def now(account: str) -> datetime.datetime:
    """The account's now: wall time plus its offset (UTC, aware)."""
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(milliseconds=offset_ms(account))


def now_ms(account: str) -> int:
    return int(now(account).timestamp() * 1000)


def iso(t: datetime.datetime) -> str:
    """``2026-11-27T08:00:00.123Z``, as AWS writes event times."""
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def advance(account: str, ms: int) -> int:
    """Moves the account's clock forward (never back); returns the new offset."""
    if ms < 0:
        raise ValueError("the clock only moves forward")
    with LOCK:
        OFFSETS[account] = OFFSETS.get(account, 0) + ms
        return OFFSETS[account]
