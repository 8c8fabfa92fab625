"""Lifecycle-hook, warm-pool and hook-timeout simulation for moto's Auto
Scaling backend.

moto 5.2.5 stores lifecycle hooks but never acts on them: new instances go
straight to ``InService``, ``CompleteLifecycleAction`` and
``RecordLifecycleActionHeartbeat`` answer HTTP 500, no lifecycle event is
emitted, hooks never time out, every instance lands in the first subnet of
``VPCZoneIdentifier``, and a warm pool is a stored configuration with no
instances. This module fills exactly those gaps, the way an upstream
contribution would: by extending the models, with each change commented
with the AWS behaviour it models and where AWS documents it.

Sources (Amazon EC2 Auto Scaling User Guide, "UG", and API Reference, "API",
https://docs.aws.amazon.com/autoscaling/ec2/userguide/ and .../APIReference/):

* UG "Amazon EC2 Auto Scaling lifecycle hooks" (lifecycle-hooks.html)
* UG "Complete a lifecycle action" (completing-lifecycle-hooks.html)
* UG "Use lifecycle hooks with a warm pool" (warm-pool-instance-lifecycle.html)
* UG "Warm pool event types and patterns" (warm-pools-eventbridge-events.html)
* UG "Decrease latency ... using warm pools" (ec2-auto-scaling-warm-pools.html)
* UG "Configure instance retention" (configure-instance-retention.html)
* API PutLifecycleHook, LifecycleHook, TerminateInstanceInAutoScalingGroup,
  DescribeWarmPool, AutoScalingInstanceDetails, AutoScalingGroup

What it does:

* Launch: with a launching hook on the group, a new instance waits in
  ``Pending:Wait`` (``Warmed:Pending:Wait`` when launched into a warm pool)
  until every hook's action is completed. Attached target groups register it
  only on ``CONTINUE``; ``ABANDON`` terminates it (and the group replaces it).
* Terminate: scale-in and ``TerminateInstanceInAutoScalingGroup`` deregister
  the instance from attached target groups and hold it in
  ``Terminating:Wait`` while a terminating hook exists.
* Warm pool (``PutWarmPool``): pool instances (every ``Warmed:*`` state) are
  listed by ``DescribeWarmPool`` and ``DescribeAutoScalingInstances``, not in
  ``DescribeAutoScalingGroups``' ``Instances``; they never count toward the
  desired capacity. With ``InstanceReusePolicy.ReuseOnScaleIn`` a scale-in
  returns the instance to the pool (deregistered first; terminating hooks
  hold it in ``Warmed:Pending:Wait`` with Origin ``AutoScalingGroup`` and
  Destination ``WarmPool``); it then rests in the pool's ``PoolState``. A
  scale-out takes ready pool instances first (Origin ``WarmPool``). A pool
  instance that is terminated waits in ``Warmed:Terminating:Wait`` (Origin
  ``WarmPool``, Destination ``EC2``); ``TerminateInstanceInAutoScalingGroup``
  refuses pool instances, as AWS documents.
* Timeouts: every action has a heartbeat deadline (start or last heartbeat +
  ``HeartbeatTimeout``) and a global deadline (start + ``GlobalTimeout`` =
  min(48 h, 100 x ``HeartbeatTimeout``), which ``DescribeLifecycleHooks``
  now reports). When one passes on the account's test clock the hook's
  ``DefaultResult`` applies as ``CompleteLifecycleAction`` would, recorded in
  the history as ``Kind: timeout``; the token is then no longer active.
  Evaluated lazily at each Auto Scaling request (and each read of the control
  endpoints), at the time the deadline passed.
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

Not modelled: the pool's automatic sizing (filling to ``MinSize`` /
``MaxGroupPreparedCapacity``, shrinking when over-provisioned; tests play it
with the control endpoints), ``DeleteWarmPool`` terminating the pool's
instances, replacement of unhealthy pool instances.
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
    LifecycleHook,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult

from . import clock

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"

#: How often the group checks its instances' EC2 state (AWS documents the
#: checks as periodic; 60 s is the period we model).
HEALTH_CHECK_PERIOD = datetime.timedelta(seconds=60)

#: API PutLifecycleHook, HeartbeatTimeout: "The default value is 3600
#: seconds (1 hour)" (moto applies it).
DEFAULT_HEARTBEAT_TIMEOUT = 3600
#: API LifecycleHook, GlobalTimeout: "The maximum time, in seconds, that an
#: instance can remain in a wait state. The maximum is 172800 seconds (48
#: hours) or 100 times HeartbeatTimeout, whichever is smaller." UG "Amazon
#: EC2 Auto Scaling lifecycle hooks": "The global timeout is 48 hours or 100
#: times the heartbeat timeout, whichever is smaller."
MAX_GLOBAL_TIMEOUT = 172800
#: Timeouts applied per evaluation at most: an ABANDONed launch is replaced
#: and the replacement can time out in turn; a clock moved days ahead would
#: otherwise cycle without end (AWS "limits the rate at which it allows
#: instances to launch if the lifecycle hooks are failing consistently"; the
#: rate is not documented). What is left is applied at the next request.
MAX_TIMEOUTS_PER_EVALUATION = 100

#: States that count toward the group's desired capacity.
COUNTED = {"Pending", "Pending:Wait", "Pending:Proceed", "InService"}
#: Pool instances ready to leave the pool (lifecycle actions done).
WARM_READY = {"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"}
#: Waits of a terminating lifecycle action.
TERMINATING_WAITS = {"Terminating:Wait", "Warmed:Terminating:Wait", "Warmed:Pending:Wait"}

# moto's server handles requests on threads and its models take no locks; the
# simulation's read-modify-write sequences (complete an action, then move the
# instance) must not interleave.
LOCK = threading.RLock()

# While a timeout is applied, the simulation's "now" is the moment the
# deadline passed, so what follows from it (events, a replacement's actions
# and their deadlines) is dated as AWS would date it.
_AT = threading.local()


def in_pool(st: InstanceState) -> bool:
    """A warm-pool instance: every ``Warmed:*`` state (API LifecycleState)."""
    return st.lifecycle_state.startswith("Warmed:")


@dataclass
class LifecycleAction:
    """One hook's pending action on one instance. The timeouts and the
    default result are the hook's when the action started."""

    token: str
    group: str
    hook: str
    instance_id: str
    transition: str
    origin: str
    destination: str
    started_at: str
    heartbeats: int = 0
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
    global_timeout: int = MAX_GLOBAL_TIMEOUT
    default_result: str = "ABANDON"
    #: Start or last heartbeat + HeartbeatTimeout (ISO, test clock).
    heartbeat_deadline: str = ""
    #: Start + GlobalTimeout (ISO, test clock); heartbeats never move it.
    global_deadline: str = ""

    def deadline(self) -> tuple[datetime.datetime, str]:
        """The first deadline to pass and which one it is."""
        heartbeat, overall = parse(self.heartbeat_deadline), parse(self.global_deadline)
        return (overall, "global") if overall <= heartbeat else (heartbeat, "heartbeat")


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


def parse(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def at(backend: AutoScalingBackend) -> datetime.datetime:
    """The account's time on the test clock (or the deadline being applied)."""
    t = getattr(_AT, "t", None)
    return t if t is not None else clock.now(backend.account_id)


def now(backend: AutoScalingBackend) -> str:
    """The account's time on the test clock, as AWS writes it in events."""
    return clock.iso(at(backend))


def hooks_for(backend: AutoScalingBackend, group: str, transition: str) -> list[Any]:
    return [h for h in backend.lifecycle_hooks.values() if h.auto_scaling_group_name == group and h.lifecycle_transition == transition]


def find_state(backend: AutoScalingBackend, instance_id: str) -> tuple[FakeAutoScalingGroup, InstanceState] | None:
    for group in backend.autoscaling_groups.values():
        for st in group.instance_states:
            if st.instance.id == instance_id:
                return group, st
    return None


def pending_on(backend: AutoScalingBackend, instance_id: str) -> bool:
    return any(a.instance_id == instance_id for a in state_of(backend).actions)


def drop_actions(backend: AutoScalingBackend, instance_id: str) -> None:
    sim = state_of(backend)
    sim.actions = [a for a in sim.actions if a.instance_id != instance_id]


# ---------------------------------------------------------------------------
# Events and actions
# ---------------------------------------------------------------------------


def begin_actions(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState, transition: str, origin: str, destination: str) -> bool:
    """Opens one action per hook of ``transition``; returns whether any hook exists."""
    hooks = hooks_for(backend, group.name, transition)
    sim = state_of(backend)
    started_at = now(backend)
    start = parse(started_at)
    for hook in hooks:
        heartbeat_timeout = int(hook.heartbeat_timeout)
        global_timeout = int(hook.global_timeout)
        action = LifecycleAction(
            token=str(uuid.uuid4()),
            group=group.name,
            hook=hook.name,
            instance_id=st.instance.id,
            transition=transition,
            origin=origin,
            destination=destination,
            started_at=started_at,
            heartbeat_timeout=heartbeat_timeout,
            global_timeout=global_timeout,
            default_result=hook.default_result,
            heartbeat_deadline=clock.iso(start + datetime.timedelta(seconds=heartbeat_timeout)),
            global_deadline=clock.iso(start + datetime.timedelta(seconds=global_timeout)),
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


def resolve(backend: AutoScalingBackend, action: LifecycleAction, result: str, record: dict[str, Any]) -> None:
    """Ends ``action`` with ``result`` (a completion or a timeout: AWS applies
    the DefaultResult on timeout exactly as a completion with that result)
    and moves the instance on once no action holds it any more."""
    sim = state_of(backend)
    sim.actions = [a for a in sim.actions if a is not action]
    sim.history.append(record)
    found = find_state(backend, action.instance_id)
    if found is None:
        return
    group, st = found
    iid = st.instance.id
    if action.transition == LAUNCHING:
        if st.lifecycle_state not in ("Pending:Wait", "Warmed:Pending:Wait"):
            return
        if result == "ABANDON":
            abandon_launch(backend, group, st)
        elif not pending_on(backend, iid):
            proceed_launch(backend, group, st)
        return
    if st.lifecycle_state not in TERMINATING_WAITS:
        return
    if result == "ABANDON":
        # ABANDON on terminate skips the remaining hooks.
        drop_actions(backend, iid)
    if pending_on(backend, iid):
        return
    if action.destination == "WarmPool" and result == "CONTINUE":
        # Back to the pool (UG "Use lifecycle hooks with a warm pool").
        enter_pool(backend, group, st)
    else:
        # UG "Use Capacity Rebalancing ...": on a terminate hook "Both
        # ABANDON and CONTINUE let the instance terminate". ABANDON of a
        # return to the pool also terminates it: inferred, not documented
        # (the retention docs treat any abandoned terminating action as a
        # termination; LifecycleState has Warmed:Pending:Retained for it).
        finish_termination(backend, group, st)


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
    drop_actions(backend, st.instance.id)
    group.instance_states = [s for s in group.instance_states if s is not st]
    deregister_from_attached_groups(backend, group, st.instance.id)
    backend.ec2_backend.terminate_instances([st.instance.id])


def reuse_on_scale_in(group: FakeAutoScalingGroup) -> bool:
    """API InstanceReusePolicy.ReuseOnScaleIn: "Specifies whether instances in
    the Auto Scaling group can be returned to the warm pool on scale in."
    (moto keeps the policy as given: ``{"ReuseOnScaleIn": True}``)."""
    pool = getattr(group, "warm_pool", None)
    policy = getattr(pool, "instance_reuse_policy", None) or {}
    value = policy.get("ReuseOnScaleIn")
    return value is True or str(value).lower() == "true"


def hibernation_configured(group: FakeAutoScalingGroup) -> bool:
    try:
        data = group.ec2_launch_template.get_version(group.launch_template_version).data
    except Exception:  # a launch configuration, or no such version
        return False
    configured = (data.get("HibernationOptions") or {}).get("Configured")
    return configured is True or str(configured).lower() == "true"


def pool_state(group: FakeAutoScalingGroup) -> str:
    """API WarmPoolConfiguration.PoolState: "The instance state to transition
    to after the lifecycle actions are complete" (default ``Stopped``). UG
    warm pools: instances that do not meet the hibernation requirements
    "will fallback to being stopped instead of being hibernated"."""
    pool = getattr(group, "warm_pool", None)
    wanted = getattr(pool, "pool_state", None) or "Stopped"
    if wanted == "Running":
        return "Warmed:Running"
    if wanted == "Hibernated" and hibernation_configured(group):
        return "Warmed:Hibernated"
    return "Warmed:Stopped"


def enter_pool(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """The instance rests in the pool in the pool's state (a hibernated
    instance is ``stopped`` in EC2)."""
    st.lifecycle_state = pool_state(group)
    if st.lifecycle_state == "Warmed:Running":
        if st.instance.state != "running":
            st.instance.start()
    elif st.instance.state != "stopped":
        st.instance.stop()


def begin_termination(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState, scale_in: bool = False) -> None:
    """An instance leaves: from the pool (``Warmed:Terminating:Wait``), back
    to the pool (a scale-in with ``ReuseOnScaleIn``), or out of the group
    (``Terminating:Wait``). A waiting terminating hook holds it."""
    # Whatever action held the instance (a launch still waiting) cannot be
    # completed any more: the instance is on another path now.
    drop_actions(backend, st.instance.id)
    if in_pool(st):
        # A terminated pool instance: the LifecycleState enum has
        # Warmed:Terminating:Wait / Warmed:Terminated for it, and UG "Warm
        # pool event types and patterns" lists Origin WarmPool; the pause at
        # Warmed:Terminating:Wait is inferred (no doc sentence describes it).
        if begin_actions(backend, group, st, TERMINATING, "WarmPool", "EC2"):
            st.lifecycle_state = "Warmed:Terminating:Wait"
        else:
            finish_termination(backend, group, st)
        return
    # Deregister first: AWS drains before the hook.
    deregister_from_attached_groups(backend, group, st.instance.id)
    if scale_in and reuse_on_scale_in(group) and not getattr(group, "_fleetkeeper_deleting", False):
        # UG "Use lifecycle hooks with a warm pool": "if you specify an
        # instance reuse policy to return instances to the warm pool on scale
        # in instead of terminating them, then an instance that is returning
        # to the warm pool pauses to perform a custom action at the
        # Warmed:Pending:Wait state for the EC2_INSTANCE_TERMINATING
        # lifecycle action." UG "Warm pool event types and patterns", example
        # 4: Origin AutoScalingGroup, Destination WarmPool.
        if begin_actions(backend, group, st, TERMINATING, "AutoScalingGroup", "WarmPool"):
            st.lifecycle_state = "Warmed:Pending:Wait"
        else:
            enter_pool(backend, group, st)
        return
    if begin_actions(backend, group, st, TERMINATING, "AutoScalingGroup", "EC2"):
        st.lifecycle_state = "Terminating:Wait"
    else:
        finish_termination(backend, group, st)


def proceed_launch(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    if st.lifecycle_state == "Warmed:Pending:Wait":
        # Into the pool: stopped (or the pool's state) until the group needs it.
        enter_pool(backend, group, st)
        return
    st.lifecycle_state = "InService"
    register_in_attached_groups(backend, group, st.instance.id)


def abandon_launch(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """ABANDON on launch terminates the instance; the group replaces it (UG
    lifecycle hooks: "Amazon EC2 Auto Scaling automatically terminates and
    replaces the instance")."""
    drop_actions(backend, st.instance.id)
    finish_termination(backend, group, st)
    group.set_desired_capacity(group.desired_capacity)


def leave_pool(backend: AutoScalingBackend, group: FakeAutoScalingGroup, st: InstanceState) -> None:
    """A pool instance joins the group: ``Pending:Wait`` with Origin
    ``WarmPool`` while a launching hook exists (UG "Use lifecycle hooks with
    a warm pool"; "As instances leave the warm pool, they count toward the
    desired capacity of the group")."""
    if st.instance.state != "running":
        st.instance.start()
    if begin_actions(backend, group, st, LAUNCHING, "WarmPool", "AutoScalingGroup"):
        st.lifecycle_state = "Pending:Wait"
    else:
        proceed_launch(backend, group, st)


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
                enter_pool(backend, group, st)
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
# Timeouts
# ---------------------------------------------------------------------------


def expire_actions(backend: AutoScalingBackend) -> None:
    """Applies the DefaultResult of every action whose deadline has passed,
    oldest deadline first, at the moment it passed. Call under LOCK.

    API LifecycleHook.HeartbeatTimeout: "If the lifecycle hook times out,
    Amazon EC2 Auto Scaling performs the action that you specified in the
    DefaultResult property." API PutLifecycleHook.DefaultResult: "The action
    the Auto Scaling group takes when the lifecycle hook timeout elapses ...
    The default value is ABANDON." UG "Configure instance retention": an
    action is abandoned "when ... the heartbeat timeout is reached without
    receiving a heartbeat" and "when the global timeout is reached"."""
    sim = state_of(backend)
    real_now = clock.now(backend.account_id)
    for _ in range(MAX_TIMEOUTS_PER_EVALUATION):
        due = [(action.deadline(), index, action) for index, action in enumerate(sim.actions)]
        due = [d for d in due if d[0][0] <= real_now]
        if not due:
            return
        (when, which), _, action = min(due, key=lambda d: (d[0][0], d[1]))
        _AT.t = when
        try:
            resolve(
                backend,
                action,
                action.default_result,
                {
                    "Kind": "timeout",
                    "AutoScalingGroupName": action.group,
                    "LifecycleHookName": action.hook,
                    "InstanceId": action.instance_id,
                    "Transition": action.transition,
                    "Result": action.default_result,
                    "Deadline": which,
                    "Time": clock.iso(when),
                },
            )
        finally:
            _AT.t = None


def global_timeout(self: LifecycleHook) -> int:
    # moto reports 172800 whatever the heartbeat timeout (API LifecycleHook.
    # GlobalTimeout: "172800 seconds (48 hours) or 100 times
    # HeartbeatTimeout, whichever is smaller").
    return min(MAX_GLOBAL_TIMEOUT, 100 * int(self.heartbeat_timeout or DEFAULT_HEARTBEAT_TIMEOUT))


def _ignore_global_timeout(self: LifecycleHook, value: Any) -> None:
    """moto's constructor assigns 172800; the value is derived instead."""


# ---------------------------------------------------------------------------
# Patched model methods
# ---------------------------------------------------------------------------


def active_instances(self: FakeAutoScalingGroup) -> list[InstanceState]:
    # moto counts only InService; instances held in Pending:Wait count toward
    # the desired capacity too (else every describe would launch more).
    # Pool instances do not: UG warm pools, "As instances leave the warm
    # pool, they count toward the desired capacity of the group".
    return [x for x in self.instance_states if x.lifecycle_state in COUNTED]


def group_instances(self: FakeAutoScalingGroup) -> list[InstanceState]:
    """``AutoScalingGroup.Instances`` without the pool. API PutWarmPool: "A
    warm pool is a pool of pre-initialized EC2 instances that sits alongside
    the Auto Scaling group ... You can view the instances in the warm pool
    using the DescribeWarmPool API call"; the group reports the pool's size
    apart (``WarmPoolSize``). No doc sentence says it outright (inferred)."""
    return [x for x in self.instance_states if not in_pool(x)]


def pool_instances(group: FakeAutoScalingGroup) -> list[InstanceState]:
    return [x for x in group.instance_states if in_pool(x)]


def warm_pool_size(self: FakeAutoScalingGroup) -> int | None:
    """API AutoScalingGroup.WarmPoolSize: "The current size of the warm pool."
    (Counts every Warmed:* instance; whether AWS counts terminating ones is
    not documented.)"""
    pool = pool_instances(self)
    if getattr(self, "warm_pool", None) is None and not pool:
        return None
    return len(pool)


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
            # UG warm pools: "Whenever your application needs to scale out,
            # the Auto Scaling group can draw on the warm pool to meet its new
            # desired capacity"; "If your warm pool is depleted when there is
            # a scale-out event, instances will launch directly into the Auto
            # Scaling group (a cold start)".
            ready = [s for s in self.instance_states if s.lifecycle_state in WARM_READY][:delta]
            for st in ready:
                leave_pool(backend, self, st)
            if delta > len(ready):
                launch_instances(self, delta - len(ready))
        elif delta < 0:
            # moto picks from every instance, including ones already leaving.
            candidates = [s for s in counted if not s.protected_from_scale_in][: -delta]
            for st in candidates:
                begin_termination(backend, self, st, scale_in=True)
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
        if in_pool(st):
            # API TerminateInstanceInAutoScalingGroup: "This operation cannot
            # be called on instances in a warm pool." (The code is AWS's
            # usual ValidationError; the message is ours, not verified.)
            raise ValidationError(f"Instance {instance_id} is in the warm pool ({st.lifecycle_state}): TerminateInstanceInAutoScalingGroup cannot be called on instances in a warm pool")
        original_size = group.desired_capacity
        # Terminates even with ReuseOnScaleIn: the reuse policy covers scale
        # in (API InstanceReusePolicy); this call "Terminates the specified
        # instance" (API TerminateInstanceInAutoScalingGroup).
        begin_termination(self, group, st)
        if should_decrement:
            group.desired_capacity = max((group.desired_capacity or 0) - 1, 0)
        group.set_desired_capacity(group.desired_capacity)
        return TerminateInstanceActivity(st.instance, original_size)


_original_delete_auto_scaling_group = AutoScalingBackend.delete_auto_scaling_group


def delete_auto_scaling_group(self: AutoScalingBackend, group_name: str) -> None:
    # moto deletes a group by scaling it to 0 first: that is no scale-in,
    # nothing returns to the pool.
    group = self.autoscaling_groups.get(group_name)
    if group is not None:
        group._fleetkeeper_deleting = True  # type: ignore[attr-defined]
    try:
        _original_delete_auto_scaling_group(self, group_name)
    finally:
        if group is not None:
            group._fleetkeeper_deleting = False  # type: ignore[attr-defined]


def complete_lifecycle_action(self: AutoScalingBackend, group_name: str, hook: str, token: str | None, instance_id: str | None, result: str) -> None:
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid LifecycleActionResult {result}")
    with LOCK:
        action = active_action(self, group_name, hook, token, instance_id)
        resolve(
            self,
            action,
            result,
            {
                "Kind": "complete",
                "AutoScalingGroupName": group_name,
                "LifecycleHookName": hook,
                "InstanceId": action.instance_id,
                "Transition": action.transition,
                "Result": result,
                "By": "token" if token else "instance_id",
                "Time": now(self),
            },
        )


def record_lifecycle_action_heartbeat(self: AutoScalingBackend, group_name: str, hook: str, token: str | None, instance_id: str | None) -> None:
    with LOCK:
        action = active_action(self, group_name, hook, token, instance_id)
        action.heartbeats += 1
        # UG "Complete a lifecycle action": a heartbeat restarts the timeout
        # period: "if the timeout period is one hour, and you call this
        # command after 30 minutes, the instance remains in a wait state for
        # an additional hour, or a total of 90 minutes". The global deadline
        # does not move.
        beat = parse(now(self))
        action.heartbeat_deadline = clock.iso(beat + datetime.timedelta(seconds=action.heartbeat_timeout))
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
        evaluate(backend)
        group = backend.autoscaling_groups[group_name]
        return [st.instance.id for st in launch_instances(group, count, warm_pool=True)]


def warm_pool_promote(backend: AutoScalingBackend, instance_id: str) -> str:
    """The group scales out by one and takes this instance from its pool."""
    with LOCK:
        evaluate(backend)
        found = find_state(backend, instance_id)
        if found is None:
            raise ValidationError(f"Instance {instance_id} is not in an Auto Scaling group")
        group, st = found
        if st.lifecycle_state not in WARM_READY:
            raise ValidationError(f"Instance {instance_id} is {st.lifecycle_state}, not waiting in the warm pool")
        group.desired_capacity = (group.desired_capacity or 0) + 1
        leave_pool(backend, group, st)
        return st.lifecycle_state


def warm_pool_terminate(backend: AutoScalingBackend, instance_id: str) -> str:
    """AWS terminates this pool instance (the pool shrinks: UG warm pools,
    "Amazon EC2 Auto Scaling can terminate instances in the warm pool to
    reduce its size when it is larger than necessary"). Returns its state:
    ``Warmed:Terminating:Wait`` while a terminating hook holds it, else
    ``Warmed:Terminated``."""
    with LOCK:
        evaluate(backend)
        found = find_state(backend, instance_id)
        if found is None:
            raise ValidationError(f"Instance {instance_id} is not in an Auto Scaling group")
        group, st = found
        if not in_pool(st) or "Terminating" in st.lifecycle_state:
            raise ValidationError(f"Instance {instance_id} is {st.lifecycle_state}, not in the warm pool")
        begin_termination(backend, group, st)
        return st.lifecycle_state if find_state(backend, instance_id) is not None else "Warmed:Terminated"


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


#: API DescribeWarmPool, MaxRecords: "The maximum value is 50."
WARM_POOL_PAGE = 50


def response_describe_warm_pool(self: AutoScalingResponse) -> ActionResult:
    # moto answers "Instances": [] always; API DescribeWarmPool.Instances:
    # "The instances that are currently in the warm pool." (InstanceId,
    # InstanceType, AvailabilityZone, LifecycleState, HealthStatus,
    # LaunchTemplate / LaunchConfigurationName, ProtectedFromScaleIn).
    group_name = self._get_param("AutoScalingGroupName")
    backend = self.autoscaling_backend
    config = backend.describe_warm_pool(group_name=group_name)
    with LOCK:
        pool = pool_instances(backend.autoscaling_groups[group_name])
    size = min(self._get_int_param("MaxRecords") or WARM_POOL_PAGE, WARM_POOL_PAGE)
    token = self._get_param("NextToken")
    try:
        start = int(token) if token else 0
    except ValueError as e:
        raise ValidationError(f"Invalid NextToken {token}") from e
    page = pool[start : start + size]
    next_token = str(start + size) if start + size < len(pool) else None
    return ActionResult({"WarmPoolConfiguration": config, "Instances": page, "NextToken": next_token})


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
        if "Terminating" in st.lifecycle_state or st.instance.state == "running":
            continue
        st.health_status = "Unhealthy"
        begin_termination(backend, group, st)
        group.set_desired_capacity(group.desired_capacity)


def evaluate(backend: AutoScalingBackend) -> None:
    """Everything timed that is due on the account's clock: lifecycle action
    timeouts, then health checks. Lazy: nothing runs in the background."""
    with LOCK:
        if getattr(_AT, "t", None) is not None:
            return  # already applying a timeout (never nested)
        expire_actions(backend)
        health_checks(backend)


def _checked(original: Any) -> Any:
    def method(self: AutoScalingBackend, *args: Any, **kwargs: Any) -> Any:
        evaluate(self)
        return original(self, *args, **kwargs)

    return method


_original_call_action = AutoScalingResponse.call_action


def call_action(self: AutoScalingResponse) -> Any:
    # Every Auto Scaling request first catches the account up with its clock.
    evaluate(self.autoscaling_backend)
    return _original_call_action(self)


CHECKED = (
    "describe_auto_scaling_groups",
    "describe_auto_scaling_instances",
    "describe_warm_pool",
    "describe_lifecycle_hooks",
    "complete_lifecycle_action",
    "record_lifecycle_action_heartbeat",
)


def apply() -> list[str]:
    """Installs the patches; returns their names."""
    FakeAutoScalingGroup.active_instances = active_instances  # type: ignore[method-assign]
    FakeAutoScalingGroup.instances = property(group_instances)  # type: ignore[assignment,method-assign]
    FakeAutoScalingGroup.warm_pool_size = property(warm_pool_size)  # type: ignore[attr-defined]
    FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity  # type: ignore[method-assign]
    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances  # type: ignore[method-assign]
    LifecycleHook.global_timeout = property(global_timeout, _ignore_global_timeout)  # type: ignore[assignment,method-assign]
    AutoScalingBackend.update_attached_target_groups = update_attached_target_groups  # type: ignore[method-assign]
    AutoScalingBackend.terminate_instance = terminate_instance  # type: ignore[method-assign]
    AutoScalingBackend.delete_auto_scaling_group = delete_auto_scaling_group  # type: ignore[method-assign]
    AutoScalingBackend.complete_lifecycle_action = complete_lifecycle_action  # type: ignore[attr-defined]
    AutoScalingBackend.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat  # type: ignore[attr-defined]
    AutoScalingResponse.complete_lifecycle_action = response_complete_lifecycle_action  # type: ignore[attr-defined]
    AutoScalingResponse.record_lifecycle_action_heartbeat = response_record_lifecycle_action_heartbeat  # type: ignore[attr-defined]
    AutoScalingResponse.put_lifecycle_hook = response_put_lifecycle_hook  # type: ignore[method-assign]
    AutoScalingResponse.describe_warm_pool = response_describe_warm_pool  # type: ignore[method-assign]
    AutoScalingResponse.call_action = call_action  # type: ignore[method-assign]
    AutoScalingBackend.notify_terminate_instances = notify_terminate_instances  # type: ignore[method-assign]
    for name in CHECKED:
        setattr(AutoScalingBackend, name, _checked(getattr(AutoScalingBackend, name)))
    assert asg_models.FakeAutoScalingGroup is FakeAutoScalingGroup
    return [
        "autoscaling: lifecycle hooks hold instances in Pending:Wait / Terminating:Wait",
        "autoscaling: CompleteLifecycleAction, RecordLifecycleActionHeartbeat",
        "autoscaling: attached target groups register on CONTINUE, deregister on scale-in",
        "autoscaling: instances spread over VPCZoneIdentifier subnets",
        "autoscaling: NotificationMetadata kept for lifecycle events",
        "autoscaling: instances terminated outside the group are noticed at the next health check",
        "autoscaling: warm pool instances listed by DescribeWarmPool only (not in the group's Instances)",
        "autoscaling: ReuseOnScaleIn returns scaled-in instances to the pool via Warmed:Pending:Wait",
        "autoscaling: scale-out draws on the warm pool; pool terminations wait in Warmed:Terminating:Wait",
        "autoscaling: lifecycle actions time out (heartbeat and global deadlines) with the hook's DefaultResult",
        "autoscaling: DescribeLifecycleHooks GlobalTimeout = min(172800, 100 x HeartbeatTimeout)",
    ]
