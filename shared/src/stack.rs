//! What `infra/template.yaml` deploys that the code names: its EventBridge
//! rules (`<FLEET_NAME>-<suffix>`), checked by `fleetkeeper doctor` and
//! made by the tests' stand-in for the stack.

use crate::Component;

/// The template's rules: name suffix, and the function each targets
/// (`None`: the upload queue, which codebase-sync polls).
pub const RULES: [(&str, Option<Component>); 7] = [
    ("fk-uploads", None),
    ("fk-lifecycle-actions", Some(Component::LifecycleHook)),
    ("fk-lifecycle-command-status", Some(Component::LifecycleHook)),
    ("fk-lifecycle-reconcile", Some(Component::LifecycleHook)),
    ("fk-mount-targets-reconcile", Some(Component::MountTargets)),
    ("fk-completion-command-status", Some(Component::SyncCompletion)),
    ("fk-sync-sweep", Some(Component::SyncCompletion)),
];

/// Whether the stack deploys the rule targeting `target` for a fleet with
/// (or without) a codebase and a file system.
pub fn deploys(target: Option<Component>, codebase: bool, file_system: bool) -> bool {
    match target {
        None | Some(Component::CodebaseSync | Component::SyncCompletion) => codebase,
        Some(Component::MountTargets) => file_system,
        Some(Component::LifecycleHook) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_the_templates() {
        let template = include_str!("../../infra/template.src.yaml");
        let mut named: Vec<&str> = template
            .split("\"${FleetName}-")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| name.starts_with("fk-"))
            .collect();
        named.sort_unstable();
        let mut ours: Vec<&str> = RULES.iter().map(|(s, _)| *s).collect();
        ours.sort_unstable();
        assert_eq!(named, ours);
    }

    #[test]
    fn the_sync_rules_need_a_codebase_and_the_mounts_a_file_system() {
        let deployed = |codebase, fs| RULES.iter().filter(|(_, t)| deploys(*t, codebase, fs)).count();
        assert_eq!(deployed(true, true), 7);
        assert_eq!(deployed(false, true), 4);
        assert_eq!(deployed(true, false), 6);
        assert_eq!(deployed(false, false), 3);
    }
}
