"""Readiness timelines: how long AWS takes before new things are ready, on
the account's test clock (:mod:`.clock`), lazily evaluated when a request
reads the resource (nothing runs in the background).

moto 5.2.5 makes everything ready at once. A test sets the delays per account
and region through ``POST /moto-api/fleetkeeper/readiness`` (seconds, all 0
by default: ready at once, moto's behaviour, which the existing tests rely
on). Each delay is taken when its timeline starts (launch, start,
registration, creation): changing the settings later does not move a
timeline already running.

==================  ==================================================================
setting             timeline
==================  ==================================================================
``pending_s``       EC2 ``pending`` (code 0) -> ``running`` (16), from RunInstances
                    (also the instances Auto Scaling launches) or StartInstances
``agent_s``         the SSM agent registers this long after the instance runs: until
                    then DescribeInstanceInformation does not list it and SendCommand
                    answers ``InvalidInstanceId`` (see :mod:`.ssm`)
``not_found_s``     DescribeInstances naming the new instance in ``InstanceIds``
                    answers ``InvalidInstanceID.NotFound``; listings omit it
``mount_target_s``  EFS mount target ``creating`` -> ``available``
``healthy_s``       ELB target ``initial`` (``Elb.RegistrationInProgress``) ->
                    ``healthy`` after RegisterTargets (from the instance's running
                    time if it was registered while pending)
==================  ==================================================================

Not a setting: a deregistered target drains for its target group's
``deregistration_delay.timeout_seconds`` attribute (AWS's default 300 s),
always, then leaves the group; ``DeregisterTargets`` of a target that is not
registered succeeds and does nothing.

The AWS behaviour modelled, and its sources:

* EC2 user guide, "Amazon EC2 instance state changes"
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html):
  "pending: The instance is preparing to enter the running state. An instance
  enters the pending state when it is launched or when it is started after
  being in the stopped state"; "State change events for Amazon EC2 instances"
  (monitoring-instance-state-changes.html): "When you launch or start an
  instance, it enters the pending state and then the running state." AWS
  gives no duration: ``pending_s`` is the test's.
* SSM: ``InvalidInstanceId`` (SendCommand, API reference): "SSM Agent isn't
  registered with the SSM endpoint"; DescribeInstanceInformation lists
  managed nodes only; the agent runs on the booted instance and registers it
  ("SSM Agent makes it possible for Systems Manager to update, manage, and
  configure these resources", userguide/ssm-agent.html). No documented
  figure for the registration delay: ``agent_s`` is the test's.
* EC2 developer guide, "Eventual consistency in the Amazon EC2 API"
  (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
  after RunInstances, a command that uses the returned instance ID "might"
  answer ``InvalidInstanceID.NotFound``; "This does not mean the instance does
  not exist". The test caller (tag ``TESTER``) sees through the lag, as it
  does for SSM's listing lag (:func:`.ssm.visible`): its assertions look at
  what happened, not at what a function could see.
* EFS API reference, CreateMountTarget: "The CreateMountTarget call returns
  only after creating the network interface, but while the mount target
  state is still creating, you can check the mount target creation status by
  calling the DescribeMountTargets operation" (LifeCycleState ``creating``
  -> ``available``). moto answers ``available`` at once. A second mount
  target in the same AZ is ``MountTargetConflict`` whatever the first's state
  (moto keys them by AZ; unchanged here).
* ELB API reference, TargetHealth: ``initial`` with
  ``Elb.RegistrationInProgress`` ("The target is in the process of being
  registered with the load balancer"); ``draining`` with
  ``Target.DeregistrationInProgress`` ("the deregistration delay period has
  not expired"); ``unused`` with ``Target.NotRegistered``. RegisterTargets:
  "If the target is an EC2 instance, it must be in the running state when you
  register it" (moto's ``InvalidTarget`` for that is kept for the API).
* ALB user guide, "Deregistration delay"
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay):
  "By default, Elastic Load Balancing waits 300 seconds before completing the
  deregistration process"; "The initial state of a deregistering target is
  draining"; even when deregistration completes early, "the status of the
  target is displayed as draining until the deregistration delay timeout
  expires. After the timeout expires, the target transitions to an unused
  state." moto removes the target at once.
* ELB API reference, DeregisterTargets: "Note: If the specified target does
  not exist, the action returns successfully." moto answers
  ``InvalidTarget``; a target group that does not exist stays
  ``TargetGroupNotFound``.

Auto Scaling (:mod:`.autoscaling`) registers and deregisters instances of
attached target groups through the same target-group model methods, so its
targets follow the same timelines. It registers an instance when it enters
service, which it may do while EC2 still says ``pending``: the model accepts
a pending instance (AWS would have waited for it to run) and keeps it
``initial`` until it runs plus ``healthy_s``; the RegisterTargets API itself
still refuses one that is not running.
"""

from __future__ import annotations

import copy
import datetime
import math
import threading
from typing import Any

from moto.ec2.exceptions import InvalidInstanceIdError
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.responses.instances import InstanceResponse
from moto.efs.models import EFSBackend, MountTarget
from moto.elbv2.exceptions import TargetNotRunning
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup
from moto.elbv2.responses import ELBV2Response

from . import clock, recorder

FIELDS = ("pending_s", "agent_s", "mount_target_s", "healthy_s", "not_found_s")
#: AWS's default ``deregistration_delay.timeout_seconds``.
DEFAULT_DEREGISTRATION_DELAY = 300

LOCK = threading.RLock()
#: (account, region) -> field -> seconds
SETTINGS: dict[tuple[str, str], dict[str, float]] = {}


# ---------------------------------------------------------------------------
# Settings (the control endpoint)
# ---------------------------------------------------------------------------


def settings(account: str, region: str) -> dict[str, float]:
    with LOCK:
        return dict(SETTINGS.get((account, region)) or {f: 0 for f in FIELDS})


def current(account: str, region: str) -> dict[str, Any]:
    return {"account": account, "region": region, **settings(account, region)}


def configure(account: str, region: str, values: dict[str, Any]) -> dict[str, Any]:
    """Sets the fields given (seconds, >= 0); the others keep their value."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown readiness settings {unknown}; known: {list(FIELDS)}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a number of seconds >= 0, got {value!r}")
    with LOCK:
        table = SETTINGS.setdefault((account, region), {f: 0 for f in FIELDS})
        table.update(values)
    return current(account, region)


def seconds(s: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=s)


# ---------------------------------------------------------------------------
# EC2: pending -> running, and the not-found window
# ---------------------------------------------------------------------------


class LazyState:
    """``Instance._state`` read through the instance's timeline: ``pending``
    until its running time on the account's clock, then ``running``.

    Every reader of moto's state goes through ``_state`` (the ``State`` of
    DescribeInstances and DescribeInstanceStatus, the ``instance-state-*``
    filters, ``is_running``, the previous state stop / start / terminate
    answer, the SSM and ELB models), so the flip is lazy and seen alike by
    all; stop and terminate still set their state on the same object."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        try:
            state = obj.__dict__["_fk_state"]
        except KeyError:
            raise AttributeError("_state") from None
        if state.name == "pending":
            due = obj.__dict__.get("_fk_running_at")
            if due is not None and clock.now(obj.ec2_backend.account_id) >= due:
                state.name, state.code = "running", 16
        return state

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_fk_state"] = value


def begin_pending(instance: Instance, now: datetime.datetime) -> None:
    """The instance was launched or started at ``now``: it runs at
    ``now + pending_s``, its agent registers ``agent_s`` later."""
    s = settings(instance.ec2_backend.account_id, instance.ec2_backend.region_name)
    running_at = now + seconds(s["pending_s"])
    instance._fk_running_at = running_at  # type: ignore[attr-defined]
    instance._fk_agent_at = running_at + seconds(s["agent_s"])  # type: ignore[attr-defined]
    if running_at > now:
        state = instance._state
        state.name, state.code = "pending", 0


def agent_registered(instance: Instance, at: datetime.datetime) -> bool:
    """Whether the instance's SSM agent had registered by ``at`` (for the
    instance's current or last run)."""
    due = getattr(instance, "_fk_agent_at", None)
    return due is None or at >= due


def visible(instance: Instance, now: datetime.datetime) -> bool:
    """Whether DescribeInstances finds the instance yet (``not_found_s``)."""
    due = getattr(instance, "_fk_visible_at", None)
    return due is None or now >= due or recorder.current_tag() == "TESTER"


_original_run_instances = InstanceBackend.run_instances


def run_instances(self: InstanceBackend, *args: Any, **kwargs: Any) -> Any:
    reservation = _original_run_instances(self, *args, **kwargs)
    now = clock.now(self.account_id)  # type: ignore[attr-defined]
    not_found = settings(self.account_id, self.region_name)["not_found_s"]  # type: ignore[attr-defined]
    for instance in reservation.instances:
        if not_found > 0:
            instance._fk_visible_at = now + seconds(not_found)
        begin_pending(instance, now)
    return reservation


_original_start = Instance.start


def start(self: Instance) -> Any:
    """StartInstances: a stopped instance passes through ``pending`` again,
    and its agent registers again once it runs."""
    previous = _original_start(self)
    if previous.name in ("stopped", "stopping"):
        begin_pending(self, clock.now(self.ec2_backend.account_id))
    elif previous.name == "pending":
        # Starting an instance still booting does not make it run sooner
        # (moto's start sets running): its launch timeline stands.
        state = self._state
        state.name, state.code = "pending", 0
    return previous


_original_backend_describe_instances = InstanceBackend.describe_instances


def describe_instances(self: InstanceBackend, filters: Any = None) -> Any:
    """DescribeInstances without ``InstanceIds`` (its only caller): an
    instance still inside its not-found window is left out."""
    reservations = _original_backend_describe_instances(self, filters)
    now = clock.now(self.account_id)  # type: ignore[attr-defined]
    out = []
    for reservation in reservations:
        shown = [i for i in reservation.instances if visible(i, now)]
        if len(shown) == len(reservation.instances):
            out.append(reservation)
        elif shown:
            reservation = copy.copy(reservation)
            reservation.instances = shown
            out.append(reservation)
    return out


_original_response_describe_instances = InstanceResponse.describe_instances


def response_describe_instances(self: InstanceResponse) -> Any:
    """DescribeInstances naming an instance still inside its not-found window
    answers ``InvalidInstanceID.NotFound`` for it."""
    ids = self._get_param("InstanceIds", [])
    if ids:
        now = clock.now(self.current_account)
        hidden = []
        for instance_id in ids:
            instance = self.ec2_backend.get_instance_by_id(instance_id)
            if instance is not None and not visible(instance, now):
                hidden.append(instance_id)
        if hidden:
            raise InvalidInstanceIdError(hidden)
    return _original_response_describe_instances(self)


# ---------------------------------------------------------------------------
# EFS: mount targets creating -> available
# ---------------------------------------------------------------------------

_original_create_mount_target = EFSBackend.create_mount_target


def create_mount_target(self: EFSBackend, *args: Any, **kwargs: Any) -> MountTarget:
    mount_target = _original_create_mount_target(self, *args, **kwargs)
    delay = settings(self.account_id, self.region_name)["mount_target_s"]
    if delay > 0:
        mount_target.life_cycle_state = "creating"
        mount_target._fk_available_at = clock.now(self.account_id) + seconds(delay)  # type: ignore[attr-defined]
    return mount_target


_original_info_json = MountTarget.info_json


def mount_target_info_json(self: MountTarget) -> dict[str, Any]:
    """What CreateMountTarget and DescribeMountTargets answer, read after the
    timeline is brought up to the clock (``_fk_`` fields stay out of it)."""
    due = getattr(self, "_fk_available_at", None)
    if self.life_cycle_state == "creating" and due is not None and clock.now(self.owner_id) >= due:
        self.life_cycle_state = "available"
    return _original_info_json(self)


# ---------------------------------------------------------------------------
# ELBv2: initial -> healthy, draining -> gone
# ---------------------------------------------------------------------------


def draining(tg: FakeTargetGroup) -> dict[str, tuple[dict[str, Any], datetime.datetime]]:
    """Targets being deregistered: id -> (target, end of the delay)."""
    table = getattr(tg, "_fk_draining", None)
    if table is None:
        table = {}
        tg._fk_draining = table  # type: ignore[attr-defined]
    return table


def healthy_at(tg: FakeTargetGroup) -> dict[str, datetime.datetime]:
    """Registered targets still ``initial``: id -> when they turn healthy."""
    table = getattr(tg, "_fk_healthy_at", None)
    if table is None:
        table = {}
        tg._fk_healthy_at = table  # type: ignore[attr-defined]
    return table


def deregistration_delay(tg: FakeTargetGroup) -> int:
    try:
        return int(tg.attributes.get("deregistration_delay.timeout_seconds", DEFAULT_DEREGISTRATION_DELAY))
    except (TypeError, ValueError):
        return DEFAULT_DEREGISTRATION_DELAY


def settle(tg: FakeTargetGroup, now: datetime.datetime) -> None:
    """Drains that are over: the target leaves the group (``unused`` /
    ``Target.NotRegistered`` when asked for by id). Call under LOCK."""
    table = draining(tg)
    for target_id, (target, until) in list(table.items()):
        if now >= until:
            del table[target_id]
            tg.deregistered_targets[target_id] = target


def register(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
    """moto's registration, plus: a new (or draining) target starts
    ``initial`` for ``healthy_s``; an already registered one is unchanged.
    A pending instance is accepted here (Auto Scaling's path; the API
    refuses it, :func:`response_register_targets`) and stays initial until
    it runs."""
    instances = {t["Id"]: self.ec2_backend.get_instance_by_id(t["Id"]) for t in targets}
    for target_id, instance in instances.items():
        if instance is not None and instance.state not in ("running", "pending"):
            raise TargetNotRunning(instance_id=target_id)
    now = clock.now(self.account_id)
    delay = seconds(settings(self.account_id, self.region_name)["healthy_s"])
    with LOCK:
        settle(self, now)
        for target in targets:
            target_id = target["Id"]
            fresh = target_id not in self.targets
            self.targets[target_id] = {"Id": target_id, "Port": target.get("Port", self.port)}
            self.deregistered_targets.pop(target_id, None)
            draining(self).pop(target_id, None)
            if not fresh:
                continue
            start_at = now
            instance = instances[target_id]
            if instance is not None and instance.state == "pending":
                start_at = max(now, getattr(instance, "_fk_running_at", None) or now)
            ready = start_at + delay
            if ready > now:
                healthy_at(self)[target_id] = ready
            else:
                healthy_at(self).pop(target_id, None)


def deregister(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
    """A registered target drains for the group's deregistration delay; one
    that is not registered (or already draining) is left as it is."""
    now = clock.now(self.account_id)
    delay = deregistration_delay(self)
    with LOCK:
        settle(self, now)
        for target in targets:
            registered = self.targets.pop(target["Id"], None)
            if registered is None:
                continue
            healthy_at(self).pop(target["Id"], None)
            if delay > 0:
                draining(self)[target["Id"]] = (registered, now + seconds(delay))
            else:
                self.deregistered_targets[target["Id"]] = registered


_original_health_for = FakeTargetGroup.health_for


def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
    now = clock.now(self.account_id)
    target_id = target["Id"]
    with LOCK:
        settle(self, now)
        if target_id not in self.targets and target_id in draining(self):
            registered, _ = draining(self)[target_id]
            return FakeHealthStatus(
                target_id, registered["Port"], self.health_check_port, "draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"
            )
        status = _original_health_for(self, target, ec2_backend)
        if status.status == "healthy":
            due = healthy_at(self).get(target_id)
            if due is not None and now < due:
                return FakeHealthStatus(
                    target_id, status.port, self.health_check_port, "initial", "Elb.RegistrationInProgress", "Target registration is in progress"
                )
            healthy_at(self).pop(target_id, None)
        return status


_original_describe_target_health = ELBv2Backend.describe_target_health


def describe_target_health(self: ELBv2Backend, target_group_arn: str, targets: list[dict[str, Any]]) -> list[FakeHealthStatus]:
    """Without ``Targets``: every target of the group, the draining ones
    included (they are still the group's until their delay ends)."""
    tg = self.target_groups.get(target_group_arn)
    if tg is None or targets:
        return _original_describe_target_health(self, target_group_arn, targets)
    with LOCK:
        settle(tg, clock.now(tg.account_id))
        listed = list(tg.targets.values()) + [t for t, _ in draining(tg).values()]
        return [tg.health_for(t, self.ec2_backend) for t in listed]


_original_response_register_targets = ELBV2Response.register_targets


def response_register_targets(self: ELBV2Response) -> Any:
    """RegisterTargets (the API): an instance must be running."""
    tg = self.elbv2_backend.target_groups.get(self._get_param("TargetGroupArn"))
    if tg is not None:
        for target in self._get_param("Targets", []) or []:
            instance = tg.ec2_backend.get_instance_by_id(target["Id"])
            if instance is not None and instance.state != "running":
                raise TargetNotRunning(instance_id=target["Id"])
    return _original_response_register_targets(self)


def apply() -> list[str]:
    """Installs the patches. Runs after :func:`.ssm.apply` (which wraps
    ``Instance.start`` too)."""
    Instance._state = LazyState()  # type: ignore[assignment]
    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]
    InstanceBackend.describe_instances = describe_instances  # type: ignore[method-assign]
    global _original_start
    if Instance.start is not start:
        _original_start = Instance.start  # ssm's stamped start, when ssm.apply ran first
        Instance.start = start  # type: ignore[method-assign]
    InstanceResponse.describe_instances = response_describe_instances  # type: ignore[method-assign]
    EFSBackend.create_mount_target = create_mount_target  # type: ignore[method-assign]
    MountTarget.info_json = mount_target_info_json  # type: ignore[method-assign]
    FakeTargetGroup.register = register  # type: ignore[method-assign]
    FakeTargetGroup.deregister = deregister  # type: ignore[method-assign]
    FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]
    ELBv2Backend.describe_target_health = describe_target_health  # type: ignore[method-assign]
    ELBV2Response.register_targets = response_register_targets  # type: ignore[method-assign]
    return [
        "readiness: EC2 instances pending for pending_s after launch or start (POST readiness)",
        "readiness: SSM agents register agent_s after the instance runs",
        "readiness: DescribeInstances answers InvalidInstanceID.NotFound for not_found_s after launch",
        "readiness: EFS mount targets creating for mount_target_s",
        "readiness: ELB targets initial for healthy_s; deregistered targets drain for the group's delay",
        "readiness: DeregisterTargets of an unregistered target succeeds and does nothing",
    ]
