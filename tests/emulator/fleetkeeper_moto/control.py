"""Control endpoints of the patched emulator, under ``/moto-api/fleetkeeper/``.

moto routes unsigned requests it cannot place as S3, except paths under
``/moto-api``; these endpoints live there. They let a test play the parts AWS
plays on its own: read the lifecycle events AWS would have sent, move
instances through a warm pool, register or disconnect an instance's SSM
agent, and decide how a command invocation ends.

All take and return JSON. ``region`` defaults to ``us-east-1`` and
``account`` to moto's default account.

=====  =============================================  =====================================================
verb   path                                           body / query
=====  =============================================  =====================================================
GET    health                                         the applied patches
GET    clock                                          ``?account``: the account's now (epoch ms) and offset
POST   clock                                          ``{account, advance_ms}``: moves the account's clock
GET    readiness                                      ``?account&region``: the readiness delays (seconds)
POST   readiness                                      ``{account?, region?, pending_s?, agent_s?,
                                                      mount_target_s?, healthy_s?, not_found_s?}``: sets the
                                                      delays given, in seconds (readiness.py)
GET    calls                                          ``?key``: recorded AWS calls of keys with that prefix
POST   calls/forget                                   ``{key}``: forgets them
GET    calls/seen                                     every (caller tag, service, operation) served since the
                                                      start, across accounts, never forgotten
GET    autoscaling/lifecycle-events                   ``?region&group&after``: EventBridge events, oldest first,
                                                      from position ``after``; ``next`` is the next position
GET    s3/events                                      ``?region&bucket&after``: S3 EventBridge object events
GET    ssm/status-events                              ``?region&after``: Run Command status-change events
GET    ssm/deliveries                                 ``?region&document``: invocations delivered to an agent
                                                      and not yet taken
POST   ssm/claim                                      ``{command_id, instance_id}``: an agent takes one
GET    autoscaling/lifecycle-actions                  ``?region&group``: pending actions (with their
                                                      ``heartbeat_deadline`` and ``global_deadline``) and the history
POST   autoscaling/warm-pool/launch                   ``{group, count}``: new instances into the warm pool
POST   autoscaling/warm-pool/promote                  ``{instance_id}``: the group takes it from the pool
POST   autoscaling/warm-pool/terminate                ``{instance_id}``: AWS terminates a pool instance (the pool
                                                      shrinks); ``Warmed:Terminating:Wait`` while a hook holds it
POST   ssm/managed-instance                           ``{instance_id, ping_status|null, agent_version}``
POST   ssm/invocation-status                          ``{command_id, instance_id?, status, response_code?,
                                                      stdout?, stderr?, source?}``: an invocation ends
=====  =============================================  =====================================================
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from moto.autoscaling.models import autoscaling_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import ServiceException
from moto.ssm.models import ssm_backends
from werkzeug.wrappers import Request, Response

from . import autoscaling, clock, readiness, recorder, s3, ssm

PREFIX = "/moto-api/fleetkeeper/"


class BadRequest(Exception):
    pass


def backend_args(params: dict[str, Any]) -> tuple[str, str]:
    return params.get("account") or DEFAULT_ACCOUNT_ID, params.get("region") or "us-east-1"


def required(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    if value in (None, ""):
        raise BadRequest(f"{key} is required")
    return value


def lifecycle_events(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    autoscaling.evaluate(autoscaling_backends[account][region])  # hook timeouts due on the clock
    sim = autoscaling.state_of(autoscaling_backends[account][region])
    group = p.get("group")
    after = int(p.get("after") or 0)
    with autoscaling.LOCK:
        log = list(sim.events)
    events = [e for e in log[after:] if group is None or e["detail"]["AutoScalingGroupName"] == group]
    return {"events": events, "next": len(log)}


def s3_events(p: dict[str, Any]) -> Any:
    account, _ = backend_args(p)
    events, nxt = s3.events(account, int(p.get("after") or 0), p.get("bucket"))
    return {"events": events, "next": nxt}


def ssm_status_events(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    events, nxt = ssm.status_events(ssm_backends[account][region], int(p.get("after") or 0))
    return {"events": events, "next": nxt}


def ssm_deliveries(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    return {"deliveries": ssm.deliveries(ssm_backends[account][region], p.get("document"))}


def ssm_claim(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    return {"claimed": ssm.claim(ssm_backends[account][region], required(p, "command_id"), required(p, "instance_id"))}


def lifecycle_actions(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    autoscaling.evaluate(autoscaling_backends[account][region])  # hook timeouts due on the clock
    sim = autoscaling.state_of(autoscaling_backends[account][region])
    group = p.get("group")
    pending = [dataclasses.asdict(a) for a in sim.actions if group is None or a.group == group]
    history = [h for h in sim.history if group is None or h["AutoScalingGroupName"] == group]
    return {"pending": pending, "history": history}


def warm_pool_launch(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    ids = autoscaling.warm_pool_launch(autoscaling_backends[account][region], required(p, "group"), int(p.get("count", 1)))
    return {"instance_ids": ids}


def warm_pool_promote(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    state = autoscaling.warm_pool_promote(autoscaling_backends[account][region], required(p, "instance_id"))
    return {"lifecycle_state": state}


def warm_pool_terminate(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    state = autoscaling.warm_pool_terminate(autoscaling_backends[account][region], required(p, "instance_id"))
    return {"lifecycle_state": state}


def managed_instance(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    if "ping_status" not in p:
        raise BadRequest("ping_status is required (null unregisters the agent)")
    ssm.set_managed_instance(ssm_backends[account][region], required(p, "instance_id"), p["ping_status"], p.get("agent_version"), p.get("platform_type"))
    return {"ok": True}


def invocation_status(p: dict[str, Any]) -> Any:
    """``status`` is the outcome as the instance reports it, in
    ``StatusDetails`` spelling (``Success``, ``Failed``,
    ``ExecutionTimedOut``, ``Undeliverable``...); ``TimedOut`` is read as
    ``ExecutionTimedOut``. ``source: agent`` marks a report from the
    instance's agent, which is dropped when the agent can no longer reach
    SSM (the instance stopped, terminated or lost its connection)."""
    account, region = backend_args(p)
    details = required(p, "status")
    if details == "TimedOut":
        details = "ExecutionTimedOut"
    changed = ssm.set_invocation_status(
        ssm_backends[account][region],
        required(p, "command_id"),
        p.get("instance_id"),
        details,
        p.get("response_code"),
        p.get("stdout"),
        p.get("stderr"),
        p.get("source") == "agent",
    )
    return {"changed": changed}


def clock_get(p: dict[str, Any]) -> Any:
    account, _ = backend_args(p)
    return {"account": account, "now_ms": clock.now_ms(account), "offset_ms": clock.offset_ms(account)}


def clock_advance(p: dict[str, Any]) -> Any:
    account, _ = backend_args(p)
    try:
        offset = clock.advance(account, int(required(p, "advance_ms")))
    except ValueError as e:
        raise BadRequest(str(e)) from e
    return {"account": account, "now_ms": clock.now_ms(account), "offset_ms": offset}


def calls_get(p: dict[str, Any]) -> Any:
    return {"calls": recorder.calls(required(p, "key"))}


def calls_seen(p: dict[str, Any]) -> Any:
    return {"seen": recorder.seen()}


def calls_forget(p: dict[str, Any]) -> Any:
    return {"forgotten": recorder.forget(required(p, "key"))}


def readiness_get(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    return readiness.current(account, region)


def readiness_set(p: dict[str, Any]) -> Any:
    account, region = backend_args(p)
    try:
        return readiness.configure(account, region, {k: v for k, v in p.items() if k not in ("account", "region")})
    except ValueError as e:
        raise BadRequest(str(e)) from e


ROUTES: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
    ("GET", "clock"): clock_get,
    ("POST", "clock"): clock_advance,
    ("GET", "readiness"): readiness_get,
    ("POST", "readiness"): readiness_set,
    ("GET", "calls"): calls_get,
    ("POST", "calls/forget"): calls_forget,
    ("GET", "calls/seen"): calls_seen,
    ("GET", "autoscaling/lifecycle-events"): lifecycle_events,
    ("GET", "autoscaling/lifecycle-actions"): lifecycle_actions,
    ("GET", "s3/events"): s3_events,
    ("GET", "ssm/status-events"): ssm_status_events,
    ("GET", "ssm/deliveries"): ssm_deliveries,
    ("POST", "ssm/claim"): ssm_claim,
    ("POST", "autoscaling/warm-pool/launch"): warm_pool_launch,
    ("POST", "autoscaling/warm-pool/promote"): warm_pool_promote,
    ("POST", "autoscaling/warm-pool/terminate"): warm_pool_terminate,
    ("POST", "ssm/managed-instance"): managed_instance,
    ("POST", "ssm/invocation-status"): invocation_status,
}


class ControlApp:
    """WSGI middleware: the control endpoints, then moto for everything else."""

    def __init__(self, moto_app: Any, patches: list[str]):
        self.moto_app = moto_app
        self.patches = patches

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            who = recorder.caller(environ)
            recorder.set_current(who[0] if who else None)
            if who is None:
                return self.moto_app(environ, start_response)
            key, service = who
            op = recorder.operation(environ, service)

            def recording_start_response(status: str, headers: Any, *rest: Any) -> Any:
                recorder.record(key, service, op, status.split(" ", 1)[0])
                return start_response(status, headers, *rest)

            return self.moto_app(environ, recording_start_response)
        request = Request(environ)
        return self.handle(request, path[len(PREFIX) :])(environ, start_response)

    def handle(self, request: Request, route: str) -> Response:
        if request.method == "GET" and route == "health":
            return reply(200, {"ok": True, "patches": self.patches})
        handler = ROUTES.get((request.method, route))
        if handler is None:
            return reply(404, {"error": f"no control endpoint {request.method} {route}"})
        params: dict[str, Any] = dict(request.args)
        if request.method == "POST":
            try:
                body = json.loads(request.get_data(as_text=True) or "{}")
            except json.JSONDecodeError:
                return reply(400, {"error": "body is not JSON"})
            if not isinstance(body, dict):
                return reply(400, {"error": "body must be a JSON object"})
            params.update(body)
        try:
            return reply(200, handler(params))
        except BadRequest as e:
            return reply(400, {"error": str(e)})
        except ServiceException as e:
            return reply(400, {"error": e.message, "code": e.code})
        except KeyError as e:
            return reply(404, {"error": f"not found: {e}"})


def reply(status: int, body: Any) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")
