//! What each function may call on AWS: the single source of its IAM policy.
//!
//! `infra/template.yaml` grants each function's role exactly its manifest
//! (checked on the SAM-transformed template by `tests/infra`), and the
//! emulator's call recorder checks that every operation a function was seen
//! to make in the test suite is in its manifest (`permissions check-recorded`,
//! run by `make test`). `docs/permissions.md` explains each grant.

use crate::config::Component;

/// What a grant applies to: the resource-level scoping the template uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `Resource: "*"`: the action supports no resource-level permissions
    /// (the reason is in [`Grant::why`] and in the template's comment).
    Any,
    /// The sync document's ARN.
    Document,
    /// The managed groups' instances: `instance/*` with
    /// `ssm:resourceTag/aws:autoscaling:groupName` = a managed group.
    FleetInstances,
    /// The lock table's ARN.
    LockTable,
    /// The codebase bucket, with `s3:prefix` = the codebase prefix.
    CodebaseBucket,
    /// The managed groups' ARNs (`autoScalingGroupName/<name>`).
    FleetGroups,
    /// The fleet's target groups.
    TargetGroups,
    /// The shared file system's ARN.
    FileSystem,
    /// The network interfaces, subnets and security groups of the account
    /// and region (what `ec2:CreateNetworkInterface` is authorized against).
    NetworkInterfaces,
    /// The lifecycle function's own re-trigger queue.
    RetriggerQueue,
    /// `codebase-sync`'s delayed-start queue (the quiet period).
    SyncTriggerQueue,
    /// The release marker object (`<bucket>/<prefix><FLEET_RELEASE_MARKER>`).
    ReleaseMarker,
    /// The codebase bucket itself, no condition: bucket-level reads that
    /// carry no `s3:prefix` (`GetBucketVersioning`).
    CodebaseBucketSettings,
    /// The fleet's manifests in the stack's manifest bucket
    /// (`<manifest bucket>/manifests/<FLEET_NAME>/*`).
    Manifests,
    /// The stack's EventBridge rules (`rule/<FLEET_NAME>-fk-*`).
    StackRules,
    /// The stack's four functions.
    StackFunctions,
    /// The stack's `codebase-sync` function.
    SyncFunction,
}

/// Actions granted together on one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// IAM actions (`service:Operation`).
    pub actions: &'static [&'static str],
    /// What they apply to.
    pub scope: Scope,
    /// Why the function needs them.
    pub why: &'static str,
}

const SSM_SEND: [Grant; 2] = [
    Grant {
        actions: &["ssm:SendCommand"],
        scope: Scope::Document,
        why: "waves and catch-ups run the sync document (its version pinned)",
    },
    Grant { actions: &["ssm:SendCommand"], scope: Scope::FleetInstances, why: "only on the managed groups' instances" },
];

const SSM_DOCUMENT: Grant = Grant {
    actions: &["ssm:DescribeDocument"],
    scope: Scope::Document,
    why: "the version a command pins and the parameters the document declares",
};

const SSM_READ: Grant = Grant {
    actions: &[
        "ssm:DescribeInstanceInformation",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
        "ssm:ListCommands",
    ],
    scope: Scope::Any,
    why: "agents online and their versions; command results; a command whose answer was lost, found by its comment \
          (these SSM reads support no resource-level permissions)",
};

const LOCK_TABLE: Grant = Grant {
    actions: &["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
    scope: Scope::LockTable,
    why: "the fleet item (conditional writes), wave records, instance and lifecycle records",
};

const GROUPS_READ: Grant = Grant {
    actions: &["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances"],
    scope: Scope::Any,
    why: "the managed groups' members and their lifecycle states (Describe* of Auto Scaling supports no \
          resource-level permissions)",
};

const INSTANCES_READ: Grant = Grant {
    actions: &["ec2:DescribeInstances"],
    scope: Scope::Any,
    why: "whether an instance still runs (EC2 Describe* supports no resource-level permissions)",
};

const MOUNT_TARGETS: [Grant; 3] = [
    Grant {
        actions: &[
            "elasticfilesystem:CreateMountTarget",
            "elasticfilesystem:DescribeFileSystems",
            "elasticfilesystem:DescribeMountTargetSecurityGroups",
            "elasticfilesystem:DescribeMountTargets",
        ],
        scope: Scope::FileSystem,
        why: "one mount target per Availability Zone of the managed groups",
    },
    Grant {
        // CreateMountTarget "also requires permissions for the following
        // Amazon EC2 actions" (EFS API reference, CreateMountTarget).
        actions: &[
            "ec2:DescribeNetworkInterfaceAttribute",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
        ],
        scope: Scope::Any,
        why: "the zones' subnets and security groups; DescribeMountTargetSecurityGroups also needs \
              DescribeNetworkInterfaceAttribute on the mount target's interface (EC2 Describe* supports no \
              resource-level permissions)",
    },
    Grant {
        actions: &["ec2:CreateNetworkInterface"],
        scope: Scope::NetworkInterfaces,
        why: "EFS creates a mount target's network interface with the caller's permissions",
    },
];

const SYNC: [Grant; 14] = [
    SSM_SEND[0],
    SSM_SEND[1],
    SSM_DOCUMENT,
    SSM_READ,
    Grant {
        actions: &["ssm:CancelCommand"],
        scope: Scope::Any,
        why: "releases the pending invocation of an instance that left (CancelCommand supports no resource-level \
              permissions)",
    },
    LOCK_TABLE,
    GROUPS_READ,
    INSTANCES_READ,
    Grant {
        actions: &["s3:ListBucket"],
        scope: Scope::CodebaseBucket,
        why: "the codebase's fingerprint (the lost-event backstop) and each wave's manifest; in release-marker mode, \
              whether the marker exists",
    },
    Grant {
        actions: &["s3:ListBucketVersions"],
        scope: Scope::CodebaseBucket,
        why: "exact releases on a versioned bucket: each wave's manifest pins every key's version",
    },
    Grant {
        actions: &["s3:GetBucketVersioning"],
        scope: Scope::CodebaseBucketSettings,
        why: "exact releases: whether a manifest can pin versions (the bucket's versioning status)",
    },
    Grant {
        actions: &["s3:PutObject", "s3:PutObjectTagging"],
        scope: Scope::Manifests,
        why: "exact releases: writes each wave's manifest, never over an existing one (If-None-Match), under the \
              fleet's own prefix of the manifest bucket, tagged fleetkeeper-kept=false (PutObject with a tag needs \
              PutObjectTagging too); a successful wave tags the manifests of the releases a rollback may put back \
              fleetkeeper-kept=true (never expired) and the one leaving that window false",
    },
    Grant {
        actions: &["sqs:SendMessage"],
        scope: Scope::SyncTriggerQueue,
        why: "queues codebase-sync's delayed start when the quiet period holds a wave back (DelaySeconds)",
    },
    Grant {
        actions: &["s3:GetObject"],
        scope: Scope::ReleaseMarker,
        why: "reads the release marker's first line (the release id), that object only; its presence comes from a \
              listing of its key",
    },
];

const LIFECYCLE: [Grant; 15] = [
    Grant {
        actions: &["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
        scope: Scope::FleetGroups,
        why: "continues, abandons or extends the managed groups' lifecycle actions",
    },
    Grant {
        actions: &["autoscaling:DescribeLifecycleHooks", "autoscaling:DescribeWarmPool"],
        scope: Scope::Any,
        why: "the hooks' timeouts and default results; the warm pools' instances, which AWS lists only there \
              (Describe* of Auto Scaling supports no resource-level permissions)",
    },
    GROUPS_READ,
    INSTANCES_READ,
    Grant {
        actions: &["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"],
        scope: Scope::TargetGroups,
        why: "puts a ready instance into service and drains a leaving one",
    },
    Grant {
        actions: &[
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetHealth",
        ],
        scope: Scope::Any,
        why: "health and deregistration delay (ELB Describe* supports no resource-level permissions)",
    },
    MOUNT_TARGETS[0],
    MOUNT_TARGETS[1],
    MOUNT_TARGETS[2],
    SSM_SEND[0],
    SSM_SEND[1],
    SSM_DOCUMENT,
    SSM_READ,
    LOCK_TABLE,
    Grant {
        actions: &["sqs:SendMessage"],
        scope: Scope::RetriggerQueue,
        why: "asks to be invoked again when a waiting instance is due another look (DelaySeconds)",
    },
];

const MOUNTS: [Grant; 4] = [
    MOUNT_TARGETS[0],
    MOUNT_TARGETS[1],
    MOUNT_TARGETS[2],
    Grant {
        actions: &["autoscaling:DescribeAutoScalingGroups"],
        scope: Scope::Any,
        why: "the managed groups' subnets (Describe* of Auto Scaling supports no resource-level permissions)",
    },
];

/// A function's grants.
pub fn manifest(component: Component) -> &'static [Grant] {
    match component {
        Component::LifecycleHook => &LIFECYCLE,
        Component::MountTargets => &MOUNTS,
        Component::CodebaseSync | Component::SyncCompletion => &SYNC,
    }
}

/// The operator CLI's policies (`docs/cli.md#permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    /// `status` and `doctor`: reads only.
    ReadOnly,
    /// Every verb: the reads, the paths of the functions the CLI takes
    /// (`sync`, `rollback`, `resume`, `unlock`, `reconcile`), and invoking
    /// the stack's functions (`--via-lambda`).
    Operate,
}

impl Operator {
    /// Both.
    pub const ALL: [Operator; 2] = [Operator::ReadOnly, Operator::Operate];

    /// Its name in `permissions json` and the template's marker.
    pub fn name(self) -> &'static str {
        match self {
            Operator::ReadOnly => "operator-read-only",
            Operator::Operate => "operator",
        }
    }
}

const OPERATOR_READ: [Grant; 10] = [
    Grant {
        actions: &["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLifecycleHooks"],
        scope: Scope::Any,
        why: "the managed groups, their members and hooks (Describe* of Auto Scaling supports no resource-level \
              permissions)",
    },
    Grant {
        actions: &[
            "ec2:DescribeInstances",
            "ec2:DescribeNetworkInterfaceAttribute",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
        ],
        scope: Scope::Any,
        why: "doctor: the instances' security groups and the load balancer's subnets; DescribeMountTargetSecurityGroups \
              also needs DescribeNetworkInterfaceAttribute (EC2 Describe* supports no resource-level permissions)",
    },
    Grant {
        actions: &[
            "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetHealth",
        ],
        scope: Scope::Any,
        why: "target health; doctor: the load balancer's groups and ports (ELB Describe* supports no resource-level \
              permissions)",
    },
    Grant {
        actions: &["elasticfilesystem:DescribeMountTargetSecurityGroups", "elasticfilesystem:DescribeMountTargets"],
        scope: Scope::FileSystem,
        why: "mount targets per AZ and their security groups",
    },
    Grant {
        actions: &[
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:DescribeTimeToLive",
            "dynamodb:GetItem",
        ],
        scope: Scope::LockTable,
        why: "the fleet item, wave records and run histories; doctor: the table's key and TTL",
    },
    SSM_DOCUMENT,
    SSM_READ,
    Grant {
        actions: &["events:DescribeRule", "events:ListTargetsByRule"],
        scope: Scope::StackRules,
        why: "doctor: the stack's rules exist, are enabled and target its functions",
    },
    Grant {
        actions: &["lambda:GetFunctionConfiguration"],
        scope: Scope::StackFunctions,
        why: "--from-function: the deployed configuration; doctor: a rule target's FLEET_NAME",
    },
    Grant {
        actions: &["s3:GetBucketNotification"],
        scope: Scope::CodebaseBucketSettings,
        why: "doctor: the codebase bucket delivers its events to EventBridge",
    },
];

const OPERATOR_WRITE: [Grant; 1] = [Grant {
    actions: &["lambda:InvokeFunction"],
    scope: Scope::SyncFunction,
    why: "--via-lambda: invoke the stack's codebase-sync",
}];

/// One statement of an operator policy: every action it grants on one scope
/// (merged by scope: a managed policy holds at most 6,144 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorGrant {
    /// IAM actions, sorted.
    pub actions: Vec<&'static str>,
    /// What they apply to.
    pub scope: Scope,
    /// Why, one reason per grant merged.
    pub why: Vec<&'static str>,
}

/// An operator policy's statements, one per scope, in scope order.
///
/// `OperatorPolicy` holds what the acting verbs need beyond
/// `OperatorReadOnlyPolicy`, and is attached with it: one policy holding
/// both would not fit a managed policy's 6,144 characters with long names.
pub fn operator_manifest(operator: Operator) -> Vec<OperatorGrant> {
    let grants: Vec<&Grant> = match operator {
        Operator::ReadOnly => OPERATOR_READ.iter().collect(),
        Operator::Operate => LIFECYCLE.iter().chain(&MOUNTS).chain(&SYNC).chain(&OPERATOR_WRITE).collect(),
    };
    let read_only = |scope: Scope, action: &str| {
        operator == Operator::Operate && OPERATOR_READ.iter().any(|g| g.scope == scope && g.actions.contains(&action))
    };
    let mut by_scope: std::collections::BTreeMap<Scope, OperatorGrant> = std::collections::BTreeMap::new();
    for g in grants {
        let entry =
            by_scope.entry(g.scope).or_insert(OperatorGrant { actions: Vec::new(), scope: g.scope, why: Vec::new() });
        entry.actions.extend(g.actions.iter().copied().filter(|a| !read_only(g.scope, a)));
        if !entry.why.contains(&g.why) {
            entry.why.push(g.why);
        }
    }
    by_scope
        .into_values()
        .filter(|g| !g.actions.is_empty())
        .map(|mut g| {
            g.actions.sort_unstable();
            g.actions.dedup();
            g
        })
        .collect()
}

/// Every action an operator may call, sorted, without duplicates: with
/// `Operate`, both policies' (they are attached together).
pub fn operator_actions(operator: Operator) -> Vec<&'static str> {
    let mut granted = operator_manifest(Operator::ReadOnly);
    if operator == Operator::Operate {
        granted.extend(operator_manifest(Operator::Operate));
    }
    let mut out: Vec<&'static str> = granted.into_iter().flat_map(|g| g.actions).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Every action a function may call, sorted, without duplicates.
pub fn actions(component: Component) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = manifest(component).iter().flat_map(|g| g.actions.iter().copied()).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The IAM action an API operation is authorized as (`service` is the SigV4
/// signing name, which is also the IAM prefix for every service used here).
pub fn action_of(service: &str, operation: &str) -> String {
    let operation = match (service, operation) {
        // ListObjectsV2 is authorized as s3:ListBucket.
        ("s3", "ListObjectsV2" | "ListObjects") => "ListBucket",
        // ListObjectVersions is authorized as s3:ListBucketVersions.
        ("s3", "ListObjectVersions") => "ListBucketVersions",
        // GetBucketNotificationConfiguration is authorized as s3:GetBucketNotification.
        ("s3", "GetBucketNotificationConfiguration") => "GetBucketNotification",
        // Invoke is authorized as lambda:InvokeFunction.
        ("lambda", "Invoke") => "InvokeFunction",
        (_, op) => op,
    };
    format!("{service}:{operation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grant_names_real_looking_actions_and_a_reason() {
        for c in Component::ALL {
            for g in manifest(c) {
                assert!(!g.actions.is_empty() && !g.why.is_empty(), "{c}: {g:?}");
                for a in g.actions {
                    let (service, op) = a.split_once(':').unwrap_or_default();
                    assert!(!service.is_empty() && op.starts_with(char::is_uppercase), "{c}: {a}");
                    assert!(!a.contains('*'), "no wildcard actions: {c}: {a}");
                }
            }
        }
    }

    #[test]
    fn only_the_lifecycle_hook_completes_lifecycle_actions_or_touches_targets() {
        for c in Component::ALL {
            let mutating = actions(c)
                .into_iter()
                .filter(|a| a.starts_with("autoscaling:Complete") || a.contains("RegisterTargets"))
                .count();
            assert_eq!(mutating > 0, c == Component::LifecycleHook, "{c}");
        }
    }

    #[test]
    fn list_objects_is_authorized_as_list_bucket() {
        assert_eq!(action_of("s3", "ListObjectsV2"), "s3:ListBucket");
        assert_eq!(action_of("s3", "ListObjectVersions"), "s3:ListBucketVersions");
        assert_eq!(action_of("ssm", "SendCommand"), "ssm:SendCommand");
        assert_eq!(action_of("s3", "GetBucketNotificationConfiguration"), "s3:GetBucketNotification");
        assert_eq!(action_of("lambda", "Invoke"), "lambda:InvokeFunction");
    }

    #[test]
    fn the_read_only_operator_writes_nothing_and_the_operator_can_do_what_the_functions_do() {
        let read = operator_actions(Operator::ReadOnly);
        let writes =
            ["Put", "Update", "Send", "Create", "Delete", "Register", "Complete", "Cancel", "Invoke", "Record"];
        for a in &read {
            let op = a.split_once(':').map(|(_, op)| op).unwrap_or_default();
            assert!(!writes.iter().any(|w| op.starts_with(w)), "read-only grants {a}");
        }
        let operate = operator_actions(Operator::Operate);
        for c in Component::ALL {
            for a in actions(c) {
                assert!(operate.contains(&a), "the operator lacks {a} of {c}");
            }
        }
        assert!(read.iter().all(|a| operate.contains(a)));
        assert!(operate.contains(&"lambda:InvokeFunction") && operate.contains(&"ssm:CancelCommand"));
    }
}
