"""Tests of the warm-pool and lifecycle-hook-timeout simulation
(fleetkeeper_moto.autoscaling), through boto3 against the running patched
server.

The server's URL comes from ``FLEETKEEPER_EMULATOR_URL`` (``make test`` starts
it); without it these tests fail loudly rather than skip. Every test runs in
an account of its own (test access keys ``FK<account><caller>``, see
fleetkeeper_moto.accounts): tests that move the clock move only their own
account's, and nothing needs a reset.
"""

from __future__ import annotations

import datetime
import json
import os
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ.get("FLEETKEEPER_EMULATOR_URL")
if not URL:
    raise RuntimeError("FLEETKEEPER_EMULATOR_URL is not set: run these tests through `make test`")

REGION = "us-east-1"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def new_account() -> str:
    return f"{uuid.uuid4().int % 10**12:012d}"


def client(service: str, account: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=URL,
        region_name=REGION,
        aws_access_key_id=f"FK{account}WARMPL",
        aws_secret_access_key="testing",
        # Unimplemented operations answer 500, which SDKs retry: one attempt.
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


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def parse(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))


@dataclass
class World:
    """One account with a VPC (one subnet in each of three AZs) and a launch template."""

    account: str
    asg: Any
    ec2: Any
    elbv2: Any
    vpc: str
    subnets: list[str]
    launch_template: str

    def advance(self, seconds: float) -> None:
        status, _ = control("POST", "clock", {"account": self.account, "advance_ms": int(seconds * 1000)})
        assert status == 200

    def control(self, method: str, path: str, body: dict[str, Any] | None = None, **query: str) -> tuple[int, Any]:
        if body is not None:
            body = {"account": self.account, **body}
        return control(method, path, body, account=self.account, **query)


@pytest.fixture
def w() -> World:
    account = new_account()
    ec2 = client("ec2", account)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"])
    ]
    lt = unique("lt")
    ec2.create_launch_template(LaunchTemplateName=lt, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
    return World(account, client("autoscaling", account), ec2, client("elbv2", account), vpc, subnets, lt)


def make_group(
    w: World,
    *,
    desired: int = 0,
    hooks: tuple[str, ...] = (),
    heartbeat: int = 300,
    default_result: str = "ABANDON",
    warm_pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    name = unique("asg")
    tg = w.elbv2.create_target_group(Name=unique("tg")[:32], Protocol="HTTP", Port=80, VpcId=w.vpc, TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    w.asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": w.launch_template},
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(w.subnets),
        TargetGroupARNs=[tg],
    )
    for transition in hooks:
        w.asg.put_lifecycle_hook(
            AutoScalingGroupName=name,
            LifecycleHookName=f"{name}-{transition}",
            LifecycleTransition=f"autoscaling:EC2_INSTANCE_{transition}",
            HeartbeatTimeout=heartbeat,
            DefaultResult=default_result,
        )
    if warm_pool is not None:
        w.asg.put_warm_pool(AutoScalingGroupName=name, **warm_pool)
    if desired:
        w.asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=desired)
    return {"name": name, "tg": tg, "launch_hook": f"{name}-LAUNCHING", "terminate_hook": f"{name}-TERMINATING"}


REUSE = {"InstanceReusePolicy": {"ReuseOnScaleIn": True}}


def describe_group(w: World, name: str) -> dict[str, Any]:
    return w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def group_states(w: World, name: str) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in describe_group(w, name)["Instances"]}


def pool_states(w: World, name: str) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in w.asg.describe_warm_pool(AutoScalingGroupName=name)["Instances"]}


def asi_state(w: World, instance_id: str) -> str | None:
    rows = w.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    return rows[0]["LifecycleState"] if rows else None


def ec2_state(w: World, instance_id: str) -> str:
    return w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def targets(w: World, tg: str) -> set[str]:
    """The targets still registered (a draining one is being removed: AWS
    drains it for the deregistration delay, see readiness.py)."""
    described = w.elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    return {t["Target"]["Id"] for t in described if t["TargetHealth"]["State"] != "draining"}


def events(w: World, name: str) -> list[dict[str, Any]]:
    status, body = w.control("GET", "autoscaling/lifecycle-events", group=name)
    assert status == 200
    return body["events"]


def actions(w: World, name: str) -> dict[str, Any]:
    status, body = w.control("GET", "autoscaling/lifecycle-actions", group=name)
    assert status == 200
    return body


def places(evs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(e["detail-type"], e["detail"]["LifecycleTransition"], e["detail"]["Origin"], e["detail"]["Destination"]) for e in evs]


# ---------------------------------------------------------------------------
# Warm pool
# ---------------------------------------------------------------------------


def test_scale_in_with_reuse_returns_the_instance_through_warmed_pending_wait(w: World) -> None:
    g = make_group(w, desired=2, hooks=("TERMINATING",), warm_pool=REUSE)
    before = group_states(w, g["name"])
    assert sorted(before.values()) == ["InService", "InService"]
    assert targets(w, g["tg"]) == set(before)

    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=1)
    after = group_states(w, g["name"])
    assert list(after.values()) == ["InService"], "the returning instance is not in the group's Instances"
    (back,) = set(before) - set(after)
    assert pool_states(w, g["name"]) == {back: "Warmed:Pending:Wait"}
    assert asi_state(w, back) == "Warmed:Pending:Wait", "DescribeAutoScalingInstances lists pool instances"
    assert targets(w, g["tg"]) == set(after), "deregistered before the hook"
    (event,) = events(w, g["name"])
    assert places([event]) == [("EC2 Instance-terminate Lifecycle Action", TERMINATING, "AutoScalingGroup", "WarmPool")]
    assert event["detail"]["EC2InstanceId"] == back
    # The pool does not count toward the desired capacity: nothing relaunches.
    assert group_states(w, g["name"]) == after

    w.asg.complete_lifecycle_action(
        AutoScalingGroupName=g["name"], LifecycleHookName=g["terminate_hook"], LifecycleActionToken=event["detail"]["LifecycleActionToken"], LifecycleActionResult="CONTINUE"
    )
    assert pool_states(w, g["name"]) == {back: "Warmed:Stopped"}
    assert back not in group_states(w, g["name"])
    assert ec2_state(w, back) == "stopped"
    assert asi_state(w, back) == "Warmed:Stopped"
    assert targets(w, g["tg"]) == set(after)
    group = describe_group(w, g["name"])
    assert (group["DesiredCapacity"], group["WarmPoolSize"]) == (1, 1)
    assert group["WarmPoolConfiguration"]["InstanceReusePolicy"] == {"ReuseOnScaleIn": True}


def test_abandoning_a_return_to_the_pool_terminates_the_instance(w: World) -> None:
    g = make_group(w, desired=1, hooks=("TERMINATING",), warm_pool=REUSE)
    (iid,) = group_states(w, g["name"])
    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=0)
    assert pool_states(w, g["name"]) == {iid: "Warmed:Pending:Wait"}
    w.asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["terminate_hook"], InstanceId=iid, LifecycleActionResult="ABANDON")
    assert pool_states(w, g["name"]) == {}
    assert group_states(w, g["name"]) == {}
    assert ec2_state(w, iid) == "terminated"
    assert asi_state(w, iid) is None


def test_without_reuse_a_scale_in_terminates(w: World) -> None:
    g = make_group(w, desired=1, hooks=("TERMINATING",), warm_pool={})
    (iid,) = group_states(w, g["name"])
    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=0)
    assert group_states(w, g["name"]) == {iid: "Terminating:Wait"}
    assert pool_states(w, g["name"]) == {}
    assert places(events(w, g["name"])) == [("EC2 Instance-terminate Lifecycle Action", TERMINATING, "AutoScalingGroup", "EC2")]


def test_without_hooks_the_instance_rests_in_the_pool_state_and_a_scale_out_takes_it_back(w: World) -> None:
    g = make_group(w, desired=1, warm_pool={**REUSE, "PoolState": "Running"})
    (iid,) = group_states(w, g["name"])
    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=0)
    assert group_states(w, g["name"]) == {}
    assert pool_states(w, g["name"]) == {iid: "Warmed:Running"}
    assert ec2_state(w, iid) == "running"
    assert targets(w, g["tg"]) == set()

    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=1)
    assert group_states(w, g["name"]) == {iid: "InService"}, "drawn from the pool, not launched"
    assert pool_states(w, g["name"]) == {}
    assert targets(w, g["tg"]) == {iid}


def test_terminate_in_group_still_terminates_with_reuse(w: World) -> None:
    g = make_group(w, desired=1, hooks=("TERMINATING",), warm_pool=REUSE)
    (iid,) = group_states(w, g["name"])
    w.asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=True)
    assert group_states(w, g["name"]) == {iid: "Terminating:Wait"}
    assert pool_states(w, g["name"]) == {}


def test_a_scale_out_from_the_pool_waits_on_the_launch_hook_with_origin_warm_pool(w: World) -> None:
    g = make_group(w, hooks=("LAUNCHING",))
    status, body = w.control("POST", "autoscaling/warm-pool/launch", {"group": g["name"]})
    assert status == 200
    (iid,) = body["instance_ids"]
    assert pool_states(w, g["name"]) == {iid: "Warmed:Pending:Wait"}
    assert group_states(w, g["name"]) == {}, "pool instances are not the group's Instances"
    w.asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert pool_states(w, g["name"]) == {iid: "Warmed:Stopped"}

    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=1)
    assert group_states(w, g["name"]) == {iid: "Pending:Wait"}
    assert ec2_state(w, iid) == "running"
    assert [(o, d) for _, _, o, d in places(events(w, g["name"]))] == [("EC2", "WarmPool"), ("WarmPool", "AutoScalingGroup")]


def test_a_pool_instance_being_terminated_waits_in_warmed_terminating_wait(w: World) -> None:
    g = make_group(w, hooks=("TERMINATING",))
    _, body = w.control("POST", "autoscaling/warm-pool/launch", {"group": g["name"]})
    (iid,) = body["instance_ids"]
    assert pool_states(w, g["name"]) == {iid: "Warmed:Stopped"}
    # API TerminateInstanceInAutoScalingGroup: "This operation cannot be
    # called on instances in a warm pool."
    with pytest.raises(ClientError) as err:
        w.asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=False)
    assert err.value.response["Error"]["Code"] == "ValidationError"

    status, body = w.control("POST", "autoscaling/warm-pool/terminate", {"instance_id": iid})
    assert (status, body) == (200, {"lifecycle_state": "Warmed:Terminating:Wait"})
    assert pool_states(w, g["name"]) == {iid: "Warmed:Terminating:Wait"}
    assert places(events(w, g["name"])) == [("EC2 Instance-terminate Lifecycle Action", TERMINATING, "WarmPool", "EC2")]
    assert w.control("POST", "autoscaling/warm-pool/terminate", {"instance_id": iid})[0] == 400, "already terminating"

    w.asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["terminate_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert pool_states(w, g["name"]) == {}
    assert ec2_state(w, iid) == "terminated"


def test_a_pool_instance_terminated_without_hooks_goes_at_once(w: World) -> None:
    g = make_group(w)
    _, body = w.control("POST", "autoscaling/warm-pool/launch", {"group": g["name"]})
    (iid,) = body["instance_ids"]
    assert w.control("POST", "autoscaling/warm-pool/terminate", {"instance_id": iid}) == (200, {"lifecycle_state": "Warmed:Terminated"})
    assert pool_states(w, g["name"]) == {}
    assert ec2_state(w, iid) == "terminated"


# ---------------------------------------------------------------------------
# Lifecycle hook timeouts
# ---------------------------------------------------------------------------


def test_describe_lifecycle_hooks_reports_the_global_timeout(w: World) -> None:
    name = make_group(w)["name"]
    cases = {"hb30": (30, 3_000), "hb300": (300, 30_000), "hb1728": (1728, 172_800), "hb7200": (7200, 172_800), "default": (None, 172_800)}
    for hook, (heartbeat, _) in cases.items():
        kwargs = {} if heartbeat is None else {"HeartbeatTimeout": heartbeat}
        w.asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName=hook, LifecycleTransition=LAUNCHING, **kwargs)
    got = {h["LifecycleHookName"]: (h["HeartbeatTimeout"], h["GlobalTimeout"]) for h in w.asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]}
    assert got == {hook: (heartbeat or 3600, overall) for hook, (heartbeat, overall) in cases.items()}


def test_the_heartbeat_timeout_abandons_a_launch_and_its_token_goes_stale(w: World) -> None:
    g = make_group(w, desired=1, hooks=("LAUNCHING",), heartbeat=300, default_result="ABANDON")
    (iid,) = group_states(w, g["name"])
    (event,) = events(w, g["name"])
    token = event["detail"]["LifecycleActionToken"]
    (pending,) = actions(w, g["name"])["pending"]
    deadline = pending["heartbeat_deadline"]

    w.advance(299)
    assert group_states(w, g["name"]) == {iid: "Pending:Wait"}
    w.advance(2)
    # A read of the control endpoints applies what is due, like any request.
    body = actions(w, g["name"])
    (timeout,) = [h for h in body["history"] if h["Kind"] == "timeout"]
    assert (timeout["InstanceId"], timeout["Deadline"], timeout["Result"], timeout["Time"]) == (iid, "heartbeat", "ABANDON", deadline)
    (replacement,) = body["pending"]
    assert replacement["instance_id"] != iid
    assert replacement["started_at"] == deadline, "the group replaced it when the deadline passed"
    assert group_states(w, g["name"]) == {replacement["instance_id"]: "Pending:Wait"}
    assert ec2_state(w, iid) == "terminated"

    with pytest.raises(ClientError) as err:
        w.asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], LifecycleActionToken=token, LifecycleActionResult="CONTINUE")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with token {token}"
    with pytest.raises(ClientError) as err:
        w.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], LifecycleActionToken=token)
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with token {token}"


def test_the_heartbeat_timeout_with_continue_puts_the_instance_in_service(w: World) -> None:
    g = make_group(w, desired=1, hooks=("LAUNCHING",), heartbeat=300, default_result="CONTINUE")
    (iid,) = group_states(w, g["name"])
    w.advance(301)
    assert group_states(w, g["name"]) == {iid: "InService"}
    assert targets(w, g["tg"]) == {iid}
    history = actions(w, g["name"])["history"]
    assert [(h["Kind"], h["Deadline"], h["Result"]) for h in history] == [("timeout", "heartbeat", "CONTINUE")]


def test_a_terminate_hook_timeout_with_continue_returns_the_instance_to_the_pool(w: World) -> None:
    g = make_group(w, desired=1, hooks=("TERMINATING",), heartbeat=300, default_result="CONTINUE", warm_pool=REUSE)
    (iid,) = group_states(w, g["name"])
    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=0)
    assert pool_states(w, g["name"]) == {iid: "Warmed:Pending:Wait"}
    w.advance(301)
    assert pool_states(w, g["name"]) == {iid: "Warmed:Stopped"}
    assert ec2_state(w, iid) == "stopped"


def test_a_terminate_hook_timeout_with_abandon_still_terminates(w: World) -> None:
    g = make_group(w, desired=1, hooks=("TERMINATING",), heartbeat=300, default_result="ABANDON")
    (iid,) = group_states(w, g["name"])
    w.asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=0)
    w.advance(301)
    assert group_states(w, g["name"]) == {}
    assert ec2_state(w, iid) == "terminated"


def test_a_heartbeat_moves_the_heartbeat_deadline_only(w: World) -> None:
    g = make_group(w, desired=1, hooks=("LAUNCHING",), heartbeat=300, default_result="ABANDON")
    (iid,) = group_states(w, g["name"])
    (pending,) = actions(w, g["name"])["pending"]
    started = parse(pending["started_at"])
    assert (pending["heartbeat_timeout"], pending["global_timeout"], pending["default_result"]) == (300, 30_000, "ABANDON")
    assert parse(pending["heartbeat_deadline"]) - started == datetime.timedelta(seconds=300)
    assert parse(pending["global_deadline"]) - started == datetime.timedelta(seconds=30_000)

    w.advance(200)
    w.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid)
    (pending,) = actions(w, g["name"])["pending"]
    moved = parse(pending["heartbeat_deadline"]) - started
    assert datetime.timedelta(seconds=500) <= moved < datetime.timedelta(seconds=510), moved
    assert parse(pending["global_deadline"]) - started == datetime.timedelta(seconds=30_000)

    w.advance(200)  # past the first deadline, not the moved one
    assert group_states(w, g["name"]) == {iid: "Pending:Wait"}
    w.advance(110)
    assert iid not in group_states(w, g["name"])
    assert [h["Kind"] for h in actions(w, g["name"])["history"]] == ["heartbeat", "timeout"]


def test_the_global_timeout_caps_heartbeats(w: World) -> None:
    # HeartbeatTimeout 30 s: the global timeout is 100 x 30 = 3000 s.
    g = make_group(w, desired=1, hooks=("LAUNCHING",), heartbeat=30, default_result="ABANDON")
    (iid,) = group_states(w, g["name"])
    elapsed = 0
    while elapsed < 2975:  # the last heartbeat moves its deadline past 3000 s
        w.advance(25)
        elapsed += 25
        w.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid)
    assert group_states(w, g["name"]) == {iid: "Pending:Wait"}
    w.advance(60)
    with pytest.raises(ClientError) as err:
        w.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid)
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {iid}"
    # The group replaces the ABANDONed instance; only its own action's timeout counts here.
    (timeout,) = [h for h in actions(w, g["name"])["history"] if h["Kind"] == "timeout" and h["InstanceId"] == iid]
    assert (timeout["InstanceId"], timeout["Deadline"], timeout["Result"]) == (iid, "global", "ABANDON")
    assert iid not in group_states(w, g["name"])
