"""One AWS account per test: isolation without resets.

moto picks the account of a request from its access key, and only knows the
keys IAM created; every other key lands in the default account, so tests
running side by side would share every resource and every clock. Test keys
here are ``FK<12-digit account><6-character caller tag>`` (20 characters,
the shape moto's signature parser accepts): the account is read from the
key, and the tag names the caller for the call recorder (one per function).
A real AWS key never has this shape, so nothing else is affected.
"""

from __future__ import annotations

import re

from moto.iam import models as iam_models

TEST_KEY = re.compile(r"^FK(\d{12})[A-Z0-9]{6}$")

_original = iam_models.get_account_id_from


def get_account_id_from(access_key: str) -> str:
    match = TEST_KEY.match(access_key)
    if match:
        return match.group(1)
    return _original(access_key)


def apply() -> list[str]:
    iam_models.get_account_id_from = get_account_id_from
    return ["accounts: test access keys FK<account><caller> select their own account"]
