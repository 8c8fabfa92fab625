"""The emulator's Run Command is as slow and as strict as AWS: Status vs
StatusDetails, delivery to live agents under the rate controls, invocations
of lost instances waiting for the command to expire, stale ping status of
stopped and terminated instances, pinned document versions, strict
filters. Each test in an account of its own, so moving its clock is private.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from test_ground import client, control, new_account

DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "test document",
    "parameters": {
        "generation": {"type": "String", "allowedPattern": "^[0-9]{1,18}$"},
        "executionTimeout": {"type": "String", "default": "600", "allowedPattern": "^[0-9]{2,6}$"},
    },
    "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"], "timeoutSeconds": "{{ executionTimeout }}"}}],
}


class Account:
    def __init__(self) -> None:
        self.id = new_account()
        self.ec2 = client("ec2", self.id)
        self.ssm = client("ssm", self.id)
        vpc = self.ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        self.document = "doc"
        self.ssm.create_document(Name=self.document, Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")

    def launch(self, count: int) -> list[str]:
        res = self.ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=self.subnet)
        return [i["InstanceId"] for i in res["Instances"]]

    def send(self, ids: list[str], **kwargs: Any) -> str:
        return self.ssm.send_command(InstanceIds=ids, DocumentName=self.document, Parameters={"generation": ["1"]}, **kwargs)["Command"]["CommandId"]

    def invocations(self, command: str) -> dict[str, tuple[str, str]]:
        rows = self.ssm.list_command_invocations(CommandId=command)["CommandInvocations"]
        return {r["InstanceId"]: (r["Status"], r["StatusDetails"]) for r in rows}

    def advance(self, seconds: int) -> None:
        status, _ = control("POST", "clock", {"account": self.id, "advance_ms": seconds * 1000})
        assert status == 200

    def end(self, command: str, instance: str, status: str, **extra: Any) -> Any:
        return control("POST", "ssm/invocation-status", {"account": self.id, "command_id": command, "instance_id": instance, "status": status, **extra})

    def set_agent(self, instance: str, ping: str | None) -> None:
        control("POST", "ssm/managed-instance", {"account": self.id, "instance_id": instance, "ping_status": ping})

    def events(self) -> list[dict[str, Any]]:
        return control("GET", "ssm/status-events", account=self.id)[1]["events"]


@pytest.fixture
def acct() -> Account:
    return Account()


def test_status_takes_only_the_api_enum_and_details_say_why(acct: Account) -> None:
    a, b = acct.launch(2)
    command = acct.send([a, b])
    acct.end(command, a, "Undeliverable")
    acct.end(command, b, "Success")
    acct.advance(2)
    assert acct.invocations(command) == {a: ("Failed", "Undeliverable"), b: ("Success", "Success")}
    got = acct.ssm.get_command_invocation(CommandId=command, InstanceId=a)
    assert (got["Status"], got["StatusDetails"], got["ResponseCode"]) == ("Failed", "Undeliverable", -1)
    (cmd,) = acct.ssm.list_commands(CommandId=command)["Commands"]
    assert cmd["Status"] == "Success", "an Undeliverable invocation does not fail the command when another succeeded"
    statuses = {e["detail"]["status"] for e in acct.events()}
    assert statuses <= {"Pending", "InProgress", "Delayed", "Success", "Failed", "TimedOut", "Cancelled", "Cancelling"}, statuses


def test_an_instance_lost_mid_wave_waits_until_the_command_expires(acct: Account) -> None:
    a, b, c = acct.launch(3)
    command = acct.send([a, b, c], TimeoutSeconds=120)
    (cmd,) = acct.ssm.list_commands(CommandId=command)["Commands"]
    assert (cmd["ExpiresAfter"] - cmd["RequestedDateTime"]).total_seconds() == 120 + 600
    acct.ec2.terminate_instances(InstanceIds=[a])
    acct.set_agent(b, "ConnectionLost")
    acct.end(command, c, "Success")
    acct.advance(700)
    assert acct.invocations(command) == {a: ("InProgress", "InProgress"), b: ("InProgress", "InProgress"), c: ("Success", "Success")}
    assert acct.end(command, a, "Success", source="agent")[1] == {"changed": 0}, "a dead agent reports nothing"
    acct.advance(30)
    assert acct.invocations(command) == {a: ("TimedOut", "DeliveryTimedOut"), b: ("TimedOut", "DeliveryTimedOut"), c: ("Success", "Success")}
    (cmd,) = acct.ssm.list_commands(CommandId=command)["Commands"]
    assert cmd["Status"] == "TimedOut"


def test_a_terminated_instance_stays_online_for_a_while_but_is_refused(acct: Account) -> None:
    (a,) = acct.launch(1)
    acct.ec2.terminate_instances(InstanceIds=[a])
    info = acct.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [a]}])["InstanceInformationList"]
    assert [i["PingStatus"] for i in info] == ["Online"], "SSM has not noticed yet"
    with pytest.raises(ClientError) as err:
        acct.send([a])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    acct.advance(11 * 60)
    info = acct.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [a]}])["InstanceInformationList"]
    assert info == [], "then it drops out of the list"


def test_a_disconnected_agent_gets_its_invocation_when_it_comes_back(acct: Account) -> None:
    a, b = acct.launch(2)
    acct.set_agent(b, "ConnectionLost")
    command = acct.send([a, b])
    assert acct.invocations(command) == {a: ("InProgress", "InProgress"), b: ("Delayed", "Delayed")}
    acct.set_agent(b, "Online")
    assert acct.invocations(command)[b] == ("InProgress", "InProgress")


def test_deliveries_respect_max_concurrency_and_max_errors_terminates_the_rest(acct: Account) -> None:
    a, b, c = acct.launch(3)
    command = acct.send([a, b, c], MaxConcurrency="1", MaxErrors="0")
    states = acct.invocations(command)
    assert sorted(states.values()) == [("InProgress", "InProgress"), ("Pending", "Pending"), ("Pending", "Pending")]
    first = next(i for i, s in states.items() if s[0] == "InProgress")
    acct.end(command, first, "Success")
    states = acct.invocations(command)
    second = next(i for i, s in states.items() if s[0] == "InProgress")
    acct.end(command, second, "Failed")
    states = acct.invocations(command)
    third = ({a, b, c} - {first, second}).pop()
    assert states[third] == ("Cancelled", "Terminated"), "past MaxErrors, what has not started is terminated"
    (cmd,) = acct.ssm.list_commands(CommandId=command)["Commands"]
    assert (cmd["Status"], cmd["ErrorCount"]) == ("Failed", 1)


def test_an_invocation_running_past_its_execution_timeout_times_out(acct: Account) -> None:
    (a,) = acct.launch(1)
    command = acct.ssm.send_command(InstanceIds=[a], DocumentName=acct.document, Parameters={"generation": ["1"], "executionTimeout": ["60"]})["Command"]["CommandId"]
    acct.advance(59)
    assert acct.invocations(command)[a] == ("InProgress", "InProgress")
    acct.advance(61)
    assert acct.invocations(command)[a] == ("TimedOut", "ExecutionTimedOut")


def test_the_document_version_asked_for_is_run_and_echoed(acct: Account) -> None:
    (a,) = acct.launch(1)
    changed = dict(DOCUMENT, description="version 2")
    acct.ssm.update_document(Name=acct.document, Content=json.dumps(changed), DocumentVersion="$LATEST", DocumentFormat="JSON")
    command = acct.send([a], DocumentVersion="1")
    (cmd,) = acct.ssm.list_commands(CommandId=command)["Commands"]
    assert cmd["DocumentVersion"] == "1"
    assert acct.ssm.list_command_invocations(CommandId=command)["CommandInvocations"][0]["DocumentVersion"] == "1"
    deliveries = control("GET", "ssm/deliveries", account=acct.id, document=acct.document)[1]["deliveries"]
    assert [d["document_version"] for d in deliveries] == ["1"]
    with pytest.raises(ClientError) as err:
        acct.send([a], DocumentVersion="9")
    assert err.value.response["Error"]["Code"] == "InvalidDocumentVersion"


def test_cancel_command_cancels_what_has_not_ended(acct: Account) -> None:
    a, b = acct.launch(2)
    acct.set_agent(b, "ConnectionLost")
    command = acct.send([a, b])
    acct.ssm.cancel_command(CommandId=command, InstanceIds=[b])
    assert acct.invocations(command) == {a: ("InProgress", "InProgress"), b: ("Cancelled", "Cancelled")}
    acct.ssm.cancel_command(CommandId=command)
    acct.ssm.list_commands(CommandId=command)
    assert acct.invocations(command)[a] == ("Cancelled", "Cancelled")


def test_list_commands_time_filters_take_whole_seconds_only(acct: Account) -> None:
    (a,) = acct.launch(1)
    acct.send([a])
    acct.advance(2)
    ok = acct.ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": "2020-01-01T00:00:00Z"}])["Commands"]
    assert len(ok) == 1
    with pytest.raises(ClientError) as err:
        acct.ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": "2020-01-01T00:00:00.123Z"}])
    assert err.value.response["Error"]["Code"] == "InvalidFilterValue"


def test_a_new_command_is_not_found_by_searches_at_once(acct: Account) -> None:
    (a,) = acct.launch(1)
    command = acct.send([a], Comment="fresh")
    function = client("ssm", acct.id, "CBSYNC")
    assert function.list_commands(InstanceId=a)["Commands"] == []
    assert function.list_command_invocations(InstanceId=a)["CommandInvocations"] == []
    assert [c["CommandId"] for c in function.list_commands(CommandId=command)["Commands"]] == [command], "by id: listed"
    assert len(acct.ssm.list_commands(InstanceId=a)["Commands"]) == 1, "the test itself observes without lag"
    acct.advance(2)
    assert [c["Comment"] for c in function.list_commands(InstanceId=a)["Commands"]] == ["fresh"]
    assert function.get_command_invocation(CommandId=command, InstanceId=a)["Status"] in ("Pending", "InProgress")


def test_status_events_follow_every_change(acct: Account) -> None:
    (a,) = acct.launch(1)
    command = acct.send([a])
    acct.end(command, a, "Success")
    kind = lambda e: "invocation" if "Invocation" in e["detail-type"] else "command"  # noqa: E731
    kinds = [(kind(e), e["detail"]["status"]) for e in acct.events() if e["detail"]["command-id"] == command]
    assert kinds == [
        ("invocation", "Pending"),
        ("invocation", "InProgress"),
        ("command", "InProgress"),
        ("invocation", "Success"),
        ("command", "Success"),
    ], kinds
    command_events = [e for e in acct.events() if e["detail-type"] == "EC2 Command Status-change Notification"]
    assert command_events[-1]["detail"]["parameters"] == {"generation": ["1"]}
    assert command_events[-1]["resources"] == [f"arn:aws:ec2:us-east-1:{acct.id}:instance/{a}"]


def test_the_group_notices_an_instance_terminated_outside_it_at_its_next_health_check() -> None:
    account = new_account()
    ec2, asg = client("ec2", account), client("autoscaling", account)
    vpc = ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.2.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    ec2.create_launch_template(LaunchTemplateName="tmpl", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName="g", LaunchTemplate={"LaunchTemplateName": "tmpl"}, MinSize=0, MaxSize=3, DesiredCapacity=2, VPCZoneIdentifier=subnet)

    def states() -> dict[str, tuple[str, str]]:
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["g"])["AutoScalingGroups"][0]
        return {i["InstanceId"]: (i["LifecycleState"], i["HealthStatus"]) for i in group["Instances"]}

    a, b = sorted(states())
    ec2.terminate_instances(InstanceIds=[a])
    assert states()[a] == ("InService", "Healthy"), "not noticed yet"
    control("POST", "clock", {"account": account, "advance_ms": 61_000})
    now = states()
    assert a not in now, "noticed, terminated through the group"
    assert len(now) == 2 and b in now, "and replaced"
