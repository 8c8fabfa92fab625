"""The ground every other test stands on: one account per test (by access
key), one clock per account, and the call recorder. Through boto3 against the
running patched server (``make test`` starts it)."""

from __future__ import annotations

import datetime
import json
import os
import random
import urllib.request
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config

URL = os.environ.get("FLEETKEEPER_EMULATOR_URL")
if not URL:
    raise RuntimeError("FLEETKEEPER_EMULATOR_URL is not set: run these tests through `make test`")


def new_account() -> str:
    return str(random.randrange(100_000_000_000, 999_999_999_999))


def client(service: str, account: str, tag: str = "TESTER") -> Any:
    return boto3.client(
        service,
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=f"FK{account}{tag}",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def control(method: str, path: str, body: dict[str, Any] | None = None, **query: str) -> tuple[int, Any]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    req = urllib.request.Request(
        f"{URL}/moto-api/fleetkeeper/{path}" + (f"?{qs}" if qs else ""),
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_each_test_key_is_an_account_of_its_own() -> None:
    a, b = new_account(), new_account()
    name = f"q-{uuid.uuid4().hex[:8]}"
    client("sqs", a).create_queue(QueueName=name)
    assert any(name in u for u in client("sqs", a).list_queues().get("QueueUrls", []))
    assert not any(name in u for u in client("sqs", b).list_queues().get("QueueUrls", []))
    arn = client("sts", a).get_caller_identity()["Account"]
    assert arn == a


def test_the_clock_moves_per_account_and_only_forward() -> None:
    a, b = new_account(), new_account()
    status, before = control("GET", "clock", account=a)
    assert status == 200 and before["offset_ms"] == 0
    status, moved = control("POST", "clock", {"account": a, "advance_ms": 3_600_000})
    assert status == 200 and moved["offset_ms"] == 3_600_000
    assert moved["now_ms"] - before["now_ms"] >= 3_600_000
    assert control("GET", "clock", account=b)[1]["offset_ms"] == 0, "another account's clock did not move"
    status, refused = control("POST", "clock", {"account": a, "advance_ms": -1})
    assert status == 400 and "forward" in refused["error"]


def test_patch_layer_timestamps_follow_the_accounts_clock() -> None:
    a = new_account()
    ec2, asg = client("ec2", a), client("autoscaling", a)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    ec2.create_launch_template(LaunchTemplateName="tmpl", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName="g", LaunchTemplate={"LaunchTemplateName": "tmpl"}, MinSize=0, MaxSize=2, VPCZoneIdentifier=subnet)
    asg.put_lifecycle_hook(AutoScalingGroupName="g", LifecycleHookName="h", LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=300, DefaultResult="ABANDON")
    control("POST", "clock", {"account": a, "advance_ms": 2 * 86_400_000})
    asg.set_desired_capacity(AutoScalingGroupName="g", DesiredCapacity=1)
    events = control("GET", "autoscaling/lifecycle-events", account=a, group="g")[1]["events"]
    sent = datetime.datetime.fromisoformat(events[0]["time"].replace("Z", "+00:00"))
    ahead = sent - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=1, hours=23) < ahead < datetime.timedelta(days=2, hours=1), ahead


def test_every_call_is_recorded_per_access_key_and_operation() -> None:
    a = new_account()
    tag = "CALLER"
    ec2, ddb, ssm, s3 = (client(s, a, tag) for s in ("ec2", "dynamodb", "ssm", "s3"))
    ec2.describe_vpcs()
    ec2.describe_vpcs()
    ddb.list_tables()
    ssm.describe_instance_information()
    s3.create_bucket(Bucket=f"b-{uuid.uuid4().hex[:10]}")
    with pytest.raises(Exception):
        ssm.get_document(Name="missing")
    client("ec2", a, "OTHERS").describe_vpcs()
    rows = control("GET", "calls", key=f"FK{a}{tag}")[1]["calls"]
    counts = {(r["service"], r["operation"], r["status"][0]): r["count"] for r in rows}
    assert counts[("ec2", "DescribeVpcs", "2")] == 2, counts
    assert counts[("dynamodb", "ListTables", "2")] == 1
    assert counts[("ssm", "DescribeInstanceInformation", "2")] == 1
    assert counts[("s3", "CreateBucket", "2")] == 1
    assert counts[("ssm", "GetDocument", "4")] == 1, "errors are recorded with their status"
    assert sum(counts.values()) == 6, "the other caller's call is not mine"
    assert control("POST", "calls/forget", {"key": f"FK{a}{tag}"})[1]["forgotten"] == len(rows)
    assert control("GET", "calls", key=f"FK{a}{tag}")[1]["calls"] == []
