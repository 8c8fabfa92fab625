//! One EFS mount target in every AZ the fleet uses.
//!
//! [`plan`] is the pure planner (one decision per AZ), [`exec`] observes AWS
//! and performs the plan. [`reconcile`] is also the library entry
//! `lifecycle-hook` uses to ensure one instance's AZ.

pub mod exec;
pub mod plan;

pub use exec::{MountError, Outcome, Report, Target, ZoneReport, reconcile};

impl Target {
    /// The mount-target settings of a configuration (`None` without a file system).
    pub fn from_config(config: &crate::Config) -> Option<Self> {
        config.efs.as_ref().map(|efs| Target {
            asg_names: config.asg_names.clone(),
            file_system_id: efs.file_system_id.clone(),
            security_groups: efs.mount_target_security_groups.clone(),
            dry_run: config.dry_run,
            check_nfs: true,
        })
    }
}
