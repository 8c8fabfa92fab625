"""Tests of the patch layer, through boto3 against the running patched server.

The server's URL comes from ``FLEETKEEPER_EMULATOR_URL`` (``make test`` starts
it); without it these tests fail loudly rather than skip. Each test builds its
own uniquely named resources: no global reset.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ.get("FLEETKEEPER_EMULATOR_URL")
if not URL:
    raise RuntimeError("FLEETKEEPER_EMULATOR_URL is not set: run these tests through `make test`")

REGION = "us-east-1"


def client(service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=URL,
        region_name=REGION,
        aws_access_key_id="testing",
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


@pytest.fixture(scope="module")
def ec2() -> Any:
    return client("ec2")


@pytest.fixture(scope="module")
def asg() -> Any:
    return client("autoscaling")


@pytest.fixture(scope="module")
def elbv2() -> Any:
    return client("elbv2")


@pytest.fixture(scope="module")
def ssm() -> Any:
    return client("ssm")


@pytest.fixture(scope="module")
def network(ec2: Any) -> dict[str, Any]:
    """A VPC with one subnet in each of three AZs."""
    cidr = f"10.{uuid.uuid4().int % 250}.0.0/16"
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.split(".")[1]
    subnets = {}
    for i, az in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"]):
        subnets[az] = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{base}.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
    lt = unique("lt")
    ec2.create_launch_template(LaunchTemplateName=lt, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
    return {"vpc": vpc, "subnets": subnets, "launch_template": lt}


def make_group(asg: Any, elbv2: Any, network: dict[str, Any], *, desired: int = 0, hooks: tuple[str, ...] = (), attach: bool = True, metadata: str | None = None) -> dict[str, Any]:
    name = unique("asg")
    tg = elbv2.create_target_group(Name=unique("tg")[:32], Protocol="HTTP", Port=80, VpcId=network["vpc"], TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": network["launch_template"]},
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(network["subnets"].values()),
        TargetGroupARNs=[tg] if attach else [],
    )
    for transition in hooks:
        kwargs = {"NotificationMetadata": metadata} if metadata else {}
        asg.put_lifecycle_hook(
            AutoScalingGroupName=name,
            LifecycleHookName=f"{name}-{transition}",
            LifecycleTransition=f"autoscaling:EC2_INSTANCE_{transition}",
            HeartbeatTimeout=300,
            DefaultResult="ABANDON",
            **kwargs,
        )
    if desired:
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=desired)
    return {"name": name, "tg": tg, "launch_hook": f"{name}-LAUNCHING", "terminate_hook": f"{name}-TERMINATING"}


def states(asg: Any, name: str) -> dict[str, str]:
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


def targets(elbv2: Any, tg: str) -> set[str]:
    """The targets still registered (a draining one is being removed: AWS
    drains it for the deregistration delay, see readiness.py)."""
    described = elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    return {t["Target"]["Id"] for t in described if t["TargetHealth"]["State"] != "draining"}


# ---------------------------------------------------------------------------
# Auto Scaling lifecycle simulation
# ---------------------------------------------------------------------------


def test_without_hooks_instances_enter_service_and_register(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=2)
    s = states(asg, g["name"])
    assert sorted(s.values()) == ["InService", "InService"]
    assert targets(elbv2, g["tg"]) == set(s)


def test_launch_hook_holds_instance_in_pending_wait_until_continue(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("LAUNCHING",))
    (iid, state), = states(asg, g["name"]).items()
    assert state == "Pending:Wait"
    assert targets(elbv2, g["tg"]) == set(), "attached groups register only on CONTINUE"
    # A describe must not launch more: Pending:Wait counts toward capacity.
    assert len(states(asg, g["name"])) == 1

    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert states(asg, g["name"]) == {iid: "InService"}
    assert targets(elbv2, g["tg"]) == {iid}
    _, actions = control("GET", "autoscaling/lifecycle-actions", group=g["name"])
    assert actions["pending"] == []
    assert [(h["Kind"], h["Result"], h["By"]) for h in actions["history"]] == [("complete", "CONTINUE", "instance_id")]


def test_lifecycle_event_is_recorded_with_token_and_metadata(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("LAUNCHING",), metadata='{"role": "web"}')
    status, body = control("GET", "autoscaling/lifecycle-events", group=g["name"])
    assert status == 200
    (event,) = body["events"]
    assert event["source"] == "aws.autoscaling"
    assert event["detail-type"] == "EC2 Instance-launch Lifecycle Action"
    detail = event["detail"]
    assert detail["LifecycleHookName"] == g["launch_hook"]
    assert detail["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert (detail["Origin"], detail["Destination"]) == ("EC2", "AutoScalingGroup")
    assert detail["NotificationMetadata"] == '{"role": "web"}'
    # Completing by token works too, and the history says so.
    asg.complete_lifecycle_action(
        AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], LifecycleActionToken=detail["LifecycleActionToken"], LifecycleActionResult="CONTINUE"
    )
    _, actions = control("GET", "autoscaling/lifecycle-actions", group=g["name"])
    assert actions["history"][0]["By"] == "token"


def test_completing_an_inactive_action_is_aws_validation_error(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("LAUNCHING",))
    (iid,) = states(asg, g["name"])
    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    with pytest.raises(ClientError) as err:
        asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {iid}"
    with pytest.raises(ClientError) as err:
        asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], LifecycleActionToken="00000000-0000-0000-0000-000000000000")
    assert err.value.response["Error"]["Message"] == "No active Lifecycle Action found with token 00000000-0000-0000-0000-000000000000"


def test_heartbeats_are_recorded(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("LAUNCHING",))
    (iid,) = states(asg, g["name"])
    for _ in range(2):
        asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid)
    _, actions = control("GET", "autoscaling/lifecycle-actions", group=g["name"])
    assert actions["pending"][0]["heartbeats"] == 2
    assert [h["Kind"] for h in actions["history"]] == ["heartbeat", "heartbeat"]


def test_abandon_on_launch_terminates_and_the_group_replaces(asg: Any, ec2: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("LAUNCHING",))
    (iid,) = states(asg, g["name"])
    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="ABANDON")
    s = states(asg, g["name"])
    assert iid not in s
    assert list(s.values()) == ["Pending:Wait"], "the replacement waits on the hook too"
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
    assert targets(elbv2, g["tg"]) == set()


def test_scale_in_passes_through_terminating_wait(asg: Any, ec2: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=2, hooks=("TERMINATING",))
    before = states(asg, g["name"])
    assert set(before.values()) == {"InService"}
    asg.set_desired_capacity(AutoScalingGroupName=g["name"], DesiredCapacity=1)
    after = states(asg, g["name"])
    leaving = [i for i, s in after.items() if s == "Terminating:Wait"]
    assert len(leaving) == 1 and len(after) == 2
    (gone,) = leaving
    assert targets(elbv2, g["tg"]) == set(before) - {gone}, "deregistered before the hook"
    _, body = control("GET", "autoscaling/lifecycle-events", group=g["name"])
    assert [(e["detail-type"], e["detail"]["Origin"], e["detail"]["Destination"]) for e in body["events"]] == [
        ("EC2 Instance-terminate Lifecycle Action", "AutoScalingGroup", "EC2")
    ]
    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["terminate_hook"], InstanceId=gone, LifecycleActionResult="CONTINUE")
    assert gone not in states(asg, g["name"])
    state = ec2.describe_instances(InstanceIds=[gone])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"


def test_terminate_in_group_waits_and_replaces_unless_decremented(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=1, hooks=("TERMINATING",))
    (iid,) = states(asg, g["name"])
    asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=False)
    s = states(asg, g["name"])
    assert s[iid] == "Terminating:Wait"
    assert sorted(v for k, v in s.items() if k != iid) == ["InService"], "a replacement launched"
    with pytest.raises(ClientError) as err:
        asg.terminate_instance_in_auto_scaling_group(InstanceId="i-00000000000000000", ShouldDecrementDesiredCapacity=True)
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_instances_spread_over_the_group_subnets(asg: Any, ec2: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, desired=3)
    ids = list(states(asg, g["name"]))
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    placed = {(i["SubnetId"], i["Placement"]["AvailabilityZone"]) for r in reservations for i in r["Instances"]}
    assert placed == {(s, az) for az, s in network["subnets"].items()}


def test_warm_pool_launch_and_promote(asg: Any, elbv2: Any, network: dict[str, Any]) -> None:
    g = make_group(asg, elbv2, network, hooks=("LAUNCHING",))
    status, body = control("POST", "autoscaling/warm-pool/launch", {"group": g["name"]})
    assert status == 200
    (iid,) = body["instance_ids"]

    def pool() -> dict[str, str]:
        # AWS lists pool instances through DescribeWarmPool, not with the group's.
        return {i["InstanceId"]: i["LifecycleState"] for i in asg.describe_warm_pool(AutoScalingGroupName=g["name"])["Instances"]}

    assert pool()[iid] == "Warmed:Pending:Wait"
    assert iid not in states(asg, g["name"])
    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert pool()[iid] == "Warmed:Stopped"
    assert targets(elbv2, g["tg"]) == set(), "the pool is not in service"

    status, body = control("POST", "autoscaling/warm-pool/promote", {"instance_id": iid})
    assert (status, body) == (200, {"lifecycle_state": "Pending:Wait"})
    _, events = control("GET", "autoscaling/lifecycle-events", group=g["name"])
    places = [(e["detail"]["Origin"], e["detail"]["Destination"]) for e in events["events"]]
    assert places == [("EC2", "WarmPool"), ("WarmPool", "AutoScalingGroup")]
    asg.complete_lifecycle_action(AutoScalingGroupName=g["name"], LifecycleHookName=g["launch_hook"], InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert states(asg, g["name"]) == {iid: "InService"}
    assert targets(elbv2, g["tg"]) == {iid}


def test_control_endpoints_refuse_bad_requests() -> None:
    assert control("POST", "autoscaling/warm-pool/promote", {})[0] == 400
    assert control("GET", "no/such/endpoint")[0] == 404
    status, body = control("POST", "autoscaling/warm-pool/promote", {"instance_id": "i-00000000000000000"})
    assert status == 400 and "not in an Auto Scaling group" in body["error"]


# ---------------------------------------------------------------------------
# SSM
# ---------------------------------------------------------------------------

DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "test document",
    "parameters": {
        "generation": {"type": "String", "allowedPattern": "^[0-9]{1,18}$"},
        "note": {"type": "String", "default": "x", "allowedPattern": "^[a-z]*$"},
    },
    "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}],
}


@pytest.fixture(scope="module")
def document(ssm: Any) -> str:
    name = unique("doc")
    ssm.create_document(Name=name, Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")
    return name


def until_listed() -> None:
    """Moves the default account's clock past the listing's lag (new commands
    are not found at once: fleetkeeper_moto.ssm.VISIBILITY_LAG)."""
    assert control("POST", "clock", {"account": "123456789012", "advance_ms": 2_000})[0] == 200


def launch(ec2: Any, network: dict[str, Any], count: int) -> list[str]:
    subnet = next(iter(network["subnets"].values()))
    res = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=subnet)
    return [i["InstanceId"] for i in res["Instances"]]


def test_send_command_goes_to_the_given_instances_only(ec2: Any, ssm: Any, network: dict[str, Any], document: str) -> None:
    a, b, _c = launch(ec2, network, 3)
    command = ssm.send_command(InstanceIds=[a, b], DocumentName=document, Parameters={"generation": ["1"]}, Comment="wave x")["Command"]
    assert sorted(command["InstanceIds"]) == sorted([a, b])
    assert command["TargetCount"] == 2
    assert command["Status"] == "InProgress"
    invocations = ssm.list_command_invocations(CommandId=command["CommandId"])["CommandInvocations"]
    assert sorted(i["InstanceId"] for i in invocations) == sorted([a, b])
    assert {i["Status"] for i in invocations} == {"InProgress"}
    assert {i["Comment"] for i in invocations} == {"wave x"}


def test_unmanaged_or_terminated_instances_are_invalid_instance_id(ec2: Any, ssm: Any, network: dict[str, Any], document: str) -> None:
    a, b = launch(ec2, network, 2)
    control("POST", "ssm/managed-instance", {"instance_id": b, "ping_status": None})
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[a, b], DocumentName=document, Parameters={"generation": ["1"]})
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    assert b in err.value.response["Error"]["Message"]
    ec2.terminate_instances(InstanceIds=[a])
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[a], DocumentName=document, Parameters={"generation": ["1"]})
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_send_command_enforces_document_patterns_and_limits(ec2: Any, ssm: Any, network: dict[str, Any], document: str) -> None:
    (a,) = launch(ec2, network, 1)
    cases = [
        ({"generation": ["1; reboot"]}, "InvalidParameters"),
        ({"generation": ["1"], "note": ["UPPER"]}, "InvalidParameters"),
        ({"note": ["ok"]}, "InvalidParameters"),
        ({"generation": ["1"], "extra": ["x"]}, "InvalidParameters"),
    ]
    for parameters, code in cases:
        with pytest.raises(ClientError) as err:
            ssm.send_command(InstanceIds=[a], DocumentName=document, Parameters=parameters)
        assert err.value.response["Error"]["Code"] == code, parameters
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[a], DocumentName=unique("missing"), Parameters={})
    assert err.value.response["Error"]["Code"] == "InvalidDocument"
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[f"i-{n:017x}" for n in range(51)], DocumentName=document, Parameters={"generation": ["1"]})
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_invocation_status_is_set_by_the_test_and_reflected_everywhere(ec2: Any, ssm: Any, network: dict[str, Any], document: str) -> None:
    a, b = launch(ec2, network, 2)
    command_id = ssm.send_command(InstanceIds=[a, b], DocumentName=document, Parameters={"generation": ["2"]})["Command"]["CommandId"]
    status, body = control("POST", "ssm/invocation-status", {"command_id": command_id, "instance_id": a, "status": "Success", "stdout": "synced"})
    assert (status, body) == (200, {"changed": 1})
    (cmd,) = ssm.list_commands(CommandId=command_id)["Commands"]
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("InProgress", 1, 0)
    until_listed()
    got = ssm.get_command_invocation(CommandId=command_id, InstanceId=a)
    assert (got["Status"], got["ResponseCode"], got["StandardOutputContent"]) == ("Success", 0, "synced")

    control("POST", "ssm/invocation-status", {"command_id": command_id, "instance_id": b, "status": "Failed", "response_code": 2})
    (cmd,) = ssm.list_commands(CommandId=command_id)["Commands"]
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("Failed", 2, 1)
    rows = ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"]
    by_instance = {r["InstanceId"]: r for r in rows}
    assert by_instance[b]["Status"] == "Failed"
    assert by_instance[b]["CommandPlugins"][0]["ResponseCode"] == 2
    assert control("POST", "ssm/invocation-status", {"command_id": command_id, "status": "Exploded"})[0] == 400


def test_a_plugins_listed_output_is_its_first_2500_characters(ec2: Any, ssm: Any, network: dict[str, Any], document: str) -> None:
    (a,) = launch(ec2, network, 1)
    command_id = ssm.send_command(InstanceIds=[a], DocumentName=document, Parameters={"generation": ["1"]})["Command"]["CommandId"]
    long = "fleetkeeper: refused: first line\n" + "x" * 5000
    control("POST", "ssm/invocation-status", {"command_id": command_id, "instance_id": a, "status": "Failed", "response_code": 65, "stdout": long})
    until_listed()
    (row,) = ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"]
    plugin = row["CommandPlugins"][0]
    assert (plugin["ResponseCode"], len(plugin["Output"])) == (65, 2500)
    assert plugin["Output"].startswith("fleetkeeper: refused: first line")
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=a)["StandardOutputContent"] == long


def test_list_commands_honours_filters_and_paging(ec2: Any, ssm: Any, network: dict[str, Any]) -> None:
    name = unique("doc")
    ssm.create_document(Name=name, Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")
    (a,) = launch(ec2, network, 1)
    ids = [ssm.send_command(InstanceIds=[a], DocumentName=name, Parameters={"generation": [str(n)]})["Command"]["CommandId"] for n in range(3)]
    control("POST", "ssm/invocation-status", {"command_id": ids[0], "status": "Success"})
    until_listed()
    by_doc = ssm.list_commands(Filters=[{"key": "DocumentName", "value": name}])["Commands"]
    assert sorted(c["CommandId"] for c in by_doc) == sorted(ids)
    running = ssm.list_commands(Filters=[{"key": "DocumentName", "value": name}, {"key": "ExecutionStage", "value": "Executing"}])["Commands"]
    assert sorted(c["CommandId"] for c in running) == sorted(ids[1:])
    done = ssm.list_commands(Filters=[{"key": "DocumentName", "value": name}, {"key": "Status", "value": "Success"}])["Commands"]
    assert [c["CommandId"] for c in done] == ids[:1]
    first = ssm.list_commands(Filters=[{"key": "DocumentName", "value": name}], MaxResults=2)
    assert len(first["Commands"]) == 2 and "NextToken" in first
    rest = ssm.list_commands(Filters=[{"key": "DocumentName", "value": name}], MaxResults=2, NextToken=first["NextToken"])
    assert len(rest["Commands"]) == 1 and "NextToken" not in rest


def test_describe_instance_information_reports_ping_status_and_agent(ec2: Any, ssm: Any, network: dict[str, Any]) -> None:
    a, b, c = launch(ec2, network, 3)
    control("POST", "ssm/managed-instance", {"instance_id": b, "ping_status": "ConnectionLost", "agent_version": "3.1.0.0"})
    control("POST", "ssm/managed-instance", {"instance_id": c, "ping_status": None})
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [a, b, c]}])["InstanceInformationList"]
    got = {i["InstanceId"]: (i["PingStatus"], i["AgentVersion"]) for i in info}
    assert got == {a: ("Online", "3.3.2746.0"), b: ("ConnectionLost", "3.1.0.0")}
    online = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": [a, b, c]}, {"key": "PingStatus", "valueSet": ["Online"]}]
    )["InstanceInformationList"]
    assert [i["InstanceId"] for i in online] == [a]
    # An instance whose agent lost its connection gets a Delayed invocation
    # ("the system will try to send the command again").
    name = unique("doc")
    ssm.create_document(Name=name, Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")
    command_id = ssm.send_command(InstanceIds=[b], DocumentName=name, Parameters={"generation": ["1"]})["Command"]["CommandId"]
    until_listed()
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=b)["Status"] == "Delayed"
    # Re-registering brings it back.
    control("POST", "ssm/managed-instance", {"instance_id": c, "ping_status": "Online"})
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [c]}])["InstanceInformationList"]
    assert [i["PingStatus"] for i in info] == ["Online"]


def test_describe_instance_information_pages(ec2: Any, ssm: Any, network: dict[str, Any]) -> None:
    ids = launch(ec2, network, 7)
    seen: list[str] = []
    kwargs: dict[str, Any] = {"Filters": [{"Key": "InstanceIds", "Values": ids}], "MaxResults": 5}
    while True:
        page = ssm.describe_instance_information(**kwargs)
        seen += [i["InstanceId"] for i in page["InstanceInformationList"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert sorted(seen) == sorted(ids)


# ---------------------------------------------------------------------------
# DynamoDB
# ---------------------------------------------------------------------------


def test_concurrent_conditional_updates_of_one_item_are_atomic() -> None:
    import threading

    dynamodb = client("dynamodb")
    table = unique("race")
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def bump(pk: str) -> None:
        client("dynamodb").update_item(
            TableName=table,
            Key={"pk": {"S": pk}},
            UpdateExpression="SET #s = if_not_exists(#s, :s) ADD #r :one",
            ConditionExpression="attribute_not_exists(#s) OR #s <= :s",
            ExpressionAttributeNames={"#s": "schema", "#r": "requested"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":s": {"N": "1"}},
        )

    for round_ in range(20):
        pk = f"item-{round_}"
        threads = [threading.Thread(target=bump, args=(pk,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        item = dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}})["Item"]
        assert item["requested"]["N"] == "16", f"round {round_} lost an update"


def raw_get(path: str) -> Callable[[], str]:
    """A reader of the emulator's raw answer to an unsigned GET of ``path``
    (what the Rust SDK parses, before boto3's leniency)."""

    def read() -> str:
        with urllib.request.urlopen(f"{URL}{path}") as response:
            return response.read().decode()

    return read


def test_get_bucket_versioning_answers_a_versioning_configuration_as_aws_does() -> None:
    # The AWS SDK for Rust parses the root element strictly: AWS answers
    # <VersioningConfiguration/>, with no Status for a never-versioned bucket.
    s3 = client("s3")
    bucket = unique("fk-versioning")
    s3.create_bucket(Bucket=bucket)

    raw = raw_get(f"/{bucket}?versioning")

    never = raw()
    assert "<VersioningConfiguration" in never and "<Status>" not in never, never
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert "<Status>Enabled</Status>" in raw()
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_get_bucket_notification_configuration_answers_eventbridge_as_aws_does() -> None:
    # AWS answers <EventBridgeConfiguration/> once EventBridge notifications
    # are on; moto 5.2.5 stores it and leaves it out of the answer.
    s3 = client("s3")
    bucket = unique("fk-notify")
    s3.create_bucket(Bucket=bucket)

    raw = raw_get(f"/{bucket}?notification")

    # Nothing configured: an empty NotificationConfiguration (moto answers an
    # empty GetBucketNotificationResponse, which the Rust SDK refuses).
    assert "<NotificationConfiguration" in raw() and "EventBridge" not in raw(), raw()
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    assert s3.get_bucket_notification_configuration(Bucket=bucket).get("EventBridgeConfiguration") == {}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket=bucket)
    assert "<NotificationConfiguration" in raw(), raw()
