"""The deployment template, checked offline: rendered from its sources, lint
clean, each role granting exactly its function's manifest (plus the
permissions its triggers imply), every rule wired to a function that may be
invoked by it, every contract variable set, the document the same as
infra/sync-document.yaml, and the IAM policies clean under parliament.

Runs in the infra venv (``make infra-venv``) after ``cargo build`` (it reads
the manifests from ``target/debug/permissions json``).
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
FUNCTIONS = {
    "lifecycle-hook": "LifecycleHookFunction",
    "mount-targets": "MountTargetsFunction",
    "codebase-sync": "CodebaseSyncFunction",
    "sync-completion": "SyncCompletionFunction",
}
#: Permissions a role holds beyond its function's manifest, and why:
#: the service uses the role for the function's triggers and logs.
IMPLIED = {
    "logs:CreateLogGroup": "AWSLambdaBasicExecutionRole (SAM): the function's logs",
    "logs:CreateLogStream": "AWSLambdaBasicExecutionRole (SAM): the function's logs",
    "logs:PutLogEvents": "AWSLambdaBasicExecutionRole (SAM): the function's logs",
    "sqs:SendMessage": "EventInvokeConfig OnFailure: a failed async invocation goes to the dead-letter queue",
    "sqs:ReceiveMessage": "the upload queue's event source mapping (codebase-sync)",
    "sqs:DeleteMessage": "the upload queue's event source mapping (codebase-sync)",
    "sqs:GetQueueAttributes": "the upload queue's event source mapping (codebase-sync)",
    "sqs:ChangeMessageVisibility": "the upload queue's event source mapping (codebase-sync)",
}
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
#: Every optional feature on: the transform then shows every statement.
PARAMETERS = {
    "FleetName": "web",
    "GroupName1": "web-a",
    "GroupName2": "web-b",
    "TargetGroupArns": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef",
    "FileSystemId": "fs-0123456789abcdef0",
    "MountTargetSecurityGroups": "sg-0123456789abcdef0",
    "CodebaseBucket": "web-codebase",
    "CodebasePrefix": "app/",
}


class Loader:
    """The managed policies SAM may attach, by name (no AWS call)."""

    def load(self) -> dict[str, str]:
        return {"AWSLambdaBasicExecutionRole": BASIC_EXECUTION}


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    raw = subprocess.run([str(ROOT / "target" / "debug" / "permissions"), "json"], check=True, capture_output=True, text=True)
    return json.loads(raw.stdout)["functions"]


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


@pytest.fixture(scope="module")
def transformed(source: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(source)
    # What `sam package` does to a local CodeUri.
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/fleetkeeper.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, PARAMETERS, Loader())


def resolve_if(value: Any) -> Any:
    """Takes the true branch of every Fn::If (the PARAMETERS turn every
    feature on) and drops AWS::NoValue."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            return resolve_if(value["Fn::If"][1])
        return {k: resolve_if(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_if(v) for v in value if v != {"Ref": "AWS::NoValue"}]
    return value


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        for s in resolve_if(policy["PolicyDocument"]["Statement"]):
            if s and s != {"Ref": "AWS::NoValue"}:
                out.append(s)
    return out


def actions_of(statement: dict[str, Any]) -> list[str]:
    a = statement["Action"]
    return [a] if isinstance(a, str) else list(a)


def test_the_template_is_rendered_from_its_sources() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "infra" / "render.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cfn_lint_reports_nothing() -> None:
    cfn_lint = pathlib.Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_each_role_grants_exactly_its_manifest_plus_what_its_triggers_imply(
    transformed: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    resources = transformed["Resources"]
    for function, logical in FUNCTIONS.items():
        role = resources[f"{logical}Role"]
        granted = {a for s in statements(role) for a in actions_of(s)}
        wanted = {a for g in manifests[function] for a in g["actions"]}
        assert wanted <= granted, f"{function}: missing {sorted(wanted - granted)}"
        extra = granted - wanted
        assert extra <= set(IMPLIED), f"{function}: grants beyond its manifest {sorted(extra - set(IMPLIED))}"
        managed = role["Properties"].get("ManagedPolicyArns", [])
        assert managed == [BASIC_EXECUTION], f"{function}: managed policies {managed}"


def test_only_actions_without_resource_level_permissions_get_a_wildcard(
    transformed: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    for function, logical in FUNCTIONS.items():
        anywhere = {a for g in manifests[function] if g["scope"] == "any" for a in g["actions"]}
        for s in statements(transformed["Resources"][f"{logical}Role"]):
            if s.get("Resource") == "*":
                assert set(actions_of(s)) <= anywhere, f"{function}: {s}"
            assert "*" not in "".join(actions_of(s)), f"{function}: a wildcard action {s}"


def test_send_command_is_bound_to_the_document_and_to_the_managed_groups_instances(transformed: dict[str, Any]) -> None:
    for function in ("lifecycle-hook", "codebase-sync", "sync-completion"):
        sends = [s for s in statements(transformed["Resources"][f"{FUNCTIONS[function]}Role"]) if "ssm:SendCommand" in actions_of(s)]
        assert len(sends) == 2, f"{function}: {sends}"
        text = json.dumps(sends)
        assert ":document/${FleetName}-codebase-sync" in text and ":instance/*" in text, text
        tagged = [s for s in sends if "instance/*" in json.dumps(s["Resource"])]
        groups = tagged[0]["Condition"]["StringEquals"]["ssm:resourceTag/aws:autoscaling:groupName"]
        assert groups == [{"Ref": "GroupName1"}, {"Ref": "GroupName2"}, {"Ref": "GroupName3"}], groups


def test_every_rule_invokes_an_existing_function_that_allows_it(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    rules = {k: v for k, v in resources.items() if v["Type"] == "AWS::Events::Rule"}
    permissions = [v["Properties"] for v in resources.values() if v["Type"] == "AWS::Lambda::Permission"]
    assert len(rules) >= 6, sorted(rules)
    for name, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            arn = target["Arn"]
            assert target.get("DeadLetterConfig"), f"{name}: an undeliverable event must not vanish"
            if arn == {"Fn::GetAtt": ["UploadQueue", "Arn"]}:
                continue
            function = arn["Fn::GetAtt"][0]
            assert resources[function]["Type"] == "AWS::Lambda::Function", name
            allowed = [p for p in permissions if p["FunctionName"] == {"Ref": function} and p["SourceArn"] == {"Fn::GetAtt": [name, "Arn"]}]
            assert allowed, f"{name}: no AWS::Lambda::Permission for {function}"


def test_the_upload_queue_takes_only_its_rule_and_outlives_the_function(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    policy = resources["UploadQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in policy] == [{"Fn::GetAtt": ["UploadRule", "Arn"]}]
    queue = resources["UploadQueue"]["Properties"]
    timeout = resources["CodebaseSyncFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout, "Lambda: at least six times the function's timeout"
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadDeadLetterQueue", "Arn"]}


def test_every_asynchronous_path_ends_in_a_dead_letter_queue(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for function in ("LifecycleHookFunction", "MountTargetsFunction", "SyncCompletionFunction"):
        config = resources[f"{function}EventInvokeConfig"]["Properties"]
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}


def test_hooks_exist_only_after_their_function_rule_and_permission(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    hooks = {k: v for k, v in resources.items() if v["Type"] == "AWS::AutoScaling::LifecycleHook"}
    assert len(hooks) == 6, sorted(hooks)
    for name, hook in hooks.items():
        needs = set(hook["DependsOn"])
        assert {"LifecycleHookFunction", "LifecycleHookFunctionLifecycleActions", "LifecycleHookFunctionLifecycleActionsPermission"} <= needs, name
        props = hook["Properties"]
        assert props["DefaultResult"] == {"Ref": "HookDefaultResult"}
        assert props["HeartbeatTimeout"]["Fn::FindInMap"][2] == "HeartbeatTimeout"


def test_the_heartbeat_is_above_twice_the_reconcile_interval_for_every_choice(source: dict[str, Any]) -> None:
    choices = source["Parameters"]["ReconcileIntervalMinutes"]["AllowedValues"]
    mapping = source["Mappings"]["Reconcile"]
    assert sorted(mapping) == sorted(choices)
    for minutes in choices:
        row = mapping[minutes]
        assert row["Seconds"] == int(minutes) * 60
        assert row["HeartbeatTimeout"] > 2 * row["Seconds"], row
        assert row["Rate"] == f"rate({minutes} minute{'s' if minutes != '1' else ''})"


def test_every_contract_variable_is_set_for_every_function(source: dict[str, Any]) -> None:
    config = (ROOT / "shared" / "src" / "config.rs").read_text()
    contract = set(re.findall(r'pub const \w+: &str = "(FLEET_\w+)"', config))
    assert len(contract) > 15
    env = source["Globals"]["Function"]["Environment"]["Variables"]
    assert contract <= set(env), f"not set by the template: {sorted(contract - set(env))}"
    assert {k for k in env if k.startswith("FLEET_")} <= contract, "a variable no function reads"


def test_the_document_is_the_one_in_infra(source: dict[str, Any]) -> None:
    embedded = source["Resources"]["SyncDocument"]["Properties"]["Content"]
    assert embedded == yaml.safe_load((ROOT / "infra" / "sync-document.yaml").read_text())
    props = source["Resources"]["SyncDocument"]["Properties"]
    assert (props["UpdateMethod"], props["DocumentType"]) == ("NewVersion", "Command")


def test_the_lock_table_expires_the_attribute_the_code_writes(source: dict[str, Any]) -> None:
    store = (ROOT / "shared" / "src" / "store" / "mod.rs").read_text()
    (attribute,) = re.findall(r'pub const EXPIRES_AT: &str = "(\w+)"', store)
    table = source["Resources"]["LockTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": attribute, "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def placeholders(value: Any) -> Any:
    """Intrinsic functions replaced by plausible ARNs, for parliament."""
    if isinstance(value, dict):
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            subs = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
            return re.sub(r"\$\{([^}]+)\}", lambda m: subs.get(m.group(1), "web-x"), text)
        if "Fn::GetAtt" in value:
            name = value["Fn::GetAtt"][0]
            if "Table" in name:
                return f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"
            return f"arn:aws:sqs:us-east-1:123456789012:{name}"
        if "Ref" in value:
            if value["Ref"] == "TargetGroupArns":
                return PARAMETERS["TargetGroupArns"]
            return "web-a"
        return {k: placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [placeholders(v) for v in value]
    return value


def test_parliament_finds_nothing_in_any_role(transformed: dict[str, Any]) -> None:
    from parliament import analyze_policy_string

    for function, logical in FUNCTIONS.items():
        document = {"Version": "2012-10-17", "Statement": placeholders(statements(transformed["Resources"][f"{logical}Role"]))}
        findings = [f for f in analyze_policy_string(json.dumps(document)).findings if not known_false_positive(f)]
        assert not findings, f"{function}: {[(f.issue, f.detail) for f in findings]}"


def known_false_positive(finding: Any) -> bool:
    """parliament 1.6.4's action table lists only `document` as a resource of
    ssm:SendCommand; the Service Authorization Reference also lists
    `instance` (and AWS's own examples scope SendCommand to tagged instances).
    Nothing else is excused."""
    detail = finding.detail if isinstance(finding.detail, list) else [finding.detail]
    return finding.issue == "RESOURCE_MISMATCH" and all(
        isinstance(d, dict) and d.get("action") == "ssm:SendCommand" for d in detail
    )
