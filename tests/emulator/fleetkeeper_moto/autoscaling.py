"""Lifecycle-hook simulation for moto's Auto Scaling backend.

moto 5.2.5 stores lifecycle hooks but never acts on them: new instances go
straight to ``InService``, ``CompleteLifecycleAction`` and
``RecordLifecycleActionHeartbeat`` answer HTTP 500, no lifecycle event is
emitted, and every instance lands in the first subnet of
``VPCZoneIdentifier``. This module fills exactly those gaps, the way an
upstream contribution would: by extending the models, with each change
commented with the gap it fills.

What it does:

* Launch: with a launching hook on the group, a new instance waits in
  ``Pending:Wait`` (``Warmed:Pending:Wait`` when launched into a warm pool)
  until every hook's action is completed. Attached target groups register it
  only on ``CONTINUE``; ``ABANDON`` terminates it (and the group replaces it).
* Terminate: scale-in and ``TerminateInstanceInAutoScalingGroup`` deregister
  the instance from attached target groups and hold it in
  ``Terminating:Wait`` while a terminating hook exists.
* ``CompleteLifecycleAction`` / ``RecordLifecycleActionHeartbeat`` by token or
  instance id are recorded; an action that is not active fails with AWS's
  ``ValidationError`` "No active Lifecycle Action found ...".
* The EventBridge event AWS would have sent for each action is recorded for
  the control endpoints (:mod:`fleetkeeper_moto.control`).
* Instances are spread over the group's subnets (least-populated AZ first),
  as AWS balances them, instead of all landing in the first subnet.
* An instance terminated or stopped outside the group (a Spot interruption,
  an operator's ``TerminateInstances``) stays ``InService`` and ``Healthy``
  until the group's next health check notices it (moto replaces it at
  once). AWS: "Amazon EC2 Auto Scaling ... periodically checks the health
  status of all instances"; an instance "in any state other than running"
  is unhealthy, and is then replaced (Auto Scaling user guide, "Health
  checks for instances in an Auto Scaling group"). Here the check runs
  every :data:`HEALTH_CHECK_PERIOD` on the account's clock; the unhealthy
  instance then terminates through the group (its terminate hooks run).
"""

from __future__ import annotations

import datetime
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.autoscaling import models as asg_models
from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult

from . import clock

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"

#: How often the group checks its instances' EC2 state (AWS documents the
#: checks as periodic; 60 s is the period we model).
HEALTH_CHECK_PERIOD = datetime.timedelta(seconds=60)

#: States that count toward the group's desired capacity.
COUNTED = {"Pending", "Pending:Wait", "Pending:Proceed", "InService"}
#: States of an instance in the warm pool.
WARMED = {"Warmed:Pending", "Warmed:Pending:Wait", "Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"}

# moto's server handles requests on threads and its models take no locks; the
# simulation's read-modify-write sequences (complete an action, then move the
# instance) must not interleave.
LOCK = threading.RLock()


@dataclass
class LifecycleAction:
    """One hook's pending action on one instance."""

    token: str
    group: str
    hook: str
    instance_id: str
    transition: str
    origin: str
    destination: str
    started_at: str
    heartbeats: int = 0


@dataclass
class SimulationState:
    """The simulation's state, one per Auto Scaling backend (account and region)."""

    actions: list[LifecycleAction] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # moto drops NotificationMetadata; AWS echoes it in every event.
    metadata: dict[tuple[str, str], str] = field(default_factory=dict)
    # Instances that left EC2 outside the group: id -> when the group notices.
    notices: dict[str, datetime.datetime] = field(default_factory=dict)


def state_of(backend: AutoScalingBackend) -> SimulationState:
    sim = getattr(backend, "_fleetkeeper", None)
    if sim is None:
        sim = SimulationState()
        backend._fleetkeeper = sim  # type: ignore[attr-defined]
    return sim


def now(backend: AutoScalingBackend) -> str:
    """The account's time on the test clock, as AWS writes it in events."""
    return clock.iso(clock.now(backend.account_id))


def hooks_for(backend: AutoScalingBackend, group: str, transition: str) -> list[Any]:
    return [h for h in backend.lifecycle_hooks.values() if h.auto_scaling_group_name == group and h.lifecycle_transition == transition]


def find_state(backend: AutoScalingBackend, instance_id: str) -> tuple[FakeAutoScalingGroup, InstanceState] | None:
    for group in backend.autoscaling_groups.values():
        for st in group.instance_states:
            if st.instance.id == instance_id:
                return group, st
    return None


# ---------------------------------------------------------------------------
# Events and actions
# ---------------------------------------------------------------------------


def begin_actions(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState, transition: str, origin: str, destination: str) -> bool:
    """Opens one action per hook of ``transition``; returns whether any hook exists."""
    hooks = hooks_for(backend, group.name, transition)
    sim = state_of(backend)
    for hook in hooks:
        action = LifecycleAction(
            token=str(uuid.uuid4()),
            group=group.name,
            hook=hook.name,
            instance_id=st.instance.id,
            transition=transition,
            origin=origin,
            destination=destination,
            started_at=now(backend),
        )
        sim.actions.append(action)
        sim.events.append(event_for(backend, group, action))
    return bool(hooks)


def event_for(backend: AutoScalingBackend, group: FakeAutoScalingGroup, action: LifecycleAction) -> dict[str, Any]:
    """The EventBridge event AWS sends for a lifecycle action."""
    detail = {
        "LifecycleActionToken": action.token,
        "AutoScalingGroupName": action.group,
        "LifecycleHookName": action.hook,
        "EC2InstanceId": action.instance_id,
        "LifecycleTransition": action.transition,
        "Origin": action.origin,
        "Destination": action.destination,
    }
    metadata = state_of(backend).metadata.get((action.group, action.hook))
    if metadata is not None:
        detail["NotificationMetadata"] = metadata
    kind = "launch" if action.transition == LAUNCHING else "terminate"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": f"EC2 Instance-{kind} Lifecycle Action",
        "source": "aws.autoscaling",
        "account": backend.account_id,
        "time": action.started_at[:19] + "Z",
        "region": backend.region_name,
        "resources": [group.arn],
        "detail": detail,
    }


def active_action(backend: AutoScalingBackend, group: str, hook: str, token: str | None, instance_id: str | None) -> LifecycleAction:
    for action in state_of(backend).actions:
        if action.group != group or action.hook != hook:
            continue
        if token and action.token == token:
            return action
        if not token and instance_id and action.instance_id == instance_id:
            return action
    # AWS's words (an unmodeled ValidationError, matched by code and message).
    if token:
        raise ValidationError(f"No active Lifecycle Action found with token {token}")
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


# ---------------------------------------------------------------------------
# Moving instances
# ---------------------------------------------------------------------------


def register_in_attached_groups(backend: AutoScalingBackend, group: FakeAutoScalingGroup, instance_id: str) -> None:
    for arn in group.target_group_arns:
        tg = backend.elbv2_backend.target_groups.get(arn)
        if tg is not None:
            backend.elbv2_backend.register_targets(arn, [{"Id": instance_id, "Port": tg.port}])


def deregister_from_attached_groups(backend: AutoScalingBackend, group: FakeAutoScalingGroup, instance_id: str) -> None:
    # moto leaves targets of scaled-in instances registered and "healthy";
    # AWS deregisters (and drains) them before the instance leaves.
    for arn in group.target_group_arns:
        tg = backend.elbv2_backend.target_groups.get(arn)
        if tg is not None and instance_id in tg.targets:
            tg.deregister([{"Id": instance_id}])


def finish_termination(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """Removes the instance from the group, then terminates it in EC2 (so moto's
    terminate notification does not launch a replacement a second time)."""
    group.instance_states = [s for s in group.instance_states if s is not st]
    deregister_from_attached_groups(backend, group, st.instance.id)
    backend.ec2_backend.terminate_instances([st.instance.id])


def begin_termination(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """Scale-in or terminate-in-group: deregister first (AWS drains before the
    hook), then wait in ``Terminating:Wait`` while a terminating hook exists."""
    deregister_from_attached_groups(backend, group, st.instance.id)
    origin = "WarmPool" if st.lifecycle_state in WARMED else "AutoScalingGroup"
    if begin_actions(backend, group, st, TERMINATING, origin, "EC2"):
        st.lifecycle_state = "Terminating:Wait"
    else:
        finish_termination(backend, group, st)


def proceed_launch(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    if st.lifecycle_state == "Warmed:Pending:Wait":
        # Into the pool: stopped until the group needs it.
        st.lifecycle_state = "Warmed:Stopped"
        st.instance.stop()
        return
    st.lifecycle_state = "InService"
    register_in_attached_groups(backend, group, st.instance.id)


def abandon_launch(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """ABANDON on launch terminates the instance; the group replaces it."""
    sim = state_of(backend)
    sim.actions = [a for a in sim.actions if a.instance_id != st.instance.id]
    finish_termination(backend, group, st)
    group.set_desired_capacity(group.desired_capacity)


def launch_instances(group: FakeAutoScalingGroup, count: int, warm_pool: bool = False) -> list[InstanceState]:
    """Replaces moto's ``replace_autoscaling_group_instances``: one instance at a
    time, each in the subnet of the least-populated AZ (moto puts them all in
    the first subnet), each held by the group's launching hooks."""
    backend = group.autoscaling_backend
    tags = group.get_propagated_tags()
    tags[ASG_NAME_TAG] = group.name
    tags.update(group.instance_tags)
    subnets = [s for s in (group.vpc_zone_identifier or "").split(",") if s]
    launch_template = None
    if group.ec2_launch_template:
        if group.ec2_launch_template.id:
            launch_template = {"LaunchTemplateId": group.ec2_launch_template.id}
        elif group.ec2_launch_template.name:
            launch_template = {"LaunchTemplateName": group.ec2_launch_template.name}
    associate_public_ip = group.launch_config.associate_public_ip_address if group.launch_config else None
    created = []
    for _ in range(count):
        subnet_id, zone = pick_subnet(group, subnets)
        reservation = backend.ec2_backend.run_instances(
            group.image_id,
            1,
            group.user_data,
            group.security_groups,
            instance_type=group.instance_type,
            tags={"instance": dict(tags)},
            placement=zone,
            launch_config=group.launch_config,
            launch_template=launch_template,
            is_instance_type_default=False,
            associate_public_ip=associate_public_ip,
            subnet_id=subnet_id,
        )
        for instance in reservation.instances:
            instance.autoscaling_group = group  # type: ignore[attr-defined]
            st = InstanceState(instance, protected_from_scale_in=group.new_instances_protected_from_scale_in)
            group.instance_states.append(st)
            destination = "WarmPool" if warm_pool else "AutoScalingGroup"
            if begin_actions(backend, group, st, LAUNCHING, "EC2", destination):
                st.lifecycle_state = "Warmed:Pending:Wait" if warm_pool else "Pending:Wait"
            elif warm_pool:
                st.lifecycle_state = "Warmed:Stopped"
                instance.stop()
            created.append(st)
    return created


def pick_subnet(group: FakeAutoScalingGroup, subnets: list[str]) -> tuple[str | None, str]:
    if not subnets:
        zones = group.availability_zones
        counts = {z: 0 for z in zones}
        for st in group.instance_states:
            counts[st.instance.placement.zone] = counts.get(st.instance.placement.zone, 0) + 1
        return None, min(zones, key=lambda z: (counts.get(z, 0), zones.index(z)))
    by_subnet = []
    for index, subnet_id in enumerate(subnets):
        zone = group.ec2_backend.get_subnet(subnet_id).availability_zone
        in_zone = sum(1 for st in group.instance_states if st.instance.placement.zone == zone)
        by_subnet.append((in_zone, index, subnet_id, zone))
    _, _, subnet_id, zone = min(by_subnet)
    return subnet_id, zone


# ---------------------------------------------------------------------------
# Patched model methods
# ---------------------------------------------------------------------------


def active_instances(self: FakeAutoScalingGroup) -> list[InstanceState]:
    # moto counts only InService; instances held in Pending:Wait count toward
    # the desired capacity too (else every describe would launch more).
    return [x for x in self.instance_states if x.lifecycle_state in COUNTED]


_original_set_desired_capacity = FakeAutoScalingGroup.set_desired_capacity


def set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
    if self.mixed_instances_policy:
        return _original_set_desired_capacity(self, new_capacity)
    with LOCK:
        self.desired_capacity = self.min_size if new_capacity is None else new_capacity
        backend = self.autoscaling_backend
        counted = self.active_instances()
        delta = (self.desired_capacity or 0) - len(counted)
        if delta > 0:
            launch_instances(self, delta)
        elif delta < 0:
            # moto picks from every instance, including ones already leaving.
            candidates = [s for s in counted if not s.protected_from_scale_in][: -delta]
            for st in candidates:
                begin_termination(backend, self, st)
        if self.name in backend.autoscaling_groups:
            backend.update_attached_elbs(self.name)
            backend.update_attached_target_groups(self.name)


def replace_autoscaling_group_instances(self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]) -> None:
    with LOCK:
        launch_instances(self, count_needed)


def update_attached_target_groups(self: AutoScalingBackend, group_name: str) -> None:
    # moto registers every instance of the group, including those waiting on
    # a launch hook; AWS registers an instance only when it enters service.
    group = self.autoscaling_groups[group_name]
    for st in group.instance_states:
        if st.lifecycle_state == "InService":
            register_in_attached_groups(self, group, st.instance.id)


def terminate_instance(self: AutoScalingBackend, instance_id: str, should_decrement: bool) -> TerminateInstanceActivity:
    with LOCK:
        found = find_state(self, instance_id)
        if found is None:
            # moto answers HTTP 500 (StopIteration) here.
            raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
        group, st = found
        original_size = group.desired_capacity
        begin_termination(self, group, st)
        if should_decrement:
            group.desired_capacity = max((group.desired_capacity or 0) - 1, 0)
        group.set_desired_capacity(group.desired_capacity)
        return TerminateInstanceActivity(st.instance, original_size)


def complete_lifecycle_action(self: AutoScalingBackend, group_name: str, hook: str, token: str | None, instance_id: str | None, result: str) -> None:
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid LifecycleActionResult {result}")
    with LOCK:
        action = active_action(self, group_name, hook, token, instance_id)
        sim = state_of(self)
        sim.actions.remove(action)
        sim.history.append(
            {
                "Kind": "complete",
                "AutoScalingGroupName": group_name,
                "LifecycleHookName": hook,
                "InstanceId": action.instance_id,
                "Transition": action.transition,
                "Result": result,
                "By": "token" if token else "instance_id",
                "Time": now(self),
            }
        )
        found = find_state(self, action.instance_id)
        if found is None:
            return
        group, st = found
        if action.transition == LAUNCHING:
            if result == "ABANDON":
                abandon_launch(self, group, st)
            elif not any(a.instance_id == st.instance.id for a in sim.actions):
                proceed_launch(self, group, st)
        else:
            if result == "ABANDON":
                # ABANDON on terminate skips the remaining hooks.
                sim.actions = [a for a in sim.actions if a.instance_id != st.instance.id]
            if not any(a.instance_id == st.instance.id for a in sim.actions):
                finish_termination(self, group, st)


def record_lifecycle_action_heartbeat(self: AutoScalingBackend, group_name: str, hook: str, token: str | None, instance_id: str | None) -> None:
    with LOCK:
        action = active_action(self, group_name, hook, token, instance_id)
        action.heartbeats += 1
        state_of(self).history.append(
            {
                "Kind": "heartbeat",
                "AutoScalingGroupName": group_name,
                "LifecycleHookName": hook,
                "InstanceId": action.instance_id,
                "Transition": action.transition,
                "By": "token" if token else "instance_id",
                "Time": now(self),
            }
        )


# ---------------------------------------------------------------------------
# Warm pool control (used by the control endpoints)
# ---------------------------------------------------------------------------


def warm_pool_launch(backend: AutoScalingBackend, group_name: str, count: int) -> list[str]:
    with LOCK:
        group = backend.autoscaling_groups[group_name]
        return [st.instance.id for st in launch_instances(group, count, warm_pool=True)]


def warm_pool_promote(backend: AutoScalingBackend, instance_id: str) -> str:
    """The group scales out by one and takes this instance from its pool."""
    with LOCK:
        found = find_state(backend, instance_id)
        if found is None:
            raise ValidationError(f"Instance {instance_id} is not in an Auto Scaling group")
        group, st = found
        if st.lifecycle_state not in ("Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"):
            raise ValidationError(f"Instance {instance_id} is {st.lifecycle_state}, not waiting in the warm pool")
        if st.instance.state != "running":
            st.instance.start()
        group.desired_capacity = (group.desired_capacity or 0) + 1
        if begin_actions(backend, group, st, LAUNCHING, "WarmPool", "AutoScalingGroup"):
            st.lifecycle_state = "Pending:Wait"
        else:
            proceed_launch(backend, group, st)
        return st.lifecycle_state


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def response_complete_lifecycle_action(self: AutoScalingResponse) -> EmptyResult:
    self.autoscaling_backend.complete_lifecycle_action(
        group_name=self._get_param("AutoScalingGroupName"),
        hook=self._get_param("LifecycleHookName"),
        token=self._get_param("LifecycleActionToken"),
        instance_id=self._get_param("InstanceId"),
        result=self._get_param("LifecycleActionResult"),
    )
    return EmptyResult()


def response_record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> EmptyResult:
    self.autoscaling_backend.record_lifecycle_action_heartbeat(
        group_name=self._get_param("AutoScalingGroupName"),
        hook=self._get_param("LifecycleHookName"),
        token=self._get_param("LifecycleActionToken"),
        instance_id=self._get_param("InstanceId"),
    )
    return EmptyResult()


_original_put_lifecycle_hook = AutoScalingResponse.put_lifecycle_hook


def response_put_lifecycle_hook(self: AutoScalingResponse) -> Any:
    result = _original_put_lifecycle_hook(self)
    group, hook = self._get_param("AutoScalingGroupName"), self._get_param("LifecycleHookName")
    metadata = self._get_param("NotificationMetadata")
    sim = state_of(self.autoscaling_backend)
    if metadata is None:
        sim.metadata.pop((group, hook), None)
    else:
        sim.metadata[(group, hook)] = metadata
    return result


def notify_terminate_instances(self: AutoScalingBackend, instance_ids: list[str]) -> None:
    """EC2 terminated (or stopped) these instances: the group notices at its
    next health check, not at once (moto removes and replaces them here)."""
    with LOCK:
        sim = state_of(self)
        noticed = clock.now(self.account_id) + HEALTH_CHECK_PERIOD
        for instance_id in instance_ids:
            if find_state(self, instance_id) is not None:
                sim.notices.setdefault(instance_id, noticed)


def health_checks(backend: AutoScalingBackend) -> None:
    """Runs the health checks that are due: an instance whose EC2 state is
    not running is unhealthy and terminates through the group. Lazy: called
    on each request that reads the groups. Call under LOCK."""
    sim = state_of(backend)
    now = clock.now(backend.account_id)
    for group in backend.autoscaling_groups.values():
        for st in group.instance_states:
            stopped = st.instance.state in ("stopping", "stopped", "shutting-down", "terminated")
            if stopped and st.lifecycle_state == "InService" and st.instance.id not in sim.notices:
                sim.notices[st.instance.id] = now + HEALTH_CHECK_PERIOD
    for instance_id, due in list(sim.notices.items()):
        if now < due:
            continue
        del sim.notices[instance_id]
        found = find_state(backend, instance_id)
        if found is None:
            continue
        group, st = found
        if st.lifecycle_state.startswith("Terminating") or st.instance.state == "running":
            continue
        st.health_status = "Unhealthy"
        begin_termination(backend, group, st)
        group.set_desired_capacity(group.desired_capacity)


def _checked(original: Any) -> Any:
    def method(self: AutoScalingBackend, *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            health_checks(self)
        return original(self, *args, **kwargs)

    return method


def apply() -> list[str]:
    """Installs the patches; returns their names."""
    FakeAutoScalingGroup.active_instances = active_instances  # type: ignore[method-assign]
    FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity  # type: ignore[method-assign]
    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances  # type: ignore[method-assign]
    AutoScalingBackend.update_attached_target_groups = update_attached_target_groups  # type: ignore[method-assign]
    AutoScalingBackend.terminate_instance = terminate_instance  # type: ignore[method-assign]
    AutoScalingBackend.complete_lifecycle_action = complete_lifecycle_action  # type: ignore[attr-defined]
    AutoScalingBackend.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat  # type: ignore[attr-defined]
    AutoScalingResponse.complete_lifecycle_action = response_complete_lifecycle_action  # type: ignore[attr-defined]
    AutoScalingResponse.record_lifecycle_action_heartbeat = response_record_lifecycle_action_heartbeat  # type: ignore[attr-defined]
    AutoScalingResponse.put_lifecycle_hook = response_put_lifecycle_hook  # type: ignore[method-assign]
    AutoScalingBackend.notify_terminate_instances = notify_terminate_instances  # type: ignore[method-assign]
    for name in ("describe_auto_scaling_groups", "describe_auto_scaling_instances"):
        setattr(AutoScalingBackend, name, _checked(getattr(AutoScalingBackend, name)))
    assert asg_models.FakeAutoScalingGroup is FakeAutoScalingGroup
    return [
        "autoscaling: lifecycle hooks hold instances in Pending:Wait / Terminating:Wait",
        "autoscaling: CompleteLifecycleAction, RecordLifecycleActionHeartbeat",
        "autoscaling: attached target groups register on CONTINUE, deregister on scale-in",
        "autoscaling: instances spread over VPCZoneIdentifier subnets",
        "autoscaling: NotificationMetadata kept for lifecycle events",
        "autoscaling: instances terminated outside the group are noticed at the next health check",
    ]
