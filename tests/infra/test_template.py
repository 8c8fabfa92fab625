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
#: Permissions a role holds beyond its function's manifest, and why: the
#: service uses the role for the function's triggers (logs come from the
#: AWSLambdaBasicExecutionRole managed policy SAM attaches).
ON_FAILURE = {"sqs:SendMessage"}  # EventInvokeConfig OnFailure -> the events dead-letter queue
POLL = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
IMPLIED = {
    "lifecycle-hook": ON_FAILURE | POLL,  # and the re-trigger queue's event source mapping
    "mount-targets": ON_FAILURE,
    "codebase-sync": POLL,  # the upload and trigger queues' event source mappings
    "sync-completion": ON_FAILURE,
}
#: What a scope's Resource must name (the statement's Sid starts with it).
SCOPE_MARKS = {
    "Any": '"*"',
    "Document": ":document/${FleetName}-codebase-sync",
    "FleetInstances": ":instance/*",
    "LockTable": '"LockTable"',
    "CodebaseBucket": ":s3:::${CodebaseBucket}",
    "FleetGroups": ":autoScalingGroupName/${GroupName1}",
    "TargetGroups": '"TargetGroupArns"',
    "FileSystem": ":file-system/${FileSystemId}",
    "NetworkInterfaces": ":network-interface/*",
    "RetriggerQueue": '"LifecycleRetriggerQueue"',
    "SyncTriggerQueue": '"SyncTriggerQueue"',
    "ReleaseMarker": ":s3:::${CodebaseBucket}/${CodebasePrefix}${ReleaseMarker}",
    # The bucket ARN itself (the closing quote: nothing after it).
    "CodebaseBucketSettings": ':s3:::${CodebaseBucket}"',
    "Manifests": ":s3:::${ManifestBucket}/manifests/${FleetName}/*",
    "StackRules": ":rule/${FleetName}-fk-*",
    "StackFunctions": '"LifecycleHookFunction"',
    "SyncFunction": '"CodebaseSyncFunction"',
}
#: The operator CLI's policies (docs/cli.md#permissions), by manifest name.
OPERATORS = {"operator-read-only": "OperatorReadOnlyPolicy", "operator": "OperatorPolicy"}
#: IAM's limit on a managed policy's document, whitespace not counted.
MANAGED_POLICY_MAX = 6144
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
        assert extra <= IMPLIED[function], f"{function}: grants beyond its manifest {sorted(extra - IMPLIED[function])}"
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


def test_each_grant_names_the_resources_of_its_scope(
    transformed: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    for function, logical in FUNCTIONS.items():
        by_sid = {s["Sid"]: s for s in statements(transformed["Resources"][f"{logical}Role"]) if "Sid" in s}
        for n, grant in enumerate(manifests[function], 1):
            scope = "".join(part.capitalize() for part in grant["scope"].split("-"))
            statement = by_sid[f"{scope}{n}"]
            assert sorted(actions_of(statement)) == sorted(grant["actions"]), f"{function}: {statement}"
            assert SCOPE_MARKS[scope] in json.dumps(statement["Resource"]), f"{function}: {scope}: {statement}"


def operator_manifests() -> dict[str, list[dict[str, Any]]]:
    raw = subprocess.run([str(ROOT / "target" / "debug" / "permissions"), "json"], check=True, capture_output=True, text=True)
    return json.loads(raw.stdout)["operators"]


def longest(value: Any) -> Any:
    """Intrinsics replaced by the longest values they can take: the policy's
    size as IAM counts it after CloudFormation resolves it."""
    if isinstance(value, dict):
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            subs = {
                "AWS::Partition": "aws-us-gov",
                "AWS::Region": "ap-southeast-4",
                "AWS::AccountId": "123456789012",
                "FleetName": "f" * 31,
                # The parameters' MaxLength.
                **{f"GroupName{n}": "g" * 100 for n in (1, 2, 3)},
                "CodebasePrefix": "p" * 200,
                "ReleaseMarker": "m" * 256,
            }
            return re.sub(r"\$\{([^}]+)\}", lambda m: subs.get(m.group(1), "x" * 63), text)
        if "Fn::GetAtt" in value:
            # A function's ARN: its generated name runs to 64 characters.
            return "arn:aws-us-gov:lambda:ap-southeast-4:123456789012:function:" + "x" * 64
        if "Ref" in value:
            # Up to three target groups (the template's note), group names of 100.
            tg = "arn:aws-us-gov:elasticloadbalancing:ap-southeast-4:123456789012:targetgroup/" + "x" * 32 + "/0123456789abcdef"
            return [tg] * 3 if value["Ref"] == "TargetGroupArns" else "g" * 100
        if "Fn::If" in value:
            return longest(value["Fn::If"][1])
        return {k: longest(v) for k, v in value.items()}
    if isinstance(value, list):
        return [longest(v) for v in value if v != {"Ref": "AWS::NoValue"}]
    return value


def test_each_operator_policy_grants_exactly_its_manifest_on_its_scopes_and_fits_a_managed_policy(transformed: dict[str, Any]) -> None:
    manifests = operator_manifests()
    for name, logical in OPERATORS.items():
        policy = transformed["Resources"][logical]
        assert policy["Type"] == "AWS::IAM::ManagedPolicy" and "Condition" not in policy, name
        document = policy["Properties"]["PolicyDocument"]
        stmts = [s for s in resolve_if(document["Statement"]) if s]
        granted = sorted(a for s in stmts for a in actions_of(s))
        wanted = sorted(a for g in manifests[name] for a in g["actions"])
        assert granted == wanted, f"{name}: {sorted(set(granted) ^ set(wanted))}"
        by_sid = {s["Sid"]: s for s in stmts}
        for n, grant in enumerate(manifests[name], 1):
            scope = "".join(part.capitalize() for part in grant["scope"].split("-"))
            assert SCOPE_MARKS[scope] in json.dumps(by_sid[f"{scope}{n}"]["Resource"]), f"{name}: {scope}"
        size = len(re.sub(r"\s", "", json.dumps({"Version": "2012-10-17", "Statement": longest(document["Statement"])})))
        assert size <= MANAGED_POLICY_MAX, f"{name}: {size} characters at the longest"
    read_only = {a for g in manifests["operator-read-only"] for a in g["actions"]}
    assert not [a for a in read_only if re.match(r"[a-z0-9]+:(Put|Update|Send|Create|Delete|Register|Complete|Cancel|Invoke)", a)]


def test_parliament_finds_nothing_in_the_operator_policies(transformed: dict[str, Any]) -> None:
    from parliament import analyze_policy_string

    for name, logical in OPERATORS.items():
        statements_ = resolve_if(transformed["Resources"][logical]["Properties"]["PolicyDocument"]["Statement"])
        document = {"Version": "2012-10-17", "Statement": placeholders([s for s in statements_ if s])}
        findings = [f for f in analyze_policy_string(json.dumps(document)).findings if not known_false_positive(f)]
        assert not findings, f"{name}: {[(f.issue, f.detail) for f in findings]}"


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


def test_the_events_dead_letter_queue_admits_every_rule_of_the_stack(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    (statement,) = resources["EventsDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allowed = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    prefix = allowed.rsplit("rule/", 1)[1].rstrip("*")
    for name, rule in resources.items():
        if rule["Type"] != "AWS::Events::Rule":
            continue
        rule_name = rule["Properties"].get("Name") or rule["Properties"].get("RuleName")
        assert rule_name, f"{name}: unnamed: CloudFormation would shorten a generated name and the policy could miss it"
        text = rule_name["Fn::Sub"] if isinstance(rule_name, dict) else rule_name
        assert text.startswith(prefix), (name, text, prefix)
        assert len(text.replace("${FleetName}", "x" * 31)) <= 64, f"{name}: {text} may exceed 64 characters"


def test_the_upload_queue_takes_only_its_rule_and_outlives_the_function(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    policy = resources["UploadQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in policy] == [{"Fn::GetAtt": ["UploadRule", "Arn"]}]
    queue = resources["UploadQueue"]["Properties"]
    timeout = resources["CodebaseSyncFunction"]["Properties"]["Timeout"]
    window = resources["CodebaseSyncUploads"]["Properties"]["MaximumBatchingWindowInSeconds"]
    assert queue["VisibilityTimeout"] >= 6 * timeout + window, "Lambda: six times the timeout plus the batching window"
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
        kinds = {resources[n]["Type"] for n in needs}
        assert kinds == {"AWS::Lambda::Function", "AWS::Events::Rule", "AWS::Lambda::Permission"}, (name, kinds)
        assert hook["Condition"].startswith("Gates"), f"{name}: a dry run must create no hook"
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
            if name.endswith("Function"):
                return f"arn:aws:lambda:us-east-1:123456789012:function:web-{name}"
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


# ---------------------------------------------------------------------------
# The environment the template gives the functions, run through the contract
# ---------------------------------------------------------------------------

#: What a ``Ref`` to a queue gives (its URL).
QUEUE_URLS = {
    "LifecycleRetriggerQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/web-LifecycleRetriggerQueue-1ABC",
    "SyncTriggerQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/web-SyncTriggerQueue-1ABC",
}
#: What a ``Ref`` to the manifest bucket gives (a generated name: lower case).
MANIFEST_BUCKET = "web-manifestbucket-1a2b3c4d5e6f"
#: Parameter sets a user may deploy: everything on, the bare gate, EFS only,
#: release-marker mode, a long quiet period, exact releases off.
DEPLOYMENTS = {
    "everything": PARAMETERS | {"SyncExcludes": "media/*,.env", "SyncMaxConcurrency": "10%", "CodebaseRegion": "eu-west-1"},
    "release marker": PARAMETERS
    | {"ReleaseMarker": "releases/.release", "SyncMaxDelaySeconds": "300", "SyncMaxShrink": ".25"},
    "slow uploads": PARAMETERS | {"SyncQuietSeconds": "900", "SyncMaxDelaySeconds": "3600", "SyncMaxShrink": "1"},
    "bare": {"FleetName": "web", "GroupName1": "web-a"},
    "efs only": {"FleetName": "web", "GroupName1": "web-a", "FileSystemId": "fs-0123456789abcdef0", "MountTargetSecurityGroups": "sg-0123456789abcdef0"},
    "exact releases off": PARAMETERS | {"ExactReleases": "false"},
}


def parameters_of(source: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in source["Parameters"].items():
        value = given.get(name, p.get("Default", ""))
        if p["Type"] == "CommaDelimitedList":
            out[name] = [v for v in str(value).split(",")] if value != "" else [""]
        else:
            out[name] = str(value)
    return out


def evaluate(source: dict[str, Any], value: Any, params: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """The value CloudFormation would give, for the intrinsics the template's
    environment and conditions use."""
    ev = lambda v: evaluate(source, v, params, conditions)  # noqa: E731
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            if arg in params:
                return params[arg]
            return {
                "LockTable": "web-LockTable-1ABC",
                "SyncDocument": f"{params['FleetName']}-codebase-sync",
                "ManifestBucket": MANIFEST_BUCKET,
                **QUEUE_URLS,
            }[arg]
        if fn == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(params[m.group(1)]), arg)
        if fn == "Fn::Join":
            return arg[0].join(str(x) for x in ev(arg[1]))
        if fn == "Fn::If":
            return ev(arg[1] if conditions[arg[0]] else arg[2])
        if fn == "Fn::FindInMap":
            return source["Mappings"][arg[0]][ev(arg[1])][arg[2]]
        if fn == "Fn::Equals":
            return ev(arg[0]) == ev(arg[1])
        if fn == "Fn::Not":
            return not ev(arg[0])
        if fn == "Fn::And":
            return all(ev(a) for a in arg)
        if fn == "Condition":
            return conditions[arg]
    if isinstance(value, list):
        return [ev(v) for v in value]
    return value


def conditions_of(source: dict[str, Any], params: dict[str, Any]) -> dict[str, bool]:
    conditions: dict[str, bool] = {}
    for name, expr in source["Conditions"].items():  # in order: later ones use earlier ones
        conditions[name] = bool(evaluate(source, expr, params, conditions))
    return conditions


def environments(source: dict[str, Any], given: dict[str, str]) -> dict[str, dict[str, str]]:
    """The environment of each function the stack creates under ``given``:
    the Globals, then the function's own variables (as SAM merges them)."""
    params = parameters_of(source, given)
    conditions = conditions_of(source, params)
    out: dict[str, dict[str, str]] = {}
    for function, logical in FUNCTIONS.items():
        resource = source["Resources"][logical]
        if not conditions.get(resource.get("Condition", ""), True):
            continue
        env = dict(source["Globals"]["Function"]["Environment"]["Variables"])
        env.update(resource["Properties"].get("Environment", {}).get("Variables", {}))
        out[function] = {k: str(evaluate(source, v, params, conditions)) for k, v in env.items()}
    return out


def config_check(envs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Each function's verdict on its environment, as its cold start gives it."""
    checker = ROOT / "target" / "debug" / "config-check"
    done = subprocess.run([str(checker)], input=json.dumps(envs), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_every_function_the_stack_creates_accepts_its_environment(source: dict[str, Any], deployment: str) -> None:
    given = DEPLOYMENTS[deployment]
    for name, value in given.items():
        p = source["Parameters"][name]
        pattern = p.get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), f"{deployment}: {name}={value!r} is refused by the template"
        if p["Type"] == "Number":
            assert p.get("MinValue", 0) <= int(value) <= p.get("MaxValue", int(value)), f"{deployment}: {name}={value}"
    envs = environments(source, given)
    assert "lifecycle-hook" in envs
    verdicts = config_check(envs)
    assert verdicts == {f: None for f in envs}, f"{deployment}: {verdicts}"


def test_the_template_refuses_what_the_functions_would_refuse(source: dict[str, Any]) -> None:
    params = (ROOT / "shared" / "src" / "params.rs").read_text()

    def rust(name: str) -> str:
        (found,) = re.findall(r"pattern!\(\s*" + name + r',\s*"[^"]*",\s*r"([^"]*)"', params)
        return found

    p = source["Parameters"]
    assert p["SyncMaxConcurrency"]["AllowedPattern"] == rust("MAX_CONCURRENCY")
    assert p["SyncMaxErrors"]["AllowedPattern"] == rust("MAX_ERRORS")
    assert p["SyncExcludes"]["AllowedPattern"] == rust("EXCLUDES")
    assert p["CodebasePrefix"]["AllowedPattern"] == rust("PREFIX")
    assert p["SyncDestination"]["AllowedPattern"] == rust("DESTINATION")
    assert p["CodebaseBucket"]["AllowedPattern"] == "^(" + rust("BUCKET")[1:-1] + ")?$"
    assert p["CodebaseRegion"]["AllowedPattern"] == "^(" + rust("REGION")[1:-1] + ")?$"
    assert p["FileSystemId"]["AllowedPattern"] == "^(" + rust("FILE_SYSTEM_ID")[1:-1] + ")?$"
    for reserved in ("aws-web", "amazon", "amzn1"):
        assert not re.fullmatch(p["FleetName"]["AllowedPattern"], reserved), reserved
    rules = source["Rules"]
    assert rules["MountTargetsNeedSecurityGroups"]["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "FileSystemId"}, ""]}]}


def test_the_lifecycle_function_re_triggers_itself_through_its_own_queue(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    env = resources["LifecycleHookFunction"]["Properties"]["Environment"]["Variables"]
    assert env["FLEET_RETRIGGER_QUEUE_URL"] == {"Ref": "LifecycleRetriggerQueue"}
    assert source["Globals"]["Function"]["Environment"]["Variables"]["FLEET_RETRIGGER_QUEUE_URL"] == ""
    esm = resources["LifecycleHookRetriggers"]["Properties"]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["LifecycleRetriggerQueue", "Arn"]}
    assert esm["FunctionName"] == {"Ref": "LifecycleHookFunction"}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "a failed message never redelivers the batch"
    queue = resources["LifecycleRetriggerQueue"]["Properties"]
    timeout = resources["LifecycleHookFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}


# ---------------------------------------------------------------------------
# Consistent releases: the quiet period's queue, the marker, the shrink guard
# ---------------------------------------------------------------------------

#: The release variables and the parameters they come from.
RELEASE_PARAMETERS = {
    "FLEET_SYNC_QUIET_SECONDS": "SyncQuietSeconds",
    "FLEET_SYNC_MAX_DELAY_SECONDS": "SyncMaxDelaySeconds",
    "FLEET_RELEASE_MARKER": "ReleaseMarker",
    "FLEET_SYNC_MAX_SHRINK": "SyncMaxShrink",
    "FLEET_KEEP_RELEASES": "KeepReleases",
}
SYNC_FUNCTIONS = ("codebase-sync", "sync-completion")
#: The functions that name manifests: the sync functions write each wave's,
#: the lifecycle gate's catch-ups name the fleet's.
MANIFEST_READERS = (*SYNC_FUNCTIONS, "lifecycle-hook")


@pytest.mark.parametrize("deployment", ["everything", "release marker", "slow uploads"])
def test_the_release_parameters_reach_both_sync_functions(source: dict[str, Any], deployment: str) -> None:
    given = DEPLOYMENTS[deployment]
    envs = environments(source, given)
    wanted = {var: str(given.get(param, source["Parameters"][param]["Default"])) for var, param in RELEASE_PARAMETERS.items()}
    for function in SYNC_FUNCTIONS:
        assert {var: envs[function][var] for var in RELEASE_PARAMETERS} == wanted, f"{deployment}: {function}"


def test_the_release_defaults_are_the_functions_own(source: dict[str, Any]) -> None:
    config = (ROOT / "shared" / "src" / "config.rs").read_text()

    def const(name: str) -> str:
        (found,) = re.findall(r"pub const " + name + r": [^=]+= ([^;]+);", config)
        return found.strip('"')

    p = source["Parameters"]
    # Empty: the functions' own default, which depends on the marker.
    assert p["SyncQuietSeconds"]["Default"] == ""
    assert f"{const('DEFAULT_QUIET_SECONDS')} (DEFAULT_QUIET_SECONDS)" in p["SyncQuietSeconds"]["Description"]
    assert str(p["SyncMaxDelaySeconds"]["Default"]) == const("DEFAULT_MAX_DELAY_SECONDS")
    assert p["SyncMaxShrink"]["Default"] == const("DEFAULT_MAX_SHRINK")
    assert p["ReleaseMarker"]["Default"] == ""


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_each_function_re_triggers_through_its_own_queue(source: dict[str, Any], deployment: str) -> None:
    envs = environments(source, DEPLOYMENTS[deployment])
    wanted = {
        "lifecycle-hook": QUEUE_URLS["LifecycleRetriggerQueue"],
        "mount-targets": "",
        "codebase-sync": QUEUE_URLS["SyncTriggerQueue"],
        "sync-completion": QUEUE_URLS["SyncTriggerQueue"],
    }
    assert {f: env["FLEET_RETRIGGER_QUEUE_URL"] for f, env in envs.items()} == {f: wanted[f] for f in envs}, deployment
    # The sync functions refuse to start without it while the quiet period
    # is above 0 (SyncSettings, which config-check does not reach).
    for function in SYNC_FUNCTIONS:
        if function not in envs:
            continue
        env = envs[function]
        # Empty is the functions' default: 0 with a marker, else above 0.
        quiet = env["FLEET_SYNC_QUIET_SECONDS"]
        if (int(quiet) if quiet else (0 if env["FLEET_RELEASE_MARKER"] else 1)) > 0:
            assert env["FLEET_RETRIGGER_QUEUE_URL"], f"{deployment}: {function}"


def test_both_sync_functions_send_codebase_syncs_delayed_start_to_its_queue(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    for logical in ("CodebaseSyncFunction", "SyncCompletionFunction"):
        assert resources[logical]["Condition"] == resources["SyncTriggerQueue"]["Condition"] == "HasCodebase", logical
        env = resources[logical]["Properties"]["Environment"]["Variables"]
        assert env["FLEET_RETRIGGER_QUEUE_URL"] == {"Ref": "SyncTriggerQueue"}, logical
    lifecycle = resources["LifecycleHookFunction"]["Properties"]["Environment"]["Variables"]
    assert lifecycle["FLEET_RETRIGGER_QUEUE_URL"] == {"Ref": "LifecycleRetriggerQueue"}
    assert "Environment" not in resources["MountTargetsFunction"]["Properties"]
    assert source["Globals"]["Function"]["Environment"]["Variables"]["FLEET_RETRIGGER_QUEUE_URL"] == ""


def test_codebase_sync_consumes_its_trigger_queue(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    mappings = {
        r["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert {queue: r["Properties"]["FunctionName"] for queue, r in mappings.items()} == {
        "UploadQueue": {"Ref": "CodebaseSyncFunction"},
        "LifecycleRetriggerQueue": {"Ref": "LifecycleHookFunction"},
        "SyncTriggerQueue": {"Ref": "CodebaseSyncFunction"},
    }
    esm = mappings["SyncTriggerQueue"]
    assert esm["Condition"] == "HasCodebase"
    assert "FunctionResponseTypes" not in esm["Properties"], "codebase-sync fails the whole invocation: it reports no item failures"
    assert esm["Properties"]["BatchSize"] == 10
    # Every poller of codebase-sync fits in its reserved concurrency: a
    # message waits in its queue instead of being throttled towards the DLQ.
    reserved = resources["CodebaseSyncFunction"]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][1]
    pollers = [r["Properties"]["ScalingConfig"]["MaximumConcurrency"] for r in mappings.values() if r["Properties"]["FunctionName"] == {"Ref": "CodebaseSyncFunction"}]
    assert sum(pollers) <= reserved, (pollers, reserved)


def test_the_sync_trigger_queue_is_encrypted_and_outlives_the_function(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    queue = resources["SyncTriggerQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * resources["CodebaseSyncFunction"]["Properties"]["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
    assert queue["MessageRetentionPeriod"] > 900, "a message outlives its longest delay (DelaySeconds <= 900)"


def queue_of(resource: Any) -> str:
    """The queue a statement's ``Fn::GetAtt`` Resource names."""
    assert isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}, resource
    target = resource["Fn::GetAtt"]
    return target[0] if isinstance(target, list) else target.split(".")[0]


def test_each_role_sends_and_polls_only_its_own_queues(transformed: dict[str, Any]) -> None:
    sends = {
        "lifecycle-hook": {"LifecycleRetriggerQueue", "EventsDeadLetterQueue"},  # + its on-failure destination
        "mount-targets": {"EventsDeadLetterQueue"},
        "codebase-sync": {"SyncTriggerQueue"},
        "sync-completion": {"SyncTriggerQueue", "EventsDeadLetterQueue"},
    }
    polls = {
        "lifecycle-hook": {"LifecycleRetriggerQueue"},
        "mount-targets": set(),
        "codebase-sync": {"UploadQueue", "SyncTriggerQueue"},
        "sync-completion": set(),
    }
    for function, logical in FUNCTIONS.items():
        role = statements(transformed["Resources"][f"{logical}Role"])
        sent = {queue_of(s["Resource"]) for s in role if "sqs:SendMessage" in actions_of(s)}
        polled = {queue_of(s["Resource"]) for s in role if "sqs:ReceiveMessage" in actions_of(s)}
        assert (sent, polled) == (sends[function], polls[function]), function


def test_the_release_marker_grant_is_that_object_only_and_only_with_a_marker(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    marker_arn = "arn:${AWS::Partition}:s3:::${CodebaseBucket}/${CodebasePrefix}${ReleaseMarker}"
    for function, logical in FUNCTIONS.items():
        role = transformed["Resources"][f"{logical}Role"]
        raw = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        gets = [s for s in raw if "s3:GetObject" in json.dumps(s)]
        if function not in SYNC_FUNCTIONS:
            assert not gets, f"{function}: {gets}"
            continue
        (grant,) = gets
        condition, statement, otherwise = grant["Fn::If"]
        assert (condition, otherwise) == ("HasReleaseMarker", {"Ref": "AWS::NoValue"}), function
        assert actions_of(statement) == ["s3:GetObject"], function
        assert statement["Resource"] == {"Fn::Sub": marker_arn}, function
        assert "Condition" not in statement
    # Only with a codebase and a marker.
    assert source["Conditions"]["HasReleaseMarker"] == {
        "Fn::And": [{"Condition": "HasCodebase"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReleaseMarker"}, ""]}]}]
    }
    for given in (PARAMETERS, {"FleetName": "web", "GroupName1": "web-a", "ReleaseMarker": ".release"}):
        assert not conditions_of(source, parameters_of(source, given))["HasReleaseMarker"], given
    # The ARN names the very key the functions read: <prefix><marker>, with
    # the prefix as FLEET_CODEBASE_PREFIX gives it (a leading "/" stripped).
    for prefix in ("app/", ""):
        given = DEPLOYMENTS["release marker"] | {"CodebasePrefix": prefix}
        params = parameters_of(source, given)
        assert conditions_of(source, params)["HasReleaseMarker"]
        env = environments(source, given)["codebase-sync"]
        key = env["FLEET_CODEBASE_PREFIX"].lstrip("/") + env["FLEET_RELEASE_MARKER"]
        arn = evaluate(source, {"Fn::Sub": marker_arn.replace("${AWS::Partition}", "aws")}, params, {})
        assert arn == f"arn:aws:s3:::{given['CodebaseBucket']}/{key}", (prefix, arn, key)


def test_the_release_parameters_admit_only_what_the_functions_accept(source: dict[str, Any]) -> None:
    p = source["Parameters"]
    base = environments(source, DEPLOYMENTS["everything"])["codebase-sync"]

    def verdict(overrides: dict[str, str]) -> Any:
        return config_check({"codebase-sync": base | overrides})["codebase-sync"]

    quiet, delay = p["SyncQuietSeconds"], p["SyncMaxDelaySeconds"]
    for q in ("", "0", "7", "60", "999", "1000", "2999", "3599", "3600"):
        assert re.fullmatch(quiet["AllowedPattern"], q), q
        assert verdict({"FLEET_SYNC_QUIET_SECONDS": q, "FLEET_SYNC_MAX_DELAY_SECONDS": str(delay["MaxValue"])}) is None, q
    for q in ("3601", "4000", "10000", "-1", "1.5", "60s", "060", " 60"):
        assert not re.fullmatch(quiet["AllowedPattern"], q), q
    assert verdict({"FLEET_SYNC_QUIET_SECONDS": "3601", "FLEET_SYNC_MAX_DELAY_SECONDS": str(delay["MaxValue"])})
    for d in (delay["MinValue"], delay["MaxValue"]):
        assert verdict({"FLEET_SYNC_QUIET_SECONDS": "0", "FLEET_SYNC_MAX_DELAY_SECONDS": str(d)}) is None, d
    assert verdict({"FLEET_SYNC_MAX_DELAY_SECONDS": str(delay["MaxValue"] + 1)})
    # A template cannot compare two parameters: their descriptions say it.
    assert verdict({"FLEET_SYNC_QUIET_SECONDS": "120", "FLEET_SYNC_MAX_DELAY_SECONDS": "60"})
    assert "SyncMaxDelaySeconds" in quiet["Description"] and "SyncQuietSeconds" in delay["Description"]

    shrink = p["SyncMaxShrink"]["AllowedPattern"]
    for value in ("0", "1", "0.5", ".5", ".25", "0.05", "0.99", "1.0", "1.00"):
        assert re.fullmatch(shrink, value) and verdict({"FLEET_SYNC_MAX_SHRINK": value}) is None, value
    for value in ("1.5", "2", "0.123", "1.01", ".", "-0.1", "0,5", "50%"):
        assert not re.fullmatch(shrink, value) and verdict({"FLEET_SYNC_MAX_SHRINK": value}), value

    marker = p["ReleaseMarker"]["AllowedPattern"]
    for value in ("", ".release", "release", "releases/current.txt", "...", "a/.b/..c", "x" * 256):
        assert re.fullmatch(marker, value) and verdict({"FLEET_RELEASE_MARKER": value}) is None, value
    for value in ("x" * 257, "a//b", "a/", "./a", "a/./b", "../a", "a/..", ".", "..", "a b", "a*b", "a\\b"):
        assert not re.fullmatch(marker, value) and verdict({"FLEET_RELEASE_MARKER": value}), value
    # The functions strip a leading "/"; the template refuses it, so that the
    # IAM grant (<prefix><marker>) never names a key with a doubled slash.
    assert not re.fullmatch(marker, "/.release")


# ---------------------------------------------------------------------------
# Exact releases: the manifest bucket, the sync functions' grants, the
# instances' reads
# ---------------------------------------------------------------------------

NO_VALUE = {"Ref": "AWS::NoValue"}
#: The fleet's manifests: the only keys the functions write and the
#: instances read in the manifest bucket.
MANIFESTS_ARN = "arn:${AWS::Partition}:s3:::${ManifestBucket}/manifests/${FleetName}/*"
CODEBASE_BUCKET_ARN = "arn:${AWS::Partition}:s3:::${CodebaseBucket}"
CODEBASE_PREFIX_CONDITION = {"StringLike": {"s3:prefix": [{"Fn::Sub": "${CodebasePrefix}*"}]}}


def without_branches_of(value: Any, condition: str) -> Any:
    """``value`` with every ``Fn::If`` on ``condition`` replaced by its false
    branch: what remains when the condition is false."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"} and value["Fn::If"][0] == condition:
            return without_branches_of(value["Fn::If"][2], condition)
        return {k: without_branches_of(v, condition) for k, v in value.items()}
    if isinstance(value, list):
        return [without_branches_of(v, condition) for v in value]
    return value


def test_the_manifest_bucket_is_private_encrypted_tls_only_and_expires_manifests(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    p = source["Parameters"]
    # On by default, with a codebase.
    assert p["ExactReleases"]["Default"] == "true" and p["ExactReleases"]["AllowedValues"] == ["true", "false"]
    assert "python3" in p["ExactReleases"]["Description"]
    assert source["Conditions"]["HasManifestBucket"] == {
        "Fn::And": [{"Condition": "HasCodebase"}, {"Fn::Equals": [{"Ref": "ExactReleases"}, "true"]}]
    }
    assert conditions_of(source, parameters_of(source, DEPLOYMENTS["everything"]))["HasManifestBucket"]
    assert not conditions_of(source, parameters_of(source, DEPLOYMENTS["bare"]))["HasManifestBucket"]
    bucket = resources["ManifestBucket"]
    assert (bucket["Type"], bucket["Condition"]) == ("AWS::S3::Bucket", "HasManifestBucket")
    props = bucket["Properties"]
    assert "BucketName" not in props, "a generated name never collides with another stack's or account's"
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
    ]
    blocks = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    assert props["PublicAccessBlockConfiguration"] == {b: True for b in blocks}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    # Manifests tagged fleetkeeper-kept=false (as they are written) expire
    # after ManifestRetentionDays; those a rollback may put back are tagged
    # true and never expire. Incomplete uploads are aborted (a rule of its
    # own: S3 takes no tag filter with that action). Every object is under
    # manifests/ (the only prefix the functions may write).
    expire, abort = props["LifecycleConfiguration"]["Rules"]
    assert (expire["Status"], expire["Prefix"]) == ("Enabled", "manifests/")
    assert expire["TagFilters"] == [{"Key": "fleetkeeper-kept", "Value": "false"}]
    assert expire["ExpirationInDays"] == {"Ref": "ManifestRetentionDays"}
    assert "AbortIncompleteMultipartUpload" not in expire
    assert (abort["Status"], abort["Prefix"]) == ("Enabled", "manifests/")
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert set(abort) == {"Id", "Status", "Prefix", "AbortIncompleteMultipartUpload"}, "it expires nothing"
    retention = p["ManifestRetentionDays"]
    assert (retention["Type"], retention["Default"], retention["MinValue"]) == ("Number", 400, 30)
    assert "rollback" in retention["Description"] and "fleetkeeper-kept" in retention["Description"]
    keep = p["KeepReleases"]
    assert (keep["Type"], keep["Default"], keep["MinValue"], keep["MaxValue"]) == ("Number", 3, 2, 20)
    # TLS only, on the bucket and its objects.
    policy = resources["ManifestBucketPolicy"]
    assert policy["Condition"] == "HasManifestBucket"
    assert policy["Properties"]["Bucket"] == {"Ref": "ManifestBucket"}
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["ManifestBucket", "Arn"]}, {"Fn::Sub": "${ManifestBucket.Arn}/*"}]
    output = source["Outputs"]["ManifestBucketName"]
    assert (output["Condition"], output["Value"]) == ("HasManifestBucket", {"Ref": "ManifestBucket"})


def test_without_exact_releases_there_is_no_bucket_and_nothing_names_it(source: dict[str, Any]) -> None:
    given = DEPLOYMENTS["exact releases off"]
    conditions = conditions_of(source, parameters_of(source, given))
    assert conditions["HasCodebase"] and not conditions["HasManifestBucket"]
    # Whatever exists without the condition names the bucket only in a
    # branch the condition removes (no Ref to a resource that is not there).
    for section in ("Resources", "Outputs"):
        for name, item in source[section].items():
            if item.get("Condition") == "HasManifestBucket":
                continue
            text = json.dumps(without_branches_of(item, "HasManifestBucket"))
            assert not re.search(r'"ManifestBucket"|\$\{ManifestBucket\b', text), f"{section}.{name}"
    # The sync functions run without a manifest (empty counts as unset).
    envs = environments(source, given)
    for function in MANIFEST_READERS:
        assert envs[function]["FLEET_MANIFEST_BUCKET"] == "", function


def test_both_sync_functions_write_their_waves_manifests_to_the_stacks_bucket(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    for function in MANIFEST_READERS:
        env = resources[FUNCTIONS[function]]["Properties"]["Environment"]["Variables"]
        assert env["FLEET_MANIFEST_BUCKET"] == {"Fn::If": ["HasManifestBucket", {"Ref": "ManifestBucket"}, ""]}, function
    assert source["Globals"]["Function"]["Environment"]["Variables"]["FLEET_MANIFEST_BUCKET"] == ""
    envs = environments(source, DEPLOYMENTS["everything"])
    for function in MANIFEST_READERS:
        assert envs[function]["FLEET_MANIFEST_BUCKET"] == MANIFEST_BUCKET, function
    assert envs["mount-targets"]["FLEET_MANIFEST_BUCKET"] == "", "mount-targets never reads it"
    # The grant names the very keys the functions write:
    # manifests/<FLEET_NAME>/<sha256>.jsonl.gz.
    code = (ROOT / "shared" / "src" / "sync" / "manifest.rs").read_text()
    assert 'format!("manifests/{fleet}/{}.jsonl.gz"' in code
    env = envs["codebase-sync"]
    params = parameters_of(source, DEPLOYMENTS["everything"]) | {"ManifestBucket": MANIFEST_BUCKET}
    arn = evaluate(source, {"Fn::Sub": MANIFESTS_ARN.replace("${AWS::Partition}", "aws")}, params, {})
    assert arn == f"arn:aws:s3:::{env['FLEET_MANIFEST_BUCKET']}/manifests/{env['FLEET_NAME']}/*", arn


def test_the_manifest_grants_are_the_fleets_prefix_and_the_bucket_setting_only(transformed: dict[str, Any]) -> None:
    for function, logical in FUNCTIONS.items():
        role = transformed["Resources"][f"{logical}Role"]
        raw = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        puts = [s for s in raw if "s3:PutObject" in json.dumps(s)]
        settings = [s for s in raw if "s3:GetBucketVersioning" in json.dumps(s)]
        versions = [s for s in statements(role) if "s3:ListBucketVersions" in actions_of(s)]
        if function not in SYNC_FUNCTIONS:
            assert not (puts or settings or versions), f"{function}: {puts + settings + versions}"
            continue
        # PutObject: the fleet's manifests only, never the bucket or "*".
        (put,) = puts
        condition, statement, otherwise = put["Fn::If"]
        assert (condition, otherwise) == ("HasManifestBucket", NO_VALUE), function
        assert actions_of(statement) == ["s3:PutObject", "s3:PutObjectTagging"], function
        assert statement["Resource"] == {"Fn::Sub": MANIFESTS_ARN}, function
        # GetBucketVersioning: the codebase bucket's ARN, no condition (the
        # request carries no s3:prefix, so a prefix condition would deny it).
        (setting,) = settings
        condition, statement, otherwise = setting["Fn::If"]
        assert (condition, otherwise) == ("HasCodebase", NO_VALUE), function
        assert actions_of(statement) == ["s3:GetBucketVersioning"], function
        assert statement["Resource"] == {"Fn::Sub": CODEBASE_BUCKET_ARN}, function
        assert "Condition" not in statement, function
        # ListBucketVersions: within the codebase prefix, as ListBucket.
        (listing,) = versions
        assert actions_of(listing) == ["s3:ListBucketVersions"], function
        assert listing["Resource"] == {"Fn::Sub": CODEBASE_BUCKET_ARN}, function
        assert listing["Condition"] == CODEBASE_PREFIX_CONDITION, function
        # No S3 action anywhere on "*", and no other S3 write.
        for s in statements(role):
            s3 = [a for a in actions_of(s) if a.startswith("s3:")]
            assert not s3 or s["Resource"] != "*", f"{function}: {s}"
            writes = [a for a in s3 if a.startswith(("s3:Put", "s3:Delete"))]
            assert not [a for a in writes if a not in ("s3:PutObject", "s3:PutObjectTagging")], f"{function}: {s}"
            assert not writes or s["Resource"] == {"Fn::Sub": MANIFESTS_ARN}, f"{function}: {s}"


def instance_statements(source: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """WebServerPolicy's statements by Sid: (always there, under a condition)."""
    plain: dict[str, Any] = {}
    guarded: dict[str, Any] = {}
    for s in source["Resources"]["WebServerPolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        if set(s) == {"Fn::If"}:
            condition, statement, otherwise = s["Fn::If"]
            assert (condition, otherwise) == ("HasManifestBucket", NO_VALUE), s
            guarded[statement["Sid"]] = statement
        else:
            plain[s["Sid"]] = s
    return plain, guarded


def test_the_instances_read_the_fleets_manifests_and_the_versions_they_pin(source: dict[str, Any]) -> None:
    policy = source["Resources"]["WebServerPolicy"]
    assert policy["Condition"] == "HasCodebase"
    plain, guarded = instance_statements(source)
    assert sorted(plain) == ["ListTheCodebase", "ReadTheCodebase"]
    assert sorted(guarded) == ["ListTheCodebasesVersions", "ReadPinnedVersions", "ReadTheFleetsManifests"]
    # The wave's manifest: this fleet's prefix of the manifest bucket only.
    manifests = guarded["ReadTheFleetsManifests"]
    assert (manifests["Action"], manifests["Resource"]) == ("s3:GetObject", {"Fn::Sub": MANIFESTS_ARN})
    # get-object --version-id on a versioned bucket: the codebase prefix only.
    pinned = guarded["ReadPinnedVersions"]
    assert pinned["Action"] == "s3:GetObjectVersion"
    assert pinned["Resource"] == plain["ReadTheCodebase"]["Resource"]
    # The bulk path's one listing of versions: the same prefix condition.
    listing = guarded["ListTheCodebasesVersions"]
    assert listing["Action"] == "s3:ListBucketVersions"
    assert listing["Resource"] == plain["ListTheCodebase"]["Resource"] == {"Fn::Sub": CODEBASE_BUCKET_ARN}
    assert listing["Condition"] == plain["ListTheCodebase"]["Condition"] == CODEBASE_PREFIX_CONDITION
    # The instances only read, never on "*".
    for s in [*plain.values(), *guarded.values()]:
        assert s["Effect"] == "Allow" and s["Resource"] != "*", s
        assert all(a.startswith(("s3:Get", "s3:List")) for a in actions_of(s)), s


def test_parliament_finds_nothing_in_the_instance_policy(source: dict[str, Any]) -> None:
    from parliament import analyze_policy_string

    raw = source["Resources"]["WebServerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    document = {"Version": "2012-10-17", "Statement": placeholders([s for s in resolve_if(raw) if s != NO_VALUE])}
    findings = analyze_policy_string(json.dumps(document)).findings
    assert not findings, [(f.issue, f.detail) for f in findings]


def test_the_instance_policy_keeps_its_description(source: dict[str, Any]) -> None:
    # A changed Description replaces an AWS::IAM::ManagedPolicy ("Update
    # requires: Replacement"): a new ARN that the stack's export importers and
    # hand attachments to instance roles would not follow.
    description = source["Resources"]["WebServerPolicy"]["Properties"]["Description"]
    assert description == (
        "For the web servers' instance profile, beside AmazonSSMManagedInstanceCore: "
        "read the codebase (the sync document runs aws s3 sync on the instance)."
    )
