//! The pure mount-target planner: what AWS reports in, one decision per AZ out.
//!
//! Rules, in order:
//!
//! 1. The AZs are those of the managed groups' subnets (`VPCZoneIdentifier`,
//!    not where instances happen to run), in `VPCZoneIdentifier` order. Of two
//!    subnets in one AZ, the first is used: one mount target per AZ.
//! 2. A file system that is not `available` blocks everything: `creating`
//!    and `updating` are waited for, `deleting`/`deleted`/`error` refused.
//! 3. A file system serves one VPC: that of its existing mount targets (the
//!    file system itself has no VPC field). An AZ whose subnets are all in
//!    another VPC is refused; with no mount target yet, groups spanning
//!    several VPCs are refused (which VPC to pick is the operator's call).
//! 4. A One Zone file system can only serve its own AZ.
//! 5. An existing mount target in the AZ, in any of its subnets, counts:
//!    `available` is kept, `creating`/`updating` waited for,
//!    `deleting`/`error` refused with a reason. Otherwise one is created.
//!
//! Mount targets in AZs the fleet does not use are listed, never deleted.

use std::collections::BTreeSet;

use serde::Serialize;

/// A subnet of a managed group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subnet {
    /// `subnet-...`.
    pub id: String,
    /// Its AZ name.
    pub zone: String,
    /// Its VPC.
    pub vpc_id: String,
}

/// An EFS lifecycle state, as EFS spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeCycle {
    /// `creating`.
    Creating,
    /// `available`.
    Available,
    /// `updating`.
    Updating,
    /// `deleting`.
    Deleting,
    /// `deleted`.
    Deleted,
    /// `error`.
    Error,
}

impl LifeCycle {
    /// Parses EFS's spelling; anything unknown is treated as `error` (refused
    /// with its name, never acted on).
    pub fn parse(s: &str) -> Self {
        match s {
            "creating" => LifeCycle::Creating,
            "available" => LifeCycle::Available,
            "updating" => LifeCycle::Updating,
            "deleting" => LifeCycle::Deleting,
            "deleted" => LifeCycle::Deleted,
            _ => LifeCycle::Error,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LifeCycle::Creating => "creating",
            LifeCycle::Available => "available",
            LifeCycle::Updating => "updating",
            LifeCycle::Deleting => "deleting",
            LifeCycle::Deleted => "deleted",
            LifeCycle::Error => "error",
        }
    }
}

/// The file system as EFS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSystem {
    /// `fs-...`.
    pub id: String,
    /// Its lifecycle state.
    pub state: LifeCycle,
    /// The AZ of a One Zone file system.
    pub one_zone: Option<String>,
}

/// A mount target as EFS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountTarget {
    /// `fsmt-...`.
    pub id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its AZ name.
    pub zone: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its lifecycle state.
    pub state: LifeCycle,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The managed groups' subnets, in `VPCZoneIdentifier` order, group by group.
    pub subnets: Vec<Subnet>,
    /// The file system.
    pub file_system: FileSystem,
    /// Its mount targets.
    pub mount_targets: Vec<MountTarget>,
    /// Only this AZ (`lifecycle-hook` ensuring one instance's AZ).
    pub only_zone: Option<String>,
}

/// The decision for one AZ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// An available mount target serves the AZ.
    Keep {
        /// It.
        mount_target_id: String,
    },
    /// Create one in this subnet.
    Create {
        /// The first subnet of the AZ in `VPCZoneIdentifier` order.
        subnet_id: String,
    },
    /// Something is on its way: check again later.
    Wait {
        /// The mount target being created or updated (none: the file system).
        mount_target_id: Option<String>,
        /// What is being waited for.
        reason: String,
    },
    /// Nothing will be done, and why.
    Refuse {
        /// Why.
        reason: String,
    },
}

/// One AZ's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZonePlan {
    /// The AZ.
    pub zone: String,
    /// The fleet's subnets in it, in `VPCZoneIdentifier` order.
    pub subnets: Vec<String>,
    /// The decision.
    pub action: Action,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One entry per AZ the fleet uses.
    pub zones: Vec<ZonePlan>,
    /// Mount targets in AZs the fleet does not use (kept, listed).
    pub unused: Vec<String>,
}

/// Plans one decision per AZ.
pub fn plan(inputs: &Inputs) -> Plan {
    let mut zones: Vec<(String, Vec<&Subnet>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for subnet in &inputs.subnets {
        if !seen.insert(subnet.id.as_str()) {
            continue; // two groups sharing a subnet
        }
        match zones.iter_mut().find(|(z, _)| *z == subnet.zone) {
            Some((_, subnets)) => subnets.push(subnet),
            None => zones.push((subnet.zone.clone(), vec![subnet])),
        }
    }
    let used: BTreeSet<&str> = zones.iter().map(|(z, _)| z.as_str()).collect();
    let unused =
        inputs.mount_targets.iter().filter(|m| !used.contains(m.zone.as_str())).map(|m| m.id.clone()).collect();
    if let Some(only) = &inputs.only_zone {
        zones.retain(|(z, _)| z == only);
        if zones.is_empty() {
            return Plan {
                zones: vec![ZonePlan {
                    zone: only.clone(),
                    subnets: Vec::new(),
                    action: Action::Refuse { reason: format!("{only} is not an AZ of the managed groups' subnets") },
                }],
                unused,
            };
        }
    }
    let zones = zones
        .into_iter()
        .map(|(zone, subnets)| {
            let action = decide(inputs, &zone, &subnets);
            ZonePlan { zone, subnets: subnets.iter().map(|s| s.id.clone()).collect(), action }
        })
        .collect();
    Plan { zones, unused }
}

fn decide(inputs: &Inputs, zone: &str, subnets: &[&Subnet]) -> Action {
    let fs = &inputs.file_system;
    match fs.state {
        LifeCycle::Available => {}
        LifeCycle::Creating | LifeCycle::Updating => {
            return Action::Wait {
                mount_target_id: None,
                reason: format!("file system {} is {}", fs.id, fs.state.name()),
            };
        }
        other => return refuse(format!("file system {} is {}", fs.id, other.name())),
    }
    if let Some(home) = &fs.one_zone
        && home != zone
    {
        return refuse(format!("{} is a One Zone file system in {home}; it cannot serve {zone}", fs.id));
    }
    let fs_vpcs: BTreeSet<&str> = inputs.mount_targets.iter().map(|m| m.vpc_id.as_str()).collect();
    let candidates: Vec<&Subnet> = match fs_vpcs.iter().next() {
        Some(vpc) => {
            let inside: Vec<&Subnet> = subnets.iter().copied().filter(|s| s.vpc_id == *vpc).collect();
            if inside.is_empty() {
                let theirs: BTreeSet<&str> = subnets.iter().map(|s| s.vpc_id.as_str()).collect();
                return refuse(format!(
                    "mount targets of {} live in {vpc}; the subnets of {zone} are in {}",
                    fs.id,
                    theirs.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            inside
        }
        None => {
            let fleet_vpcs: BTreeSet<&str> = inputs.subnets.iter().map(|s| s.vpc_id.as_str()).collect();
            if fleet_vpcs.len() > 1 {
                return refuse(format!(
                    "the managed groups span {}; a file system serves one VPC, so its first mount target must be created by hand",
                    fleet_vpcs.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            subnets.to_vec()
        }
    };
    if let Some(existing) = inputs.mount_targets.iter().find(|m| m.zone == zone) {
        let id = existing.id.clone();
        return match existing.state {
            LifeCycle::Available => Action::Keep { mount_target_id: id },
            LifeCycle::Creating | LifeCycle::Updating => {
                let reason = format!("mount target {id} is {}", existing.state.name());
                Action::Wait { mount_target_id: Some(id), reason }
            }
            LifeCycle::Deleting | LifeCycle::Deleted => {
                refuse(format!("mount target {id} is being deleted; a later run creates a new one"))
            }
            LifeCycle::Error => {
                refuse(format!("mount target {id} is in error: delete it and a later run recreates it"))
            }
        };
    }
    match candidates.first() {
        Some(subnet) => Action::Create { subnet_id: subnet.id.clone() },
        None => refuse(format!("no subnet in {zone}")),
    }
}

fn refuse(reason: String) -> Action {
    Action::Refuse { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, vpc: &str) -> Subnet {
        Subnet { id: id.into(), zone: zone.into(), vpc_id: vpc.into() }
    }

    fn mt(id: &str, subnet: &str, zone: &str, vpc: &str, state: LifeCycle) -> MountTarget {
        MountTarget { id: id.into(), subnet_id: subnet.into(), zone: zone.into(), vpc_id: vpc.into(), state }
    }

    fn fs(state: LifeCycle, one_zone: Option<&str>) -> FileSystem {
        FileSystem { id: "fs-1".into(), state, one_zone: one_zone.map(Into::into) }
    }

    fn three_zones() -> Vec<Subnet> {
        vec![subnet("s-a", "az-a", "vpc-1"), subnet("s-b", "az-b", "vpc-1"), subnet("s-c", "az-c", "vpc-1")]
    }

    fn run(subnets: Vec<Subnet>, file_system: FileSystem, mount_targets: Vec<MountTarget>) -> Plan {
        plan(&Inputs { subnets, file_system, mount_targets, only_zone: None })
    }

    fn actions(p: &Plan) -> Vec<(&str, &Action)> {
        p.zones.iter().map(|z| (z.zone.as_str(), &z.action)).collect()
    }

    fn create(s: &str) -> Action {
        Action::Create { subnet_id: s.into() }
    }

    fn keep(m: &str) -> Action {
        Action::Keep { mount_target_id: m.into() }
    }

    fn is_refused(a: &Action, needle: &str) -> bool {
        matches!(a, Action::Refuse { reason } if reason.contains(needle))
    }

    #[test]
    fn empty_file_system_gets_one_mount_target_per_zone() {
        let p = run(three_zones(), fs(LifeCycle::Available, None), vec![]);
        assert_eq!(actions(&p), [("az-a", &create("s-a")), ("az-b", &create("s-b")), ("az-c", &create("s-c"))]);
        assert!(p.unused.is_empty());
    }

    #[test]
    fn two_subnets_in_one_zone_get_one_mount_target_in_the_first() {
        let subnets =
            vec![subnet("s-a2", "az-a", "vpc-1"), subnet("s-b", "az-b", "vpc-1"), subnet("s-a1", "az-a", "vpc-1")];
        let p = run(subnets, fs(LifeCycle::Available, None), vec![]);
        assert_eq!(actions(&p), [("az-a", &create("s-a2")), ("az-b", &create("s-b"))]);
        assert_eq!(p.zones[0].subnets, ["s-a2", "s-a1"]);
    }

    #[test]
    fn an_existing_mount_target_in_another_subnet_of_the_zone_counts() {
        let subnets = vec![subnet("s-a1", "az-a", "vpc-1"), subnet("s-a2", "az-a", "vpc-1")];
        let p = run(
            subnets,
            fs(LifeCycle::Available, None),
            vec![mt("m-a", "s-a2", "az-a", "vpc-1", LifeCycle::Available)],
        );
        assert_eq!(actions(&p), [("az-a", &keep("m-a"))]);
    }

    #[test]
    fn existing_mount_targets_by_state() {
        let table = [
            (LifeCycle::Available, "keep"),
            (LifeCycle::Creating, "wait"),
            (LifeCycle::Updating, "wait"),
            (LifeCycle::Deleting, "refuse"),
            (LifeCycle::Error, "refuse"),
        ];
        for (state, expected) in table {
            let p = run(three_zones(), fs(LifeCycle::Available, None), vec![mt("m-b", "s-b", "az-b", "vpc-1", state)]);
            let got = match &p.zones[1].action {
                Action::Keep { .. } => "keep",
                Action::Wait { mount_target_id, .. } => {
                    assert_eq!(mount_target_id.as_deref(), Some("m-b"));
                    "wait"
                }
                Action::Refuse { reason } => {
                    assert!(reason.contains("m-b"), "{reason}");
                    "refuse"
                }
                Action::Create { .. } => "create",
            };
            assert_eq!(got, expected, "{state:?}");
            assert_eq!(p.zones[0].action, create("s-a"), "other zones unaffected");
        }
    }

    #[test]
    fn file_system_state_gates_everything() {
        for (state, waits) in [
            (LifeCycle::Creating, true),
            (LifeCycle::Updating, true),
            (LifeCycle::Deleting, false),
            (LifeCycle::Deleted, false),
            (LifeCycle::Error, false),
        ] {
            let p = run(three_zones(), fs(state, None), vec![]);
            for z in &p.zones {
                match &z.action {
                    Action::Wait { mount_target_id: None, reason } if waits => assert!(reason.contains("fs-1")),
                    Action::Refuse { reason } if !waits => assert!(reason.contains("fs-1")),
                    other => panic!("{state:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn mount_targets_in_another_vpc_refuse_the_zone_and_create_nothing() {
        let subnets = vec![subnet("s-a", "az-a", "vpc-2"), subnet("s-b", "az-b", "vpc-2")];
        let p =
            run(subnets, fs(LifeCycle::Available, None), vec![mt("m-x", "s-x", "az-c", "vpc-1", LifeCycle::Available)]);
        for (_, a) in actions(&p) {
            assert!(is_refused(a, "live in vpc-1"), "{a:?}");
        }
        assert_eq!(p.unused, ["m-x"]);
    }

    #[test]
    fn subnets_in_the_file_system_vpc_are_preferred_over_others_in_the_zone() {
        let subnets = vec![subnet("s-a-other", "az-a", "vpc-2"), subnet("s-a", "az-a", "vpc-1")];
        let p =
            run(subnets, fs(LifeCycle::Available, None), vec![mt("m-b", "s-b", "az-b", "vpc-1", LifeCycle::Available)]);
        assert_eq!(actions(&p), [("az-a", &create("s-a"))]);
    }

    #[test]
    fn groups_spanning_vpcs_without_mount_targets_are_refused() {
        let subnets = vec![subnet("s-a", "az-a", "vpc-1"), subnet("s-b", "az-b", "vpc-2")];
        let p = run(subnets, fs(LifeCycle::Available, None), vec![]);
        for (_, a) in actions(&p) {
            assert!(is_refused(a, "span vpc-1, vpc-2"), "{a:?}");
        }
    }

    #[test]
    fn one_zone_file_system_serves_only_its_zone() {
        let p = run(three_zones(), fs(LifeCycle::Available, Some("az-b")), vec![]);
        assert!(is_refused(&p.zones[0].action, "One Zone file system in az-b"));
        assert_eq!(p.zones[1].action, create("s-b"));
        assert!(is_refused(&p.zones[2].action, "cannot serve az-c"));
    }

    #[test]
    fn mount_targets_outside_the_fleet_zones_are_listed_not_touched() {
        let subnets = vec![subnet("s-a", "az-a", "vpc-1")];
        let p = run(
            subnets,
            fs(LifeCycle::Available, None),
            vec![
                mt("m-a", "s-a", "az-a", "vpc-1", LifeCycle::Available),
                mt("m-d", "s-d", "az-d", "vpc-1", LifeCycle::Available),
            ],
        );
        assert_eq!(actions(&p), [("az-a", &keep("m-a"))]);
        assert_eq!(p.unused, ["m-d"]);
    }

    #[test]
    fn a_subnet_shared_by_two_groups_counts_once() {
        let subnets = vec![subnet("s-a", "az-a", "vpc-1"), subnet("s-a", "az-a", "vpc-1")];
        let p = run(subnets, fs(LifeCycle::Available, None), vec![]);
        assert_eq!(p.zones.len(), 1);
        assert_eq!(p.zones[0].subnets, ["s-a"]);
    }

    #[test]
    fn no_subnets_plans_nothing() {
        let p = run(vec![], fs(LifeCycle::Available, None), vec![]);
        assert!(p.zones.is_empty());
    }

    #[test]
    fn only_zone_restricts_the_plan() {
        let mut inputs = Inputs {
            subnets: three_zones(),
            file_system: fs(LifeCycle::Available, None),
            mount_targets: vec![],
            only_zone: Some("az-b".into()),
        };
        assert_eq!(actions(&plan(&inputs)), [("az-b", &create("s-b"))]);
        inputs.only_zone = Some("az-z".into());
        let p = plan(&inputs);
        assert!(is_refused(&p.zones[0].action, "az-z is not an AZ"), "{p:?}");
    }

    #[test]
    fn second_run_after_creation_keeps_everything() {
        let first = run(three_zones(), fs(LifeCycle::Available, None), vec![]);
        let made: Vec<MountTarget> = first
            .zones
            .iter()
            .filter_map(|z| match &z.action {
                Action::Create { subnet_id } => {
                    Some(mt(&format!("m-{}", z.zone), subnet_id, &z.zone, "vpc-1", LifeCycle::Available))
                }
                _ => None,
            })
            .collect();
        let second = run(three_zones(), fs(LifeCycle::Available, None), made);
        assert!(second.zones.iter().all(|z| matches!(z.action, Action::Keep { .. })), "{second:?}");
    }

    #[test]
    fn unknown_lifecycle_states_are_never_acted_on() {
        assert_eq!(LifeCycle::parse("available"), LifeCycle::Available);
        assert_eq!(LifeCycle::parse("rebooting"), LifeCycle::Error);
    }
}
