//! The instances a wave goes to, and which of a wave's instances left.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::InstanceInformationStringFilter;
use serde::Serialize;

use super::{SyncContext, SyncError, busy};
use crate::error::AwsError;
use crate::ssm_document::agent_supported;
use crate::ssm_document::history::InstanceRecord;
use crate::sync::store::FleetStore;

/// The instances a wave goes to, and those it leaves out (with why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Eligible {
    /// `InService` and healthy in a managed group, `Online` in SSM with an
    /// agent new enough, not quarantined, no catch-up in flight.
    pub instances: Vec<String>,
    /// In service and online but quarantined.
    pub quarantined: Vec<String>,
    /// In service but not `Online` in SSM (caught up by the sweep later).
    pub not_online: Vec<String>,
    /// Online, but with an agent too old for `ENV_VAR` parameters.
    pub too_old: Vec<String>,
    /// A catch-up is in flight on it: never two runs at once on one host.
    pub busy: Vec<String>,
    /// The run histories of every instance in service.
    #[serde(skip)]
    pub records: BTreeMap<String, InstanceRecord>,
}

impl Eligible {
    /// Why no instance can take a wave, when some are in service.
    pub fn why_none(&self) -> Option<String> {
        if !self.instances.is_empty() {
            return None;
        }
        let parts: Vec<String> = [
            (self.quarantined.len(), "quarantined"),
            (self.too_old.len(), "with an SSM agent older than 3.3.2746.0"),
            (self.not_online.len(), "not Online in SSM"),
            (self.busy.len(), "with a catch-up in flight"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| format!("no instance can take the wave: {}", parts.join(", ")))
    }
}

/// An instance's SSM agent, as `DescribeInstanceInformation` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Agent {
    pub online: bool,
    pub version: String,
}

impl<S: FleetStore> SyncContext<'_, S> {
    /// The instances a wave goes to, and those it leaves out.
    pub async fn eligible(&self) -> Result<Eligible, SyncError> {
        let groups = crate::groups::managed_groups(self.clients, &self.settings.asg_names).await?.found;
        let in_service: Vec<String> = groups
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| {
                i.lifecycle_state().map(|s| s.as_str()) == Some("InService")
                    && i.health_status().is_none_or(|h| h.eq_ignore_ascii_case("healthy"))
            })
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let agents = self.agents(&in_service).await?;
        let records = self.store.instances(&in_service).await?;
        let mut out = Eligible::default();
        for (id, record) in in_service.iter().zip(records) {
            match agents.get(id) {
                Some(a) if a.online && !agent_supported(&a.version) => out.too_old.push(id.clone()),
                Some(a) if a.online => {
                    if record.quarantined() {
                        out.quarantined.push(id.clone());
                    } else if busy(&record) {
                        out.busy.push(id.clone());
                    } else {
                        out.instances.push(id.clone());
                    }
                }
                _ => out.not_online.push(id.clone()),
            }
            out.records.insert(id.clone(), record);
        }
        Ok(out)
    }

    /// What SSM lists of the agents of `ids` (absent: not registered, or
    /// dropped out of the list).
    pub(super) async fn agents(&self, ids: &[String]) -> Result<BTreeMap<String, Agent>, SyncError> {
        let mut agents = BTreeMap::new();
        for part in ids.chunks(50) {
            let filter = InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(part.to_vec()))
                .build()?;
            let mut pages = self.clients.ssm.describe_instance_information().filters(filter).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeInstanceInformation", e))?;
                for info in page.instance_information_list() {
                    if let Some(id) = info.instance_id() {
                        let online = info.ping_status().map(|p| p.as_str()) == Some("Online");
                        let version = info.agent_version().unwrap_or_default().to_owned();
                        agents.insert(id.to_owned(), Agent { online, version });
                    }
                }
            }
        }
        Ok(agents)
    }

    /// Which of `ids` EC2 reports `running` (a filter, not `InstanceIds`:
    /// an unknown id must not fail the call).
    pub(super) async fn running(&self, ids: &[String]) -> Result<BTreeSet<String>, SyncError> {
        let mut running = BTreeSet::new();
        for part in ids.chunks(200) {
            let filter = Filter::builder().name("instance-id").set_values(Some(part.to_vec())).build();
            let mut pages = self.clients.ec2.describe_instances().filters(filter).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeInstances", e))?;
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    let up = i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running");
                    if let (true, Some(id)) = (up, i.instance_id()) {
                        running.insert(id.to_owned());
                    }
                }
            }
        }
        Ok(running)
    }

    /// Which of `ids` left the fleet: no longer `InService` in a managed
    /// group (terminating, detached, in standby, back in a warm pool, or in
    /// no group at all), or not `running` in EC2 (a termination the group
    /// has not noticed yet).
    pub(super) async fn departed(&self, ids: &[String]) -> Result<BTreeSet<String>, SyncError> {
        let mut serving = BTreeSet::new();
        for part in ids.chunks(50) {
            let out = self
                .clients
                .autoscaling
                .describe_auto_scaling_instances()
                .set_instance_ids(Some(part.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeAutoScalingInstances", e))?;
            for i in out.auto_scaling_instances() {
                let managed = self.settings.asg_names.iter().any(|g| Some(g.as_str()) == i.auto_scaling_group_name());
                if managed && i.lifecycle_state() == Some("InService") {
                    serving.insert(i.instance_id().unwrap_or_default().to_owned());
                }
            }
        }
        let candidates: Vec<String> = serving.iter().cloned().collect();
        let running = self.running(&candidates).await?;
        Ok(ids.iter().filter(|id| !running.contains(*id)).cloned().collect())
    }
}
