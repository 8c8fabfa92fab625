"""SQS message timers on the test clock (fleetkeeper_moto/sqs.py): a delayed
message arrives when the account's clock has moved past its delay, never
before; a received message returns after its visibility timeout."""

from __future__ import annotations

import json
import os
import random
import urllib.request
from typing import Any

import boto3
from botocore.config import Config

URL = os.environ.get("FLEETKEEPER_EMULATOR_URL")
if not URL:
    raise RuntimeError("FLEETKEEPER_EMULATOR_URL is not set: run these tests through `make test`")


def new_account() -> str:
    return str(random.randrange(10**11, 10**12))


def sqs(account: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=f"FK{account}SQSCLK",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def advance(account: str, seconds: int) -> None:
    req = urllib.request.Request(
        f"{URL}/moto-api/fleetkeeper/clock",
        data=json.dumps({"account": account, "advance_ms": seconds * 1000}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200


def bodies(client: Any, url: str, visibility: int = 30, delete: bool = True) -> list[str]:
    """Receives what is visible (deleting it, as a consumer that succeeded)."""
    out = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility)
    messages = out.get("Messages", [])
    for m in messages if delete else []:
        client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return [m["Body"] for m in messages]


def test_a_delayed_message_arrives_when_the_test_clock_passes_its_delay() -> None:
    account = new_account()
    client = sqs(account)
    url = client.create_queue(QueueName="retrigger")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=30)
    client.send_message(QueueUrl=url, MessageBody="now")
    assert bodies(client, url) == ["now"]
    advance(account, 20)
    assert bodies(client, url) == [], "20 s of 30: still delayed"
    advance(account, 11)
    assert bodies(client, url) == ["later"]


def test_a_received_message_returns_after_its_visibility_timeout_on_the_test_clock() -> None:
    account = new_account()
    client = sqs(account)
    url = client.create_queue(QueueName="q")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="m")
    assert bodies(client, url, visibility=60, delete=False) == ["m"]
    advance(account, 50)
    assert bodies(client, url) == [], "still invisible"
    advance(account, 11)
    assert bodies(client, url) == ["m"]


def test_another_account_s_clock_moves_nothing() -> None:
    a, b = new_account(), new_account()
    client = sqs(a)
    url = client.create_queue(QueueName="q")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=30)
    advance(b, 60)
    assert bodies(client, url) == []
