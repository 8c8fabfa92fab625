//! The instances a wave goes to.

use std::collections::BTreeSet;

use aws_sdk_ssm::types::InstanceInformationStringFilter;

use super::{Eligible, SyncContext, SyncError};
use crate::error::AwsError;
use crate::sync::store::FleetStore;

impl<S: FleetStore> SyncContext<'_, S> {
    /// Instances to sync: `InService` and healthy in a managed group, `Online`
    /// in SSM, not quarantined.
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
        let online = self.online(&in_service).await?;
        let records = self.store.instances(&in_service).await?;
        let mut out = Eligible::default();
        for (id, record) in in_service.iter().zip(records) {
            if !online.contains(id) {
                out.not_online.push(id.clone());
            } else if record.quarantined() {
                out.quarantined.push(id.clone());
            } else {
                out.instances.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Which of `ids` SSM reports `Online`.
    pub async fn online(&self, ids: &[String]) -> Result<BTreeSet<String>, SyncError> {
        let mut online = BTreeSet::new();
        for part in ids.chunks(50) {
            let filter =
                |k: &str, v: Vec<String>| InstanceInformationStringFilter::builder().key(k).set_values(Some(v)).build();
            let mut pages = self
                .clients
                .ssm
                .describe_instance_information()
                .filters(filter("InstanceIds", part.to_vec())?)
                .filters(filter("PingStatus", vec!["Online".to_owned()])?)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeInstanceInformation", e))?;
                for info in page.instance_information_list() {
                    if let Some(id) = info.instance_id() {
                        online.insert(id.to_owned());
                    }
                }
            }
        }
        Ok(online)
    }
}
