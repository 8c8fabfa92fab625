"""Run Command and managed-instance behaviour for moto's SSM backend, as slow
and as strict as AWS, on the account's test clock (:mod:`.clock`).

Gaps of moto 5.2.5 this fills, each with the AWS source of the behaviour
modelled (SSM API Reference; SSM user guide "Understanding command
statuses", monitor-commands.html; "Amazon EventBridge event examples for
Systems Manager"):

* ``SendCommand`` with ``InstanceIds`` also targets every EC2 instance of the
  region in moto: here it goes to those instances only. It refuses instances
  that are not managed or whose EC2 state is ``shutting-down`` /
  ``terminated`` (``InvalidInstanceId``: "Valid states are: Running,
  Pending, Stopped, and Stopping"), more than 50 ids, unknown documents or
  document versions, and parameters that break the document's
  ``allowedPattern``. ``DocumentVersion`` is honoured and echoed.
* Status and details: ``Status`` takes only the API's closed enum
  (``Pending InProgress Delayed Success Cancelled TimedOut Failed
  Cancelling``); ``Undeliverable``, ``Terminated``, ``DeliveryTimedOut``,
  ``ExecutionTimedOut``... appear only in ``StatusDetails`` (see
  :data:`DETAILS`). Every invocation of moto is ``Success`` at once; here it
  is delivered (``Pending`` -> ``InProgress``) only to a running instance
  whose agent is ``Online``, at most ``MaxConcurrency`` at a time; it ends
  the way the instance's agent reports (the local agent, or a test), and
  ``MaxErrors`` cancels what has not started (``Terminated``).
* Timeouts: an invocation that never reaches an agent, or whose agent dies
  while it runs, stays ``Pending`` / ``Delayed`` / ``InProgress`` until the
  command expires, ``ExpiresAfter`` = requested time + ``TimeoutSeconds``
  (3600 when omitted) + the document's ``executionTimeout``; it then becomes
  ``DeliveryTimedOut`` ("If a command reaches the command expiration limit
  (total timeout), it changes status to DeliveryTimedOut for all
  invocations that have the status InProgress, Pending or Delayed"). An
  invocation still running on a live agent past its execution timeout ends
  ``ExecutionTimedOut``.
* Managed instances: an instance whose agent registered (``agent_s`` after
  the instance runs, :mod:`.readiness`) is listed by
  ``DescribeInstanceInformation`` (running: ``Online``; a test may set
  ``ConnectionLost`` or unregister it). A stopped or terminated instance
  keeps its last ``PingStatus`` for :data:`PING_LAG` after the state change
  (the agent pings every few minutes; AWS documents no exact lag), then
  drops out of the list (amazon-ssm-agent#407: a stopped instance is not
  returned).
* ``ListCommandInvocations``, ``DescribeInstanceInformation`` and
  ``CancelCommand`` are not implemented in moto; ``ListCommands`` ignores
  its filters and paging; its ``InvokedAfter`` / ``InvokedBefore`` take the
  documented form ``2024-07-07T00:00:00Z`` only (fractions are refused here:
  AWS documents none).
* Status-change events (EventBridge) are recorded for the event router;
  ``status`` carries the ``Status`` spelling, as the documented examples do.

Nothing runs in the background: each request first brings the account's
commands up to its clock (:func:`advance`).
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import Instance as Ec2Instance
from moto.ssm.models import Command, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse

from . import clock, readiness, recorder
from .autoscaling import LOCK

#: The agent version reported by default: new enough for
#: ``interpolationType: ENV_VAR`` (3.3.2746.0 or later).
DEFAULT_AGENT_VERSION = "3.3.2746.0"
MAX_INSTANCE_IDS = 50
#: How long a stopped or terminated instance stays listed with its last ping.
PING_LAG = datetime.timedelta(minutes=10)
#: ``TimeoutSeconds`` when ``SendCommand`` omits it (the user guide: "The
#: default for Timeout (seconds) is 3600 seconds").
DEFAULT_DELIVERY_TIMEOUT = 3600
#: A document's ``executionTimeout`` when it declares none (AWS-RunShellScript's default).
DEFAULT_EXECUTION_TIMEOUT = 3600

#: StatusDetails -> Status. Sources: the API's CommandInvocationStatus enum;
#: ExecutionTimedOut -> TimedOut and Undeliverable -> Failed as real
#: responses show them; DeliveryTimedOut -> TimedOut from the ListCommands
#: filter doc ("TimedOut (this includes both Delivery and Execution time
#: outs)"); Terminated ("subsequent command invocations were canceled by the
#: system") -> Cancelled, InvalidPlatform and AccessDenied -> Failed:
#: inferred, AWS documents no pairing.
DETAILS = {
    "Pending": "Pending",
    "InProgress": "InProgress",
    "Delayed": "Delayed",
    "Cancelling": "Cancelling",
    "Success": "Success",
    "Failed": "Failed",
    "Cancelled": "Cancelled",
    "DeliveryTimedOut": "TimedOut",
    "ExecutionTimedOut": "TimedOut",
    "Undeliverable": "Failed",
    "Terminated": "Cancelled",
    "InvalidPlatform": "Failed",
    "AccessDenied": "Failed",
}
TERMINAL_DETAILS = {"Success", "Failed", "Cancelled", "DeliveryTimedOut", "ExecutionTimedOut", "Undeliverable", "Terminated", "InvalidPlatform", "AccessDenied"}
#: Invocations that "don't count against the parent command's max-errors limit".
UNCOUNTED = {"Undeliverable", "InvalidPlatform", "AccessDenied"}
#: How long a new command stays out of searches (``ListCommands`` and
#: ``ListCommandInvocations`` without a ``CommandId``: what finds a command
#: whose ``SendCommand`` answer was lost). Lookups by id are not delayed yet
#: (a known gap: GetCommandInvocation right after SendCommand may answer
#: ``InvocationDoesNotExist`` on AWS). The API reference of GetCommandInvocation: "The
#: Run Command API follows an eventual consistency model ... the result of an
#: API command you run that affects your resources might not be immediately
#: visible to all subsequent commands you run"; AWS gives no figure, 2 s is
#: ours (fleetkeeper waits 30 s, ``LISTING_LAG_MS``, before it trusts a search).
VISIBILITY_LAG = datetime.timedelta(seconds=2)
INVOKED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class SsmError(ServiceException):
    def __init__(self, code: str, message: str):
        super().__init__(code, message)


def now_of(backend: SimpleSystemManagerBackend) -> datetime.datetime:
    """The account's time on the test clock."""
    return clock.now(backend.account_id)


def naive(t: datetime.datetime) -> datetime.datetime:
    """UTC without tzinfo, as moto stores its times."""
    return t.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def aware(t: datetime.datetime) -> datetime.datetime:
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------------------
# EC2 state changes (when they happened, on the test clock)
# ---------------------------------------------------------------------------

_original_stop = Ec2Instance.stop
_original_terminate = Ec2Instance.terminate
_original_start = Ec2Instance.start


def _stamped(original: Any) -> Any:
    def method(self: Ec2Instance, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        self._fk_changed_at = clock.now(self.ec2_backend.account_id)  # type: ignore[attr-defined]
        return result

    return method


def changed_at(instance: Ec2Instance) -> datetime.datetime | None:
    return getattr(instance, "_fk_changed_at", None)


# ---------------------------------------------------------------------------
# Managed instances
# ---------------------------------------------------------------------------


def overrides(backend: SimpleSystemManagerBackend) -> dict[str, dict[str, Any] | None]:
    table = getattr(backend, "_fleetkeeper_instances", None)
    if table is None:
        table = {}
        backend._fleetkeeper_instances = table  # type: ignore[attr-defined]
    return table


def ec2_instances(backend: SimpleSystemManagerBackend) -> dict[str, Ec2Instance]:
    ec2 = ec2_backends[backend.account_id][backend.region_name]
    return {i.id: i for r in ec2.all_reservations() for i in r.instances}


def ping_of(backend: SimpleSystemManagerBackend, instance: Ec2Instance) -> str | None:
    """The instance's true agent status: what delivery depends on (None: no
    agent registered, or no agent can run)."""
    override = overrides(backend).get(instance.id, {})
    if override is None or instance.state != "running":
        return None
    if not agent_registered(backend, instance, now_of(backend)):
        return None
    return override.get("PingStatus") or "Online"


def agent_registered(backend: SimpleSystemManagerBackend, instance: Ec2Instance, at: datetime.datetime) -> bool:
    """Whether the instance's agent had registered by ``at``: ``agent_s``
    after the instance runs (:mod:`.readiness`; the agent registers once
    the instance has booted, and until then SendCommand answers
    ``InvalidInstanceId``: "SSM Agent isn't registered with the SSM
    endpoint"). A test's ``ssm/managed-instance`` setting wins."""
    return instance.id in overrides(backend) or readiness.agent_registered(instance, at)


def listed_ping(backend: SimpleSystemManagerBackend, instance: Ec2Instance) -> str | None:
    """What DescribeInstanceInformation reports (None: not listed)."""
    override = overrides(backend).get(instance.id, {})
    if override is None:
        return None
    ping = override.get("PingStatus") or "Online"
    if instance.state == "running":
        return ping if agent_registered(backend, instance, now_of(backend)) else None
    if instance.state == "pending":
        return None  # the agent registers once the instance runs
    at = changed_at(instance)
    if at is not None and now_of(backend) - at < PING_LAG and agent_registered(backend, instance, at):
        return ping  # the last ping, until SSM notices
    return None


def managed_instances(backend: SimpleSystemManagerBackend) -> list[dict[str, Any]]:
    """Every managed instance of the region, as DescribeInstanceInformation lists it."""
    out = []
    now = now_of(backend)
    for instance in ec2_instances(backend).values():
        ping = listed_ping(backend, instance)
        if ping is None:
            continue
        override = overrides(backend).get(instance.id) or {}
        out.append(
            {
                "InstanceId": instance.id,
                "PingStatus": ping,
                "LastPingDateTime": naive(now if instance.state == "running" else (changed_at(instance) or now)),
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
        advance(backend)


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
    with LOCK:
        advance(self.ssm_backend)
        items = self.ssm_backend.describe_instance_information(filters)
    page, token = paginate(items, self._get_param("MaxResults"), self._get_param("NextToken"), 50)
    result: dict[str, Any] = {"InstanceInformationList": [{k: v for k, v in i.items() if not k.startswith("_")} for i in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


# ---------------------------------------------------------------------------
# Documents and parameters
# ---------------------------------------------------------------------------


def targets_only(self: Command) -> list[str]:
    # moto turns an empty Targets list into an unfiltered EC2 query, sending
    # an InstanceIds command to every instance of the region.
    if not self.targets:
        return []
    return _original_targets(self)


_original_targets = Command._get_instance_ids_from_targets
_original_send_command = SimpleSystemManagerBackend.send_command


def document_of(backend: SimpleSystemManagerBackend, name: str | None, version: str | None) -> Any | None:
    """The document version a command runs (None for AWS-owned documents,
    which moto does not store)."""
    if not name or name.startswith("AWS-"):
        return None
    documents = backend._documents.get(name)
    if documents is None:
        raise SsmError("InvalidDocument", f"Document with name {name} does not exist.")
    if version in (None, "$DEFAULT"):
        return documents.get_default_version()
    if version == "$LATEST":
        return documents.versions[documents.latest_version]
    found = documents.versions.get(version)
    if found is None:
        raise SsmError("InvalidDocumentVersion", f"Document version {version} of {name} does not exist.")
    return found


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


def execution_timeout(declared: dict[str, Any], given: dict[str, list[str]]) -> int:
    value = (given.get("executionTimeout") or [None])[0]
    if value is None:
        value = (declared.get("executionTimeout") or {}).get("default")
    try:
        return int(value) if value is not None else DEFAULT_EXECUTION_TIMEOUT
    except ValueError:
        return DEFAULT_EXECUTION_TIMEOUT


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def send_command(self: SimpleSystemManagerBackend, **kwargs: Any) -> Command:
    with LOCK:
        advance(self)
        version = kwargs.pop("document_version", None)
        instance_ids = list(kwargs.get("instance_ids") or [])
        if len(instance_ids) > MAX_INSTANCE_IDS:
            raise SsmError(
                "ValidationException",
                f"1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to {MAX_INSTANCE_IDS}",
            )
        if len(set(instance_ids)) != len(instance_ids):
            raise SsmError("DuplicateInstanceId", "You cannot specify an instance ID in more than one association.")
        document = document_of(self, kwargs.get("document_name"), version)
        parameters = kwargs.get("parameters") or {}
        declared = (document.content_json.get("parameters") or {}) if document is not None else {}
        if document is not None:
            validate_parameters(declared, parameters)
        # "Valid states are: Running, Pending, Stopped, and Stopping. Invalid
        # states are: Shutting-down and Terminated" -- and the agent must be
        # registered (listed by DescribeInstanceInformation).
        instances = ec2_instances(self)
        listed = {i["InstanceId"] for i in managed_instances(self)}
        invalid = [
            i for i in instance_ids
            if i not in listed or instances[i].state not in ("running", "pending", "stopped", "stopping")
        ]
        if invalid:
            raise SsmError("InvalidInstanceId", f"Instances [[{', '.join(invalid)}]] not in a valid state for account {self.account_id}")
        kwargs["instance_ids"] = instance_ids
        if not kwargs.get("timeout_seconds"):
            kwargs["timeout_seconds"] = DEFAULT_DELIVERY_TIMEOUT
        command = _original_send_command(self, **kwargs)
        now = now_of(self)
        # On the test clock (ListCommands filters by it); naive UTC like moto's.
        command.requested_date_time = naive(now)
        command._fk_execution_timeout = execution_timeout(declared, parameters)  # type: ignore[attr-defined]
        command.expires_after = naive(now + datetime.timedelta(seconds=command.timeout_seconds + command._fk_execution_timeout))  # type: ignore[attr-defined]
        command._fk_document_version = str(document.document_version) if document is not None else (version or "$DEFAULT")  # type: ignore[attr-defined]
        command.status = None  # no status event has been sent for it yet
        for invocation in command.invocations:
            invocation["DocumentVersion"] = command._fk_document_version  # type: ignore[attr-defined]
            set_invocation(self, command, invocation, "Pending")
        advance(self)
        return command


def set_invocation(backend: SimpleSystemManagerBackend, command: Command, invocation: dict[str, Any], details: str, response_code: int | None = None, stdout: str | None = None, stderr: str | None = None) -> None:
    """Moves one invocation to ``details`` (its Status follows :data:`DETAILS`)
    and records its status-change event."""
    status = DETAILS[details]
    changed = invocation.get("StatusDetails") != details
    invocation["Status"] = status
    invocation["StatusDetails"] = details
    terminal = details in TERMINAL_DETAILS
    if details == "InProgress":
        invocation["_started_at"] = now_of(backend)
        invocation["ExecutionStartDateTime"] = naive(now_of(backend)).isoformat()
    if response_code is not None:
        invocation["ResponseCode"] = response_code
    else:
        invocation["ResponseCode"] = 0 if details == "Success" else (-1 if details in ("Undeliverable", "DeliveryTimedOut", "Pending", "InProgress", "Delayed", "Terminated", "Cancelled") else 1)
    invocation["ExecutionEndDateTime"] = naive(now_of(backend)).isoformat() if terminal else ""
    if stdout is not None:
        invocation["StandardOutputContent"] = stdout
    if stderr is not None:
        invocation["StandardErrorContent"] = stderr
    invocation.setdefault("StandardOutputContent", "")
    invocation.setdefault("StandardErrorContent", "")
    if changed:
        emit(backend, command, "EC2 Command Invocation Status-change Notification", status, invocation["InstanceId"])


def allowed(limit: str | None, targets: int, minimum: int) -> int:
    """An absolute or percentage rate control, for ``targets`` invocations."""
    if not limit:
        return max(targets, minimum)
    if limit.endswith("%"):
        share = int(limit[:-1]) * targets / 100
        return max(math.ceil(share) if minimum else math.floor(share), minimum)
    return max(int(limit), minimum)


def advance(backend: SimpleSystemManagerBackend) -> None:
    """Brings every command of the account up to its clock: deliveries,
    timeouts, MaxErrors, the commands' own status. Call under LOCK."""
    now = now_of(backend)
    instances = ec2_instances(backend)
    for command in backend._commands:
        if getattr(command, "_fk_execution_timeout", None) is None or command.status in ("Success", "Failed", "TimedOut", "Cancelled"):
            continue
        expires = aware(command.expires_after)
        invocations = command.invocations
        for inv in invocations:
            details = inv["StatusDetails"]
            if details in TERMINAL_DETAILS:
                continue
            if now >= expires:
                set_invocation(backend, command, inv, "DeliveryTimedOut")
                continue
            instance = instances.get(inv["InstanceId"])
            ping = ping_of(backend, instance) if instance is not None else None
            if details == "InProgress":
                started = inv.get("_started_at") or now
                if ping == "Online" and now >= started + datetime.timedelta(seconds=command._fk_execution_timeout):  # type: ignore[attr-defined]
                    set_invocation(backend, command, inv, "ExecutionTimedOut")
                continue
            if details == "Cancelling":
                set_invocation(backend, command, inv, "Cancelled")
        # MaxErrors: past the limit, what has not started is cancelled.
        errors = sum(1 for i in invocations if i["StatusDetails"] in ("Failed", "ExecutionTimedOut"))
        if errors > allowed(command.max_errors, len(invocations), 0):
            for inv in invocations:
                if inv["StatusDetails"] in ("Pending", "Delayed"):
                    set_invocation(backend, command, inv, "Terminated")
        # Deliveries, at most MaxConcurrency running at a time.
        running = sum(1 for i in invocations if i["StatusDetails"] == "InProgress")
        slots = allowed(command.max_concurrency, len(invocations), 1) - running
        for inv in invocations:
            if inv["StatusDetails"] not in ("Pending", "Delayed"):
                continue
            instance = instances.get(inv["InstanceId"])
            ping = ping_of(backend, instance) if instance is not None else None
            if ping == "Online" and slots > 0:
                set_invocation(backend, command, inv, "InProgress")
                slots -= 1
            elif ping == "ConnectionLost" and inv["StatusDetails"] == "Pending":
                # "The system will try to send the command again."
                set_invocation(backend, command, inv, "Delayed")
        refresh(backend, command)


def refresh(backend: SimpleSystemManagerBackend, command: Command) -> None:
    """Derives the command's status and counts from its invocations, and
    sends the command's status event when its status changed."""
    before = command.status
    derive_status(command)
    if command.status != before:
        emit(backend, command, "EC2 Command Status-change Notification", command.status, None)


def derive_status(command: Command) -> None:
    """The command's Status and StatusDetails (user guide, "Understanding
    command statuses": Undeliverable, InvalidPlatform and AccessDenied do not
    count against MaxErrors; a command all of whose invocations are
    Undeliverable is Failed; Incomplete: not every invocation succeeded, but
    not enough failed for Failed (its Status is not documented: Failed here)."""
    details = [i["StatusDetails"] for i in command.invocations]
    command.target_count = len(details)
    command.completed_count = sum(1 for d in details if d in TERMINAL_DETAILS)
    command.error_count = sum(1 for d in details if d in ("Failed", "ExecutionTimedOut"))
    command.delivery_timed_out_count = sum(1 for d in details if d == "DeliveryTimedOut")
    if not details:
        command.status, command.status_details = "Success", "Success"
    elif any(d not in TERMINAL_DETAILS for d in details):
        if all(d == "Pending" for d in details):
            command.status = command.status_details = "Pending"
        elif any(d == "Cancelling" for d in details):
            command.status = command.status_details = "Cancelling"
        else:
            command.status = command.status_details = "InProgress"
    else:
        counted = [d for d in details if d not in UNCOUNTED]
        limit = allowed(command.max_errors, len(details), 0)
        if not counted:
            command.status, command.status_details = "Failed", details[0]
        elif all(d == "Success" for d in counted):
            command.status, command.status_details = "Success", "Success"
        elif command.delivery_timed_out_count > limit:
            command.status, command.status_details = "TimedOut", "DeliveryTimedOut"
        elif command.error_count > limit:
            command.status, command.status_details = "Failed", "Failed"
        elif all(d in ("Success", "Cancelled", "Terminated") for d in counted):
            command.status, command.status_details = "Cancelled", "Cancelled"
        else:
            command.status, command.status_details = "Failed", "Incomplete"


def set_invocation_status(backend: SimpleSystemManagerBackend, command_id: str, instance_id: str | None, details: str, response_code: int | None, stdout: str | None, stderr: str | None, from_agent: bool) -> int:
    """Control: an invocation (or every invocation) ends as ``details``.

    ``from_agent``: the instance's agent reports it; a report from an
    instance whose agent can no longer reach SSM (stopped, terminated,
    disconnected) never arrives, and is dropped."""
    if details not in DETAILS:
        raise SsmError("ValidationException", f"status must be one of {sorted(DETAILS)}")
    with LOCK:
        advance(backend)
        command = backend.get_command_by_id(command_id)
        instances = ec2_instances(backend)
        changed = 0
        for invocation in command.invocations:
            if instance_id is not None and invocation["InstanceId"] != instance_id:
                continue
            if from_agent:
                instance = instances.get(invocation["InstanceId"])
                if instance is None or ping_of(backend, instance) != "Online" or invocation["StatusDetails"] != "InProgress":
                    continue
            set_invocation(backend, command, invocation, details, response_code, stdout, stderr)
            changed += 1
        if changed == 0 and not from_agent:
            raise SsmError("InvocationDoesNotExist", f"No invocation of {command_id} on {instance_id}")
        advance(backend)
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
    detail: dict[str, Any] = {
        "command-id": command.command_id,
        "document-name": command.document_name,
        "requested-date-time": clock.iso(aware(command.requested_date_time)),
        "status": status,
    }
    if instance_id is None:
        instances = list(command.instance_ids)
        detail["expire-after"] = clock.iso(aware(command.expires_after))
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
        advance(backend)
        log = event_log(backend)
        return log[after:], len(log)


def deliveries(backend: SimpleSystemManagerBackend, document: str | None) -> list[dict[str, Any]]:
    """Invocations delivered to a live agent (``InProgress``) that no agent
    has taken yet: what a local agent runs."""
    with LOCK:
        advance(backend)
        instances = ec2_instances(backend)
        out = []
        for command in backend._commands:
            if document is not None and command.document_name != document:
                continue
            for inv in command.invocations:
                instance = instances.get(inv["InstanceId"])
                live = instance is not None and ping_of(backend, instance) == "Online"
                if inv["StatusDetails"] == "InProgress" and not inv.get("_claimed") and live:
                    out.append(
                        {
                            "command_id": command.command_id,
                            "instance_id": inv["InstanceId"],
                            "document_name": command.document_name,
                            "document_version": getattr(command, "_fk_document_version", None),
                            "parameters": {k: list(v) for k, v in (command.parameters or {}).items()},
                        }
                    )
        return out


def claim(backend: SimpleSystemManagerBackend, command_id: str, instance_id: str) -> bool:
    """An agent takes a delivered invocation (only one agent does)."""
    with LOCK:
        command = backend.get_command_by_id(command_id)
        for inv in command.invocations:
            if inv["InstanceId"] == instance_id and inv["StatusDetails"] == "InProgress" and not inv.get("_claimed"):
                inv["_claimed"] = True
                return True
        return False


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def list_commands(self: SimpleSystemManagerBackend, command_id: str | None, instance_id: str | None, filters: list[dict[str, str]] | None = None) -> list[Command]:
    with LOCK:
        advance(self)
    commands = _original_list_commands(self, command_id, instance_id)
    if command_id is None:
        commands = [c for c in commands if visible(self, c)]
    # moto ignores Filters.
    for f in filters or []:
        key, value = f["key"], f["value"]
        if key == "Status":
            commands = [c for c in commands if c.status == value]
        elif key == "DocumentName":
            commands = [c for c in commands if c.document_name == value]
        elif key == "ExecutionStage":
            want_done = value == "Complete"
            commands = [c for c in commands if (c.status in ("Success", "Failed", "TimedOut", "Cancelled")) == want_done]
        elif key in ("InvokedAfter", "InvokedBefore"):
            if INVOKED.match(value) is None:
                raise SsmError("InvalidFilterValue", f"{key} must look like 2024-07-07T00:00:00Z, got {value}")
            bound = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
            commands = [c for c in commands if (aware(c.requested_date_time) >= bound if key == "InvokedAfter" else aware(c.requested_date_time) <= bound)]
        else:
            raise SsmError("InvalidFilterKey", f"Unsupported filter key {key}")
    return commands


_original_list_commands = SimpleSystemManagerBackend.list_commands


def visible(backend: SimpleSystemManagerBackend, command: Command) -> bool:
    """Whether a command is old enough to be found (:data:`VISIBILITY_LAG`).
    The test itself (caller ``TESTER``) observes without lag: its assertions
    look at what happened, not at what a function could see."""
    if recorder.current_tag() == "TESTER":
        return True
    return aware(command.requested_date_time) + VISIBILITY_LAG <= now_of(backend)


def command_object(command: Command) -> dict[str, Any]:
    out = command.response_object()
    out["StatusDetails"] = command.status_details
    out["DocumentVersion"] = getattr(command, "_fk_document_version", "$DEFAULT")
    out["DeliveryTimedOutCount"] = getattr(command, "delivery_timed_out_count", 0)
    return out


def response_list_commands(self: SimpleSystemManagerResponse) -> ActionResult:
    commands = self.ssm_backend.list_commands(self._get_param("CommandId"), self._get_param("InstanceId"), self._get_param("Filters"))
    page, token = paginate(commands, self._get_param("MaxResults"), self._get_param("NextToken"), 50)
    result: dict[str, Any] = {"Commands": [command_object(c) for c in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def public(invocation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in invocation.items() if not k.startswith("_")}


def response_get_command_invocation(self: SimpleSystemManagerResponse) -> ActionResult:
    with LOCK:
        advance(self.ssm_backend)
    invocation = self.ssm_backend.get_command_invocation(self._get_param("CommandId"), self._get_param("InstanceId"), self._get_param("PluginName"))
    return ActionResult(public(invocation))


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
                "DocumentVersion": getattr(command, "_fk_document_version", "$DEFAULT"),
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
                        "Status": inv["Status"] if inv["Status"] in ("Pending", "InProgress", "Success", "TimedOut", "Cancelled", "Failed") else "Pending",
                        "StatusDetails": inv["StatusDetails"],
                        "ResponseCode": inv["ResponseCode"],
                        # AWS: CommandPlugin.Output, "Length Constraints:
                        # Maximum length of 2500" (SSM API reference,
                        # CommandPlugin): the first 2,500 characters.
                        "Output": inv["StandardOutputContent"][:2500],
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


def response_send_command(self: SimpleSystemManagerResponse) -> ActionResult:
    """moto drops ``DocumentVersion``; AWS runs (and echoes) the version asked for."""
    command = self.ssm_backend.send_command(
        comment=self._get_param("Comment", ""),
        document_name=self._get_param("DocumentName"),
        document_version=self._get_param("DocumentVersion"),
        timeout_seconds=self._get_int_param("TimeoutSeconds"),
        instance_ids=self._get_param("InstanceIds", []),
        max_concurrency=self._get_param("MaxConcurrency", "50"),
        max_errors=self._get_param("MaxErrors", "0"),
        notification_config=self._get_param("NotificationConfig"),
        output_s3_bucket_name=self._get_param("OutputS3BucketName", ""),
        output_s3_key_prefix=self._get_param("OutputS3KeyPrefix", ""),
        output_s3_region=self._get_param("OutputS3Region", ""),
        parameters=self._get_param("Parameters", {}),
        service_role_arn=self._get_param("ServiceRoleArn", ""),
        targets=self._get_param("Targets", []),
    )
    return ActionResult({"Command": command_object(command)})


def response_cancel_command(self: SimpleSystemManagerResponse) -> ActionResult:
    """CancelCommand (500 in moto): "Attempts to cancel the command ... There
    is no guarantee that the command will be terminated"; per instance when
    ``InstanceIds`` is given. Pending or delayed invocations are cancelled at
    once, running ones pass through ``Cancelling``."""
    backend = self.ssm_backend
    with LOCK:
        advance(backend)
        command = backend.get_command_by_id(self._get_param("CommandId"))
        only = self._get_param("InstanceIds") or []
        for inv in command.invocations:
            if only and inv["InstanceId"] not in only:
                continue
            if inv["StatusDetails"] in ("Pending", "Delayed"):
                set_invocation(backend, command, inv, "Cancelled")
            elif inv["StatusDetails"] == "InProgress":
                set_invocation(backend, command, inv, "Cancelling")
        refresh(backend, command)
    return ActionResult({})


def paginate(items: list[Any], max_results: int | None, token: str | None, default: int) -> tuple[list[Any], str | None]:
    start = int(token) if token and token.isdigit() else 0
    size = int(max_results) if max_results else default
    page = items[start : start + size]
    more = start + size < len(items)
    return page, (str(start + size) if more else None)


def apply() -> list[str]:
    Ec2Instance.stop = _stamped(_original_stop)  # type: ignore[method-assign]
    Ec2Instance.terminate = _stamped(_original_terminate)  # type: ignore[method-assign]
    Ec2Instance.start = _stamped(_original_start)  # type: ignore[method-assign]
    Command._get_instance_ids_from_targets = targets_only  # type: ignore[method-assign]
    SimpleSystemManagerBackend.send_command = send_command  # type: ignore[method-assign]
    SimpleSystemManagerBackend.list_commands = list_commands  # type: ignore[method-assign]
    SimpleSystemManagerBackend.describe_instance_information = describe_instance_information  # type: ignore[attr-defined]
    SimpleSystemManagerResponse.send_command = response_send_command  # type: ignore[method-assign]
    SimpleSystemManagerResponse.list_commands = response_list_commands  # type: ignore[method-assign]
    SimpleSystemManagerResponse.get_command_invocation = response_get_command_invocation  # type: ignore[method-assign]
    SimpleSystemManagerResponse.list_command_invocations = response_list_command_invocations  # type: ignore[attr-defined]
    SimpleSystemManagerResponse.describe_instance_information = response_describe_instance_information  # type: ignore[attr-defined]
    SimpleSystemManagerResponse.cancel_command = response_cancel_command  # type: ignore[method-assign]
    return [
        "ssm: SendCommand goes to its InstanceIds only; refuses unmanaged, shutting-down and terminated ones",
        "ssm: SendCommand checks the document (version), its allowedPattern and the 50-id limit",
        "ssm: Status is the API's enum; Undeliverable, DeliveryTimedOut, ... are StatusDetails",
        "ssm: delivery to Online agents under MaxConcurrency; MaxErrors terminates the rest",
        "ssm: invocations of lost instances wait until the command expires (TimeoutSeconds + executionTimeout)",
        "ssm: stopped and terminated instances stay listed with their last ping for a while",
        "ssm: ListCommandInvocations, DescribeInstanceInformation, CancelCommand; strict ListCommands filters",
        "ssm: status-change events for the event router",
    ]
