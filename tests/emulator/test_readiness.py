"""Readiness timelines (fleetkeeper_moto/readiness.py): EC2 pending -> running,
SSM agent registration, EC2's not-found window after launch, EFS mount
targets creating -> available, ELB targets initial -> healthy and draining ->
gone, DeregisterTargets of an unregistered target. Each test in an account
of its own (its settings and its clock are private to it); through boto3
against the running patched server (``make test`` starts it).

The test clock is wall time plus the account's offset, so wall time spent by
a slow run only moves things later: every "not yet" is checked well before
its deadline (30 s or more), every "now" at or after it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from test_ground import client, control, new_account

AMI = "ami-12c6146b"
DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "test document",
    "parameters": {"generation": {"type": "String", "allowedPattern": "^[0-9]{1,18}$"}},
    "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}],
}


class Account:
    """A fresh account with a VPC and subnets in us-east-1a and us-east-1b."""

    def __init__(self) -> None:
        self.id = new_account()
        self.ec2 = client("ec2", self.id)
        self.elbv2 = client("elbv2", self.id)
        vpc = self.ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
        self.vpc = vpc
        self.subnets = {
            az: self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.2.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
            for i, az in enumerate(["us-east-1a", "us-east-1b"])
        }
        self.subnet = self.subnets["us-east-1a"]

    def ready(self, **delays: float) -> dict[str, Any]:
        status, body = control("POST", "readiness", {"account": self.id, **delays})
        assert status == 200, body
        return body

    def advance(self, seconds: float) -> None:
        status, _ = control("POST", "clock", {"account": self.id, "advance_ms": int(seconds * 1000)})
        assert status == 200

    def launch(self, count: int = 1) -> list[str]:
        res = self.ec2.run_instances(ImageId=AMI, MinCount=count, MaxCount=count, SubnetId=self.subnet)
        return [i["InstanceId"] for i in res["Instances"]]

    def state(self, instance_id: str) -> tuple[str, int]:
        (r,) = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        s = r["Instances"][0]["State"]
        return s["Name"], s["Code"]

    def target_group(self, delay: int | None = None) -> str:
        arn = self.elbv2.create_target_group(Name=f"tg-{new_account()}", Protocol="HTTP", Port=80, VpcId=self.vpc, TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        if delay is not None:
            self.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
        return arn

    def health(self, tg: str, *ids: str) -> dict[str, tuple[str, str | None]]:
        """id -> (State, Reason): every target of the group, or those asked for."""
        kwargs: dict[str, Any] = {"Targets": [{"Id": i} for i in ids]} if ids else {}
        rows = self.elbv2.describe_target_health(TargetGroupArn=tg, **kwargs)["TargetHealthDescriptions"]
        return {r["Target"]["Id"]: (r["TargetHealth"]["State"], r["TargetHealth"].get("Reason")) for r in rows}

    def group(self, tg: str | None) -> str:
        """An Auto Scaling group (no hooks) of this account, empty."""
        self.ec2.create_launch_template(LaunchTemplateName="web-lt", LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"})
        asg = client("autoscaling", self.id)
        asg.create_auto_scaling_group(
            AutoScalingGroupName="web",
            LaunchTemplate={"LaunchTemplateName": "web-lt"},
            MinSize=0,
            MaxSize=4,
            DesiredCapacity=0,
            VPCZoneIdentifier=self.subnet,
            TargetGroupARNs=[tg] if tg else [],
        )
        return "web"

    def scale(self, group: str, desired: int) -> list[str]:
        asg = client("autoscaling", self.id)
        asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=desired)
        return [i["InstanceId"] for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]]


@pytest.fixture
def acct() -> Account:
    return Account()


def error_code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return err.value.response["Error"]["Code"]


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def test_settings_default_to_zero_and_change_only_what_is_given(acct: Account) -> None:
    zeros = {"pending_s": 0, "agent_s": 0, "mount_target_s": 0, "healthy_s": 0, "not_found_s": 0}
    status, body = control("GET", "readiness", account=acct.id)
    assert status == 200 and body == {"account": acct.id, "region": "us-east-1", **zeros}
    assert acct.ready(pending_s=30, healthy_s=2.5) == {"account": acct.id, "region": "us-east-1", **zeros, "pending_s": 30, "healthy_s": 2.5}
    assert acct.ready(agent_s=10)["pending_s"] == 30, "fields not given keep their value"
    assert control("GET", "readiness", account=acct.id, region="eu-west-1")[1]["pending_s"] == 0, "per region"
    assert control("GET", "readiness", account=new_account())[1]["pending_s"] == 0, "per account"
    for bad in ({"pending_s": -1}, {"pending_s": "5"}, {"pending_s": True}, {"bogus_s": 1}):
        status, body = control("POST", "readiness", {"account": acct.id, **bad})
        assert status == 400, (bad, body)
    assert control("GET", "readiness", account=acct.id)[1]["pending_s"] == 30


def test_with_the_defaults_everything_is_ready_at_once(acct: Account) -> None:
    """All 0: moto's behaviour, which the other tests rely on."""
    (iid,) = acct.launch()
    assert acct.state(iid) == ("running", 16)
    ssm = client("ssm", acct.id)
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"]
    assert [i["PingStatus"] for i in info] == ["Online"]
    tg = acct.target_group()
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    assert acct.health(tg) == {iid: ("healthy", None)}
    efs = client("efs", acct.id)
    fs = efs.create_file_system(CreationToken="fs")["FileSystemId"]
    assert efs.create_mount_target(FileSystemId=fs, SubnetId=acct.subnet)["LifeCycleState"] == "available"


# ---------------------------------------------------------------------------
# EC2 pending -> running
# ---------------------------------------------------------------------------


def test_a_launched_instance_is_pending_for_pending_s_then_running(acct: Account) -> None:
    acct.ready(pending_s=60)
    res = acct.ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, SubnetId=acct.subnet)
    assert {i["State"]["Name"] for i in res["Instances"]} == {"pending"}, "RunInstances answers pending"
    a, b = (i["InstanceId"] for i in res["Instances"])
    assert acct.state(a) == ("pending", 0)
    pending = acct.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}])["Reservations"]
    assert {i["InstanceId"] for r in pending for i in r["Instances"]} == {a, b}
    assert acct.ec2.describe_instance_status(InstanceIds=[a])["InstanceStatuses"] == [], "only running instances by default"
    (status,) = acct.ec2.describe_instance_status(InstanceIds=[a], IncludeAllInstances=True)["InstanceStatuses"]
    assert status["InstanceState"] == {"Code": 0, "Name": "pending"}

    acct.ec2.terminate_instances(InstanceIds=[b])
    acct.advance(30)
    assert acct.state(a) == ("pending", 0)
    acct.advance(30)
    assert acct.state(a) == ("running", 16)
    assert acct.state(b)[0] == "terminated", "terminating a pending instance still works"
    (status,) = acct.ec2.describe_instance_status(InstanceIds=[a])["InstanceStatuses"]
    assert status["InstanceState"] == {"Code": 16, "Name": "running"}


def test_a_started_instance_passes_through_pending_again(acct: Account) -> None:
    (iid,) = acct.launch()
    acct.ready(pending_s=60)
    acct.ec2.stop_instances(InstanceIds=[iid])
    assert acct.state(iid)[0] == "stopped"
    acct.ec2.start_instances(InstanceIds=[iid])
    assert acct.state(iid) == ("pending", 0)
    acct.advance(60)
    assert acct.state(iid) == ("running", 16)


def test_instances_the_group_launches_are_pending_too(acct: Account) -> None:
    acct.ready(pending_s=60)
    group = acct.group(None)
    (iid,) = acct.scale(group, 1)
    assert acct.state(iid) == ("pending", 0)
    acct.advance(60)
    assert acct.state(iid) == ("running", 16)


# ---------------------------------------------------------------------------
# SSM agent registration
# ---------------------------------------------------------------------------


def test_the_agent_registers_agent_s_after_the_instance_runs(acct: Account) -> None:
    acct.ready(pending_s=60, agent_s=120)
    ssm = client("ssm", acct.id)
    ssm.create_document(Name="doc", Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")
    a, b = acct.launch(2)

    def listed() -> dict[str, str]:
        info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [a, b]}])["InstanceInformationList"]
        return {i["InstanceId"]: i["PingStatus"] for i in info}

    def send() -> str:
        return ssm.send_command(InstanceIds=[a], DocumentName="doc", Parameters={"generation": ["1"]})["Command"]["CommandId"]

    assert listed() == {}
    with pytest.raises(ClientError) as err:
        send()
    assert error_code(err) == "InvalidInstanceId"

    acct.advance(60)
    assert acct.state(a)[0] == "running"
    assert listed() == {}, "running, but the agent has not registered yet"
    with pytest.raises(ClientError) as err:
        send()
    assert error_code(err) == "InvalidInstanceId"
    # A test's own setting wins over the timeline.
    control("POST", "ssm/managed-instance", {"account": acct.id, "instance_id": b, "ping_status": "Online"})
    assert listed() == {b: "Online"}

    acct.advance(90)
    assert a not in listed()
    acct.advance(30)
    assert listed() == {a: "Online", b: "Online"}
    command = send()
    rows = ssm.list_command_invocations(CommandId=command)["CommandInvocations"]
    assert [(r["InstanceId"], r["Status"]) for r in rows] == [(a, "InProgress")], "delivered to the registered agent"


def test_an_instance_stopped_before_its_agent_registered_is_never_listed(acct: Account) -> None:
    (registered,) = acct.launch()
    acct.ready(agent_s=120)
    (iid,) = acct.launch()
    acct.advance(30)
    acct.ec2.stop_instances(InstanceIds=[iid, registered])
    acct.advance(120)
    ssm = client("ssm", acct.id)
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid, registered]}])["InstanceInformationList"]
    assert [i["InstanceId"] for i in info] == [registered], "only the agent that had registered keeps its last ping"


# ---------------------------------------------------------------------------
# EC2 eventual consistency after launch
# ---------------------------------------------------------------------------


def test_describe_by_id_right_after_launch_is_not_found(acct: Account) -> None:
    (old,) = acct.launch()
    acct.ready(not_found_s=60)
    (new,) = acct.launch()
    function = client("ec2", acct.id, "PROBER")
    with pytest.raises(ClientError) as err:
        function.describe_instances(InstanceIds=[old, new])
    assert error_code(err) == "InvalidInstanceID.NotFound"
    assert new in err.value.response["Error"]["Message"] and old not in err.value.response["Error"]["Message"]
    listed = {i["InstanceId"] for r in function.describe_instances()["Reservations"] for i in r["Instances"]}
    assert old in listed and new not in listed, "a listing omits it"
    assert acct.state(new)[0] == "running", "the test itself sees through the lag"

    acct.advance(60)
    (r,) = function.describe_instances(InstanceIds=[new])["Reservations"]
    assert r["Instances"][0]["InstanceId"] == new


# ---------------------------------------------------------------------------
# EFS mount targets
# ---------------------------------------------------------------------------


def test_a_mount_target_is_creating_for_mount_target_s(acct: Account) -> None:
    efs = client("efs", acct.id)
    fs = efs.create_file_system(CreationToken="fs")["FileSystemId"]
    acct.ready(mount_target_s=120)
    made = efs.create_mount_target(FileSystemId=fs, SubnetId=acct.subnets["us-east-1b"])
    assert made["LifeCycleState"] == "creating"
    other = acct.ec2.create_subnet(VpcId=acct.vpc, CidrBlock="10.2.9.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    with pytest.raises(ClientError) as err:
        efs.create_mount_target(FileSystemId=fs, SubnetId=other)
    assert error_code(err) == "MountTargetConflict", "one mount target per AZ, creating or not"

    def state() -> str:
        (mt,) = efs.describe_mount_targets(FileSystemId=fs)["MountTargets"]
        return mt["LifeCycleState"]

    acct.advance(90)
    assert state() == "creating"
    acct.advance(30)
    assert state() == "available"
    (by_id,) = efs.describe_mount_targets(MountTargetId=made["MountTargetId"])["MountTargets"]
    assert by_id["LifeCycleState"] == "available"


# ---------------------------------------------------------------------------
# ELB target health
# ---------------------------------------------------------------------------


def test_a_registered_target_is_initial_for_healthy_s(acct: Account) -> None:
    a, b = acct.launch(2)
    tg = acct.target_group()
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": a}])
    assert acct.health(tg) == {a: ("healthy", None)}
    acct.ready(healthy_s=60)
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": a}, {"Id": b}])
    assert acct.health(tg) == {a: ("healthy", None), b: ("initial", "Elb.RegistrationInProgress")}, "registering again changes nothing"
    acct.advance(30)
    assert acct.health(tg, b) == {b: ("initial", "Elb.RegistrationInProgress")}
    acct.advance(30)
    assert acct.health(tg) == {a: ("healthy", None), b: ("healthy", None)}


def test_the_api_refuses_to_register_an_instance_that_is_not_running(acct: Account) -> None:
    acct.ready(pending_s=60)
    (iid,) = acct.launch()
    tg = acct.target_group()
    with pytest.raises(ClientError) as err:
        acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    assert error_code(err) == "InvalidTarget"
    acct.advance(60)
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    assert acct.health(tg) == {iid: ("healthy", None)}


def test_a_deregistered_target_drains_for_the_groups_delay_then_leaves(acct: Account) -> None:
    a, b, c = acct.launch(3)
    short = acct.target_group(delay=120)
    acct.elbv2.register_targets(TargetGroupArn=short, Targets=[{"Id": a}, {"Id": b}])
    acct.elbv2.deregister_targets(TargetGroupArn=short, Targets=[{"Id": a}])
    draining = ("draining", "Target.DeregistrationInProgress")
    assert acct.health(short) == {a: draining, b: ("healthy", None)}, "listed while it drains"
    assert acct.health(short, a) == {a: draining}
    acct.advance(90)
    assert acct.health(short, a) == {a: draining}
    acct.advance(30)
    assert acct.health(short) == {b: ("healthy", None)}, "gone once the delay is over"
    assert acct.health(short, a) == {a: ("unused", "Target.NotRegistered")}

    default = acct.target_group()
    attrs = acct.elbv2.describe_target_group_attributes(TargetGroupArn=default)["Attributes"]
    assert {x["Key"]: x["Value"] for x in attrs}["deregistration_delay.timeout_seconds"] == "300"
    acct.elbv2.register_targets(TargetGroupArn=default, Targets=[{"Id": c}])
    acct.elbv2.deregister_targets(TargetGroupArn=default, Targets=[{"Id": c}])
    acct.advance(270)
    assert acct.health(default) == {c: draining}
    acct.advance(30)
    assert acct.health(default) == {}

    at_once = acct.target_group(delay=0)
    acct.elbv2.register_targets(TargetGroupArn=at_once, Targets=[{"Id": c}])
    acct.elbv2.deregister_targets(TargetGroupArn=at_once, Targets=[{"Id": c}])
    assert acct.health(at_once) == {}
    assert acct.health(at_once, c) == {c: ("unused", "Target.NotRegistered")}


def test_registering_a_draining_target_registers_it_again(acct: Account) -> None:
    (iid,) = acct.launch()
    acct.ready(healthy_s=60)
    tg = acct.target_group(delay=120)
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    acct.advance(60)
    assert acct.health(tg) == {iid: ("healthy", None)}
    acct.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    assert acct.health(tg) == {iid: ("draining", "Target.DeregistrationInProgress")}
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    assert acct.health(tg) == {iid: ("initial", "Elb.RegistrationInProgress")}
    acct.advance(60)
    assert acct.health(tg) == {iid: ("healthy", None)}
    acct.advance(120)
    assert acct.health(tg) == {iid: ("healthy", None)}, "the old drain does not end it"


def test_deregistering_a_target_that_is_not_registered_succeeds_and_does_nothing(acct: Account) -> None:
    a, b = acct.launch(2)
    tg = acct.target_group(delay=60)
    acct.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": b}])
    acct.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": a}])
    acct.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": "i-0123456789abcdef0"}])
    assert acct.health(tg) == {b: ("healthy", None)}
    assert acct.health(tg, a) == {a: ("unused", "Target.NotRegistered")}
    # Deregistering a draining target again does not restart its drain.
    acct.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": b}])
    acct.advance(30)
    acct.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": b}])
    acct.advance(30)
    assert acct.health(tg) == {}
    with pytest.raises(ClientError) as err:
        acct.elbv2.deregister_targets(
            TargetGroupArn=f"arn:aws:elasticloadbalancing:us-east-1:{acct.id}:targetgroup/nope/0123456789abcdef", Targets=[{"Id": a}]
        )
    assert error_code(err) == "TargetGroupNotFound"


def test_targets_of_an_attached_group_follow_the_same_timelines(acct: Account) -> None:
    """Auto Scaling registers and deregisters through the same model."""
    acct.ready(healthy_s=60)
    tg = acct.target_group(delay=120)
    group = acct.group(tg)
    (iid,) = acct.scale(group, 1)
    assert acct.health(tg) == {iid: ("initial", "Elb.RegistrationInProgress")}
    acct.advance(60)
    assert acct.health(tg) == {iid: ("healthy", None)}
    assert acct.scale(group, 0) == []
    assert acct.health(tg) == {iid: ("draining", "Target.DeregistrationInProgress")}
    acct.advance(120)
    assert acct.health(tg) == {}


def test_a_pending_instance_entering_service_is_initial_until_it_runs(acct: Account) -> None:
    acct.ready(pending_s=60, healthy_s=60)
    tg = acct.target_group()
    group = acct.group(tg)
    (iid,) = acct.scale(group, 1)
    assert acct.state(iid) == ("pending", 0)
    assert acct.health(tg, iid)[iid][0] != "healthy"
    acct.advance(60)
    acct.scale(group, 1)
    assert acct.state(iid) == ("running", 16)
    assert acct.health(tg, iid) == {iid: ("initial", "Elb.RegistrationInProgress")}
    acct.advance(60)
    acct.scale(group, 1)
    assert acct.health(tg, iid) == {iid: ("healthy", None)}
