"""Run Command and managed-instance behaviour for moto's SSM backend.

Gaps of moto 5.2.5 this fills (each change below names its gap):

* ``SendCommand`` with ``InstanceIds`` also targets every EC2 instance in the
  region (an empty ``Targets`` becomes an unfiltered EC2 query): here it goes
  to those instances only. Like AWS, it refuses instances that are not
  managed (``InvalidInstanceId``), more than 50 ids, unknown documents and
  parameters that break the document's ``allowedPattern``.
* Every invocation is ``Success`` at once: here it starts ``InProgress``
  (``Pending`` when the agent is not connected) and a test sets its outcome
  (``Pending`` / ``InProgress`` / ``Success`` / ``Failed`` / ``TimedOut`` /
  ``Cancelled``) through the control endpoints; ``GetCommandInvocation``,
  ``ListCommandInvocations`` and ``ListCommands`` reflect it.
* ``ListCommandInvocations`` and ``DescribeInstanceInformation`` are not
  implemented; ``ListCommands`` ignores its filters and paging.

Managed instances: every running or stopped EC2 instance of the region is a
managed instance (running: ``Online``; stopped: ``ConnectionLost``) with
agent version :data:`DEFAULT_AGENT_VERSION`, unless a test overrides it
(including "not registered at all").
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.models import Command, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse

from . import clock
from .autoscaling import LOCK

#: The agent version reported by default: new enough for
#: ``interpolationType: ENV_VAR`` (3.3.2746.0 or later).
DEFAULT_AGENT_VERSION = "3.3.2746.0"
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated"}
SETTABLE = {"Pending", "InProgress", "Delayed", "Success", "Failed", "TimedOut", "Cancelled"}
MAX_INSTANCE_IDS = 50


class SsmError(ServiceException):
    def __init__(self, code: str, message: str):
        super().__init__(code, message)


def utcnow(account: str) -> datetime.datetime:
    """The account's time on the test clock."""
    return clock.now(account)


# ---------------------------------------------------------------------------
# Managed instances
# ---------------------------------------------------------------------------


def overrides(backend: SimpleSystemManagerBackend) -> dict[str, dict[str, Any] | None]:
    table = getattr(backend, "_fleetkeeper_instances", None)
    if table is None:
        table = {}
        backend._fleetkeeper_instances = table  # type: ignore[attr-defined]
    return table


def managed_instances(backend: SimpleSystemManagerBackend) -> list[dict[str, Any]]:
    """Every managed instance of the region, as DescribeInstanceInformation lists it."""
    ec2 = ec2_backends[backend.account_id][backend.region_name]
    table = overrides(backend)
    out = []
    for reservation in ec2.all_reservations():
        for instance in reservation.instances:
            if instance.state not in ("running", "stopped", "stopping", "pending"):
                continue
            override = table.get(instance.id, {})
            if override is None:
                continue  # the agent never registered
            ping = override.get("PingStatus") or ("Online" if instance.state == "running" else "ConnectionLost")
            out.append(
                {
                    "InstanceId": instance.id,
                    "PingStatus": ping,
                    "LastPingDateTime": utcnow(backend.account_id),
                    "AgentVersion": override.get("AgentVersion") or DEFAULT_AGENT_VERSION,
                    "IsLatestVersion": True,
                    "PlatformType": override.get("PlatformType") or "Linux",
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "IPAddress": instance.private_ip,
                    "ComputerName": instance.private_dns_name,
                    "_instance": instance,
                }
            )
    return out


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in item["_instance"].get_tags()}


def set_managed_instance(backend: SimpleSystemManagerBackend, instance_id: str, ping_status: str | None, agent_version: str | None, platform_type: str | None) -> None:
    """Control: ``ping_status`` None unregisters the instance's agent."""
    with LOCK:
        if ping_status is None:
            overrides(backend)[instance_id] = None
        else:
            overrides(backend)[instance_id] = {"PingStatus": ping_status, "AgentVersion": agent_version, "PlatformType": platform_type}


def describe_instance_information(self: SimpleSystemManagerBackend, filters: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    items = managed_instances(self)
    for key, values in filters:
        if key == "InstanceIds":
            items = [i for i in items if i["InstanceId"] in values]
        elif key in ("PingStatus", "AgentVersion", "PlatformType", "PlatformTypes", "ResourceType"):
            field = "PlatformType" if key == "PlatformTypes" else key
            items = [i for i in items if i[field] in values]
        elif key.startswith("tag:"):
            tag = key[4:]
            items = [i for i in items if tags_of(i).get(tag) in values]
        elif key == "tag-key":
            items = [i for i in items if any(v in tags_of(i) for v in values)]
        else:
            raise SsmError("InvalidInstanceInformationFilterValue", f"Unsupported filter key {key}")
    return items


def response_describe_instance_information(self: SimpleSystemManagerResponse) -> ActionResult:
    filters: list[tuple[str, list[str]]] = []
    for f in self._get_param("InstanceInformationFilterList") or []:
        filters.append((f["key"], f["valueSet"]))
    for f in self._get_param("Filters") or []:
        filters.append((f["Key"], f["Values"]))
    items = self.ssm_backend.describe_instance_information(filters)
    page, token = paginate(items, self._get_param("MaxResults"), self._get_param("NextToken"), 50)
    result: dict[str, Any] = {"InstanceInformationList": [{k: v for k, v in i.items() if not k.startswith("_")} for i in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def targets_only(self: Command) -> list[str]:
    # moto turns an empty Targets list into an unfiltered EC2 query, sending
    # an InstanceIds command to every instance of the region.
    if not self.targets:
        return []
    return _original_targets(self)


_original_targets = Command._get_instance_ids_from_targets
_original_send_command = SimpleSystemManagerBackend.send_command


def document_parameters(backend: SimpleSystemManagerBackend, name: str | None) -> dict[str, Any] | None:
    """The document's parameter declarations, or None for AWS-owned documents
    (which moto does not store)."""
    if not name or name.startswith("AWS-"):
        return None
    documents = backend._documents.get(name)
    if documents is None:
        raise SsmError("InvalidDocument", f"Document with name {name} does not exist.")
    return documents.get_default_version().content_json.get("parameters") or {}


def validate_parameters(declared: dict[str, Any], given: dict[str, list[str]]) -> None:
    """SSM checks parameters against the document before anything is sent."""
    for name in given:
        if name not in declared:
            raise SsmError("InvalidParameters", f"Parameter {name!r} is not declared by the document.")
    for name, spec in declared.items():
        values = given.get(name)
        if values is None:
            if "default" not in spec:
                raise SsmError("InvalidParameters", f"Parameter {name!r} is required.")
            continue
        pattern = spec.get("allowedPattern")
        for value in values:
            if pattern is not None and re.fullmatch(pattern, value) is None:
                raise SsmError("InvalidParameters", f"Parameter {name!r} value failed to satisfy allowedPattern.")
            allowed = spec.get("allowedValues")
            if allowed is not None and value not in allowed:
                raise SsmError("InvalidParameters", f"Parameter {name!r} value is not an allowed value.")


def send_command(self: SimpleSystemManagerBackend, **kwargs: Any) -> Command:
    with LOCK:
        instance_ids = list(kwargs.get("instance_ids") or [])
        if len(instance_ids) > MAX_INSTANCE_IDS:
            raise SsmError(
                "ValidationException",
                f"1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to {MAX_INSTANCE_IDS}",
            )
        declared = document_parameters(self, kwargs.get("document_name"))
        if declared is not None:
            validate_parameters(declared, kwargs.get("parameters") or {})
        managed = {i["InstanceId"]: i for i in managed_instances(self)}
        invalid = [i for i in instance_ids if i not in managed]
        if invalid:
            raise SsmError("InvalidInstanceId", f"Instances [[{', '.join(invalid)}]] not in a valid state for account {self.account_id}")
        kwargs["instance_ids"] = instance_ids
        command = _original_send_command(self, **kwargs)
        # On the test clock (ListCommands filters by it); naive UTC like moto's.
        command.requested_date_time = utcnow(self.account_id).replace(tzinfo=None)
        command.status = None  # no status event has been sent for it yet
        for invocation in command.invocations:
            online = managed.get(invocation["InstanceId"], {}).get("PingStatus") == "Online"
            set_invocation(self, command, invocation, "InProgress" if online else "Pending")
        refresh(self, command)
        return command


def set_invocation(backend: SimpleSystemManagerBackend, command: Command, invocation: dict[str, Any], status: str, response_code: int | None = None, stdout: str | None = None, stderr: str | None = None) -> None:
    account = backend.account_id
    if invocation.get("Status") != status or command.status is None:
        emit(backend, command, "EC2 Command Invocation Status-change Notification", status, invocation["InstanceId"])
    invocation["Status"] = status
    invocation["StatusDetails"] = status
    terminal = status in TERMINAL
    invocation["ResponseCode"] = response_code if response_code is not None else (0 if status == "Success" else (1 if terminal else -1))
    invocation["ExecutionEndDateTime"] = utcnow(account).isoformat() if terminal else ""
    invocation["StandardOutputContent"] = stdout or ""
    invocation["StandardErrorContent"] = stderr or ""


def refresh(backend: SimpleSystemManagerBackend, command: Command) -> None:
    """Derives the command's status and counts from its invocations, and
    sends the command's status event when its status changed."""
    before = command.status
    derive_status(command)
    if command.status != before:
        emit(backend, command, "EC2 Command Status-change Notification", command.status, None)


def derive_status(command: Command) -> None:
    statuses = [i["Status"] for i in command.invocations]
    command.target_count = len(statuses)
    command.completed_count = sum(1 for s in statuses if s in TERMINAL)
    command.error_count = sum(1 for s in statuses if s in ("Failed", "TimedOut", "Undeliverable", "Terminated"))
    if not statuses:
        command.status = "Success"
    elif any(s not in TERMINAL for s in statuses):
        command.status = "Pending" if all(s == "Pending" for s in statuses) else "InProgress"
    elif all(s == "Success" for s in statuses):
        command.status = "Success"
    elif any(s == "Failed" or s in ("Undeliverable", "Terminated") for s in statuses):
        command.status = "Failed"
    elif any(s == "TimedOut" for s in statuses):
        command.status = "TimedOut"
    else:
        command.status = "Cancelled"
    command.status_details = command.status


def set_invocation_status(backend: SimpleSystemManagerBackend, command_id: str, instance_id: str | None, status: str, response_code: int | None, stdout: str | None, stderr: str | None) -> int:
    """Control: sets one invocation's (or every invocation's) status."""
    if status not in SETTABLE:
        raise SsmError("ValidationException", f"status must be one of {sorted(SETTABLE)}")
    with LOCK:
        command = backend.get_command_by_id(command_id)
        changed = 0
        for invocation in command.invocations:
            if instance_id is None or invocation["InstanceId"] == instance_id:
                set_invocation(backend, command, invocation, status, response_code, stdout, stderr)
                changed += 1
        if changed == 0:
            raise SsmError("InvocationDoesNotExist", f"No invocation of {command_id} on {instance_id}")
        refresh(backend, command)
        return changed


# ---------------------------------------------------------------------------
# Status events (EventBridge) and deliveries (for the local agent)
# ---------------------------------------------------------------------------


def event_log(backend: SimpleSystemManagerBackend) -> list[dict[str, Any]]:
    log = getattr(backend, "_fleetkeeper_events", None)
    if log is None:
        log = []
        backend._fleetkeeper_events = log  # type: ignore[attr-defined]
    return log


def emit(backend: SimpleSystemManagerBackend, command: Command, detail_type: str, status: str, instance_id: str | None) -> None:
    """Records the EventBridge event AWS sends for a status change.

    Shapes: Systems Manager user guide, "Amazon EventBridge event examples
    for Systems Manager" (Run Command: "EC2 Command Status-change
    Notification", "EC2 Command Invocation Status-change Notification"):
    ``command-id``, ``document-name``, ``requested-date-time``, ``status``;
    the command's event adds ``expire-after`` and ``parameters`` (arrays of
    strings) and lists the instances in ``resources``; the invocation's
    names its ``instance-id``. ``status`` carries the API's ``Status``
    spelling (the documented examples show ``Success``).
    """
    region = backend.region_name
    account = backend.account_id
    requested = command.requested_date_time.replace(tzinfo=datetime.timezone.utc)
    detail: dict[str, Any] = {
        "command-id": command.command_id,
        "document-name": command.document_name,
        "requested-date-time": clock.iso(requested),
        "status": status,
    }
    if instance_id is None:
        instances = list(command.instance_ids)
        detail["expire-after"] = clock.iso(command.expires_after.replace(tzinfo=datetime.timezone.utc))
        detail["parameters"] = {k: list(v) for k, v in (command.parameters or {}).items()}
    else:
        instances = [instance_id]
        detail["instance-id"] = instance_id
    event_log(backend).append(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.ssm",
            "account": account,
            "time": clock.iso(clock.now(account))[:19] + "Z",
            "region": region,
            "resources": [f"arn:aws:ec2:{region}:{account}:instance/{i}" for i in instances],
            "detail": detail,
        }
    )


def status_events(backend: SimpleSystemManagerBackend, after: int) -> tuple[list[dict[str, Any]], int]:
    with LOCK:
        log = event_log(backend)
        return log[after:], len(log)


def deliveries(backend: SimpleSystemManagerBackend, document: str | None) -> list[dict[str, Any]]:
    """Invocations delivered to an agent (``InProgress``) that no agent has
    taken yet: what a local agent runs."""
    with LOCK:
        out = []
        for command in backend._commands:
            if document is not None and command.document_name != document:
                continue
            for inv in command.invocations:
                if inv["Status"] == "InProgress" and not inv.get("_claimed"):
                    out.append(
                        {
                            "command_id": command.command_id,
                            "instance_id": inv["InstanceId"],
                            "document_name": command.document_name,
                            "document_version": getattr(command, "_document_version", None),
                            "parameters": {k: list(v) for k, v in (command.parameters or {}).items()},
                        }
                    )
        return out


def claim(backend: SimpleSystemManagerBackend, command_id: str, instance_id: str) -> bool:
    """An agent takes a delivered invocation (only one agent does)."""
    with LOCK:
        command = backend.get_command_by_id(command_id)
        for inv in command.invocations:
            if inv["InstanceId"] == instance_id and inv["Status"] == "InProgress" and not inv.get("_claimed"):
                inv["_claimed"] = True
                return True
        return False


def list_commands(self: SimpleSystemManagerBackend, command_id: str | None, instance_id: str | None, filters: list[dict[str, str]] | None = None) -> list[Command]:
    commands = _original_list_commands(self, command_id, instance_id)
    # moto ignores Filters.
    for f in filters or []:
        key, value = f["key"], f["value"]
        if key == "Status":
            commands = [c for c in commands if c.status == value]
        elif key == "DocumentName":
            commands = [c for c in commands if c.document_name == value]
        elif key == "ExecutionStage":
            want_done = value == "Complete"
            commands = [c for c in commands if (c.status in TERMINAL) == want_done]
        elif key in ("InvokedAfter", "InvokedBefore"):
            bound = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if bound.tzinfo is None:
                bound = bound.replace(tzinfo=datetime.timezone.utc)
            def at(c: Command) -> datetime.datetime:
                t = c.requested_date_time
                return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)
            commands = [c for c in commands if (at(c) >= bound if key == "InvokedAfter" else at(c) <= bound)]
        else:
            raise SsmError("InvalidFilterKey", f"Unsupported filter key {key}")
    return commands


_original_list_commands = SimpleSystemManagerBackend.list_commands


def response_list_commands(self: SimpleSystemManagerResponse) -> ActionResult:
    commands = self.ssm_backend.list_commands(self._get_param("CommandId"), self._get_param("InstanceId"), self._get_param("Filters"))
    page, token = paginate(commands, self._get_param("MaxResults"), self._get_param("NextToken"), 50)
    result: dict[str, Any] = {"Commands": [c.response_object() for c in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def response_list_command_invocations(self: SimpleSystemManagerResponse) -> ActionResult:
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = self._get_param("Details", False)
    commands = self.ssm_backend.list_commands(command_id, None, None)
    rows = []
    for command in commands:
        for inv in command.invocations:
            if instance_id and inv["InstanceId"] != instance_id:
                continue
            row = {
                "CommandId": command.command_id,
                "InstanceId": inv["InstanceId"],
                "Comment": command.comment,
                "DocumentName": command.document_name,
                "DocumentVersion": "$DEFAULT",
                "RequestedDateTime": command.requested_date_time,
                "Status": inv["Status"],
                "StatusDetails": inv["StatusDetails"],
                "StandardOutputUrl": "",
                "StandardErrorUrl": "",
            }
            if details:
                row["CommandPlugins"] = [
                    {
                        "Name": inv["PluginName"],
                        "Status": inv["Status"],
                        "StatusDetails": inv["StatusDetails"],
                        "ResponseCode": inv["ResponseCode"],
                        "Output": inv["StandardOutputContent"],
                    }
                ]
            rows.append(row)
    for f in self._get_param("Filters") or []:
        if f["key"] == "Status":
            rows = [r for r in rows if r["Status"] == f["value"]]
    page, token = paginate(rows, self._get_param("MaxResults"), self._get_param("NextToken"), 50)
    result: dict[str, Any] = {"CommandInvocations": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def paginate(items: list[Any], max_results: int | None, token: str | None, default: int) -> tuple[list[Any], str | None]:
    start = int(token) if token and token.isdigit() else 0
    size = int(max_results) if max_results else default
    page = items[start : start + size]
    more = start + size < len(items)
    return page, (str(start + size) if more else None)


def apply() -> list[str]:
    Command._get_instance_ids_from_targets = targets_only  # type: ignore[method-assign]
    SimpleSystemManagerBackend.send_command = send_command  # type: ignore[method-assign]
    SimpleSystemManagerBackend.list_commands = list_commands  # type: ignore[method-assign]
    SimpleSystemManagerBackend.describe_instance_information = describe_instance_information  # type: ignore[attr-defined]
    SimpleSystemManagerResponse.list_commands = response_list_commands  # type: ignore[method-assign]
    SimpleSystemManagerResponse.list_command_invocations = response_list_command_invocations  # type: ignore[attr-defined]
    SimpleSystemManagerResponse.describe_instance_information = response_describe_instance_information  # type: ignore[attr-defined]
    return [
        "ssm: SendCommand InstanceIds go to those instances only; unmanaged ids are InvalidInstanceId",
        "ssm: SendCommand checks the document, its allowedPattern and the 50-id limit",
        "ssm: invocations start InProgress/Pending; their status is set through the control endpoint",
        "ssm: ListCommandInvocations, DescribeInstanceInformation; ListCommands filters and paging",
    ]
