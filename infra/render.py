#!/usr/bin/env python3
"""Renders infra/template.yaml from its sources, so each has one home:

* infra/template.src.yaml  -- the stack, with three placeholders;
* infra/sync-document.yaml -- the SSM document (``__DOCUMENT__``);
* the functions' permission manifests (``fleetkeeper::permissions``, read
  from ``target/debug/permissions json``) -- each role's statements
  (``# __POLICY <function>__``);
* the lifecycle hooks of the three group slots (``__HOOKS__``).

``python3 infra/render.py`` writes the template; ``--check`` fails when the
checked-in template differs from a fresh rendering (tests/infra runs it).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
PERMISSIONS = ROOT / "target" / "debug" / "permissions"

#: The group slots and the condition that says a slot is used.
SLOTS = [("GroupName1", None), ("GroupName2", "HasGroup2"), ("GroupName3", "HasGroup3")]


def slot_list(item: str) -> list[str]:
    """One list entry per used group slot; ``item`` formats one group-name
    expression (``{group}``: the slot's parameter)."""
    lines = []
    for param, condition in SLOTS:
        value = item.format(group=param)
        lines.append(f"- {value}" if condition is None else f"- !If [{condition}, {value}, !Ref AWS::NoValue]")
    return lines


def resource(scope: str) -> tuple[list[str], str | None]:
    """(the statement's Resource and Condition lines, the CloudFormation
    condition the statement needs) of a manifest scope."""
    arn = "arn:${AWS::Partition}"
    here = "${AWS::Region}:${AWS::AccountId}"
    if scope == "any":
        return ['Resource: "*"'], None
    if scope == "document":
        return [f'Resource: !Sub "{arn}:ssm:{here}:document/${{FleetName}}-codebase-sync"'], "HasCodebase"
    if scope == "fleet-instances":
        groups = ["      " + line for line in slot_list("!Ref {group}")]
        head = [f'Resource: !Sub "{arn}:ec2:{here}:instance/*"', "Condition:", "  StringEquals:"]
        return head + ["    ssm:resourceTag/aws:autoscaling:groupName:"] + groups, "HasCodebase"
    if scope == "lock-table":
        return ["Resource: !GetAtt LockTable.Arn"], None
    if scope == "codebase-bucket":
        lines = [f'Resource: !Sub "{arn}:s3:::${{CodebaseBucket}}"', "Condition:", "  StringLike:"]
        return lines + ['    s3:prefix: [!Sub "${CodebasePrefix}*"]'], "HasCodebase"
    if scope == "fleet-groups":
        prefix = f"{arn}:autoscaling:{here}:autoScalingGroup:*:autoScalingGroupName/".replace("{", "{{").replace("}", "}}")
        group_arn = '!Sub "' + prefix + '${{{group}}}"'
        return ["Resource:"] + ["  " + line for line in slot_list(group_arn)], None
    if scope == "target-groups":
        return ["Resource: !Ref TargetGroupArns"], "HasTargetGroups"
    if scope == "file-system":
        return [f'Resource: !Sub "{arn}:elasticfilesystem:{here}:file-system/${{FileSystemId}}"'], "HasFileSystem"
    if scope == "network-interfaces":
        kinds = ["network-interface", "subnet", "security-group"]
        return ["Resource:"] + [f'  - !Sub "{arn}:ec2:{here}:{kind}/*"' for kind in kinds], "HasFileSystem"
    if scope == "retrigger-queue":
        return ["Resource: !GetAtt LifecycleRetriggerQueue.Arn"], None
    if scope == "sync-trigger-queue":
        # codebase-sync's delayed-start queue (created with the codebase).
        return ["Resource: !GetAtt SyncTriggerQueue.Arn"], "HasCodebase"
    if scope == "release-marker":
        # The marker object only. CodebasePrefix is empty or ends in "/", and
        # the functions read <prefix><marker> (FLEET_CODEBASE_PREFIX is the
        # same prefix with a leading "/", which they strip).
        return [f'Resource: !Sub "{arn}:s3:::${{CodebaseBucket}}/${{CodebasePrefix}}${{ReleaseMarker}}"'], "HasReleaseMarker"
    if scope == "codebase-bucket-settings":
        # The bucket itself, no condition: a bucket-level read such as
        # GetBucketVersioning carries no s3:prefix, so codebase-bucket's
        # condition would deny it.
        return [f'Resource: !Sub "{arn}:s3:::${{CodebaseBucket}}"'], "HasCodebase"
    if scope == "stack-rules":
        # The template's rules: every one is named <FleetName>-fk-<what>.
        return [f'Resource: !Sub "{arn}:events:{here}:rule/${{FleetName}}-fk-*"'], None
    if scope == "stack-functions":
        functions = [
            ("LifecycleHookFunction", None),
            ("MountTargetsFunction", "HasFileSystem"),
            ("CodebaseSyncFunction", "HasCodebase"),
            ("SyncCompletionFunction", "HasCodebase"),
        ]
        lines = ["Resource:"]
        for name, condition in functions:
            value = f"!GetAtt {name}.Arn"
            lines.append(f"  - {value}" if condition is None else f"  - !If [{condition}, {value}, !Ref AWS::NoValue]")
        return lines, None
    if scope == "sync-function":
        # --via-lambda invokes codebase-sync only.
        return ["Resource: !GetAtt CodebaseSyncFunction.Arn"], "HasCodebase"
    if scope == "manifests":
        # Exact releases: the fleet's own prefix of the stack's manifest
        # bucket (manifests/<FLEET_NAME>/<sha256>.jsonl.gz), never the bucket.
        return [f'Resource: !Sub "{arn}:s3:::${{ManifestBucket}}/manifests/${{FleetName}}/*"'], "HasManifestBucket"
    raise SystemExit(f"render.py: unknown scope {scope!r} (add it here and in fleetkeeper::permissions)")


def statements(grants: list[dict], indent: str) -> str:
    """The role's statements, one per grant, in the manifest's order; one
    whose resource may not exist is under its condition."""
    out: list[str] = []
    for n, g in enumerate(grants, 1):
        sid = "".join(part.capitalize() for part in g["scope"].split("-")) + str(n)
        res, condition = resource(g["scope"])
        body = [f"Sid: {sid}", "Effect: Allow", f"Action: [{', '.join(g['actions'])}]"] + res
        out.append(f"# {g['why']}")
        if condition is None:
            out += ["- " + body[0]] + ["  " + line for line in body[1:]]
        else:
            out += ["- !If", f"  - {condition}", "  - " + body[0]] + ["    " + line for line in body[1:]]
            out.append("  - !Ref AWS::NoValue")
    return "\n".join(indent + line for line in out)


HOOK = """  {name}:
    Type: AWS::AutoScaling::LifecycleHook
    Condition: {condition}
    DependsOn: [LifecycleHookFunction, LifecycleHookFunctionLifecycleActions, LifecycleHookFunctionLifecycleActionsPermission]
    Properties:
      AutoScalingGroupName: !Ref {group}
      LifecycleHookName: !Sub "${{FleetName}}-{kind}"
      LifecycleTransition: autoscaling:EC2_INSTANCE_{transition}
      DefaultResult: !Ref HookDefaultResult
      HeartbeatTimeout: !FindInMap [Reconcile, !Ref ReconcileIntervalMinutes, HeartbeatTimeout]
"""


def hooks() -> str:
    out = []
    for n, (group, condition) in enumerate(SLOTS, 1):
        for kind, transition in (("launch", "LAUNCHING"), ("terminate", "TERMINATING")):
            out.append(
                HOOK.format(
                    name=f"{kind.capitalize()}Hook{n}",
                    condition=f"Gates{group}",
                    group=group,
                    kind=kind,
                    transition=transition,
                )
            )
    return "\n".join(out)


def manifests() -> dict:
    """The functions' and the operator policies' grants, by marker name."""
    try:
        raw = subprocess.run([str(PERMISSIONS), "json"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"render.py: {PERMISSIONS} json failed ({e}): run `cargo build --workspace` first")
    parsed = json.loads(raw)
    return {**parsed["functions"], **parsed["operators"]}


def render() -> str:
    text = (INFRA / "template.src.yaml").read_text()
    document = (INFRA / "sync-document.yaml").read_text().rstrip("\n").split("\n")
    text = text.replace("        __DOCUMENT__", "\n".join(("        " + line) if line else "" for line in document))
    for function, grants in manifests().items():
        marker = f"            # __POLICY {function}__"
        if marker not in text:
            raise SystemExit(f"render.py: no policy marker for {function}")
        text = text.replace(marker, statements(grants, "            "))
    text = text.replace("__HOOKS__\n", hooks())
    header = "# Rendered by infra/render.py from infra/template.src.yaml: edit those, then run `make template`.\n"
    return header + text


def main() -> int:
    rendered = render()
    target = INFRA / "template.yaml"
    if sys.argv[1:] == ["--check"]:
        if not target.exists() or target.read_text() != rendered:
            print("infra/template.yaml is out of date: run `make template`", file=sys.stderr)
            return 1
        return 0
    target.write_text(rendered)
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
