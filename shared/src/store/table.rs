//! [`Table`]: the lock table in DynamoDB. Every write is one `UpdateItem`
//! or `PutItem`; reads are strongly consistent.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::expr::{Expr, Reader, num};
use super::{Doc, EXPIRES_AT, Items, Keys, Lineage, PK, StoreError, fleet_attrs};
use crate::error::AwsError;

/// An item's attributes.
pub type Attrs = HashMap<String, AttributeValue>;

/// The result of a conditional update.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// The write happened: the item after it.
    Written(Attrs),
    /// The condition failed: the item as it was (`None`: no item, or not asked for).
    ConditionFailed(Option<Attrs>),
}

/// The lock table of one fleet, in DynamoDB.
#[derive(Debug, Clone)]
pub struct Table {
    client: aws_sdk_dynamodb::Client,
    table: String,
    keys: Keys,
}

impl Table {
    /// The lock table `table` of fleet `fleet`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, fleet: impl Into<String>) -> Self {
        Table { client, table: table.into(), keys: Keys::new(fleet) }
    }

    /// A strongly consistent read of one item.
    pub async fn get(&self, pk: &str) -> Result<Option<Attrs>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetItem", e))?;
        Ok(out.item)
    }

    /// One `UpdateItem` of item `pk`: `update` on `condition`, with the names
    /// and values of `expr` (unused ones pruned). On a failed condition the
    /// old item comes back when `old_on_failure` asks for it.
    pub async fn update(
        &self,
        pk: &str,
        update: String,
        condition: Option<String>,
        mut expr: Expr,
        old_on_failure: bool,
    ) -> Result<Updated, StoreError> {
        expr.prune(&[&update, condition.as_deref().unwrap_or_default()]);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk.to_owned()))
            .update_expression(update)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(if expr.values.is_empty() { None } else { Some(expr.values) })
            .return_values(ReturnValue::AllNew);
        if old_on_failure {
            request = request.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        }
        match request.send().await {
            Ok(out) => Ok(Updated::Written(out.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_conditional_check_failed_exception() => {
                let old = match ctx.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(e) => e.item.filter(|a| !a.is_empty()),
                    _ => None,
                };
                Ok(Updated::ConditionFailed(old))
            }
            Err(e) => Err(AwsError::from_sdk("UpdateItem", e).into()),
        }
    }

    /// Writes (overwrites) a whole item (`item` holds its `pk`), on
    /// `condition` (with its attribute `names`) when given; returns whether
    /// it was written.
    pub async fn put(
        &self,
        item: Attrs,
        condition: Option<String>,
        names: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let names = condition.as_ref().map(|_| names.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(AwsError::from_sdk("PutItem", e).into()),
        }
    }

    /// Strongly consistent reads of many items (`BatchGetItem` takes 100 keys
    /// per call; unprocessed keys are asked again). Absent items are left out.
    pub async fn batch_get(&self, pks: &[String]) -> Result<Vec<Attrs>, StoreError> {
        let mut unique: Vec<&String> = pks.iter().collect();
        unique.sort();
        unique.dedup();
        let mut found = Vec::new();
        for chunk in unique.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for pk in chunk {
                keys = keys.keys(HashMap::from([(PK.to_owned(), AttributeValue::S((*pk).clone()))]));
            }
            let keys = keys.build().map_err(|e| StoreError::Invariant(format!("BatchGetItem request: {e}")))?;
            let mut request = Some(HashMap::from([(self.table.clone(), keys)]));
            let mut attempt = 0u32;
            while let Some(items) = request.take() {
                if attempt > 0 {
                    // Unprocessed keys mean throttling: back off (jittered,
                    // exponential, like the SDK's own retries) before asking again.
                    let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 50);
                    let wait = (25u64 << attempt.min(6)) + jitter;
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                attempt += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("BatchGetItem", e))?;
                found.extend(out.responses.unwrap_or_default().remove(&self.table).unwrap_or_default());
                request = out.unprocessed_keys.filter(|u| !u.is_empty());
            }
        }
        Ok(found)
    }
}

impl Items for Table {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn number(&self, pk: &str, attr: &str) -> Result<Option<u64>, StoreError> {
        let Some(attrs) = self.get(pk).await? else { return Ok(None) };
        Reader { pk, attrs: &attrs }.number(attr)
    }

    async fn lineage(&self, epoch: &str) -> Result<Lineage, StoreError> {
        let pk = self.keys.fleet_pk();
        let mut e = Expr::default();
        let (schema, completed, requested, ep) = (
            e.n(fleet_attrs::SCHEMA),
            e.n(fleet_attrs::COMPLETED_GEN),
            e.n(fleet_attrs::REQUESTED_GEN),
            e.n(fleet_attrs::EPOCH),
        );
        let (s, zero, epv) = (
            e.v("schema", num(fleet_attrs::SCHEMA_VERSION)),
            e.v("zero", num(0)),
            e.v("epoch", AttributeValue::S(epoch.to_owned())),
        );
        let update = format!(
            "SET {schema} = if_not_exists({schema}, {s}), {completed} = if_not_exists({completed}, {zero}), {requested} = if_not_exists({requested}, {zero}), {ep} = if_not_exists({ep}, {epv})"
        );
        let newest = e.v("schema_read", num(fleet_attrs::SCHEMA_READ));
        let condition = format!("attribute_not_exists({schema}) OR {schema} <= {newest}");
        match self.update(&pk, update, Some(condition), e, false).await? {
            Updated::Written(attrs) => {
                let r = Reader { pk: &pk, attrs: &attrs };
                let number = |attr| r.number(attr).map(Option::unwrap_or_default);
                let completed = number(fleet_attrs::COMPLETED_GEN)?;
                Ok(Lineage {
                    epoch: r.string(fleet_attrs::EPOCH)?.unwrap_or_default(),
                    requested_gen: number(fleet_attrs::REQUESTED_GEN)?,
                    completed_gen: completed,
                    release: super::expr::release_ref(&r, fleet_attrs::RELEASE_MANIFEST)?,
                    pin: super::expr::pin(&r, fleet_attrs::PIN)?,
                    releases: super::expr::release_ids(&r, fleet_attrs::RELEASES)?,
                    release_held: fleet_attrs::release_held(
                        number(fleet_attrs::REFUSED_GEN)?,
                        completed,
                        number(fleet_attrs::ALLOW_SHRINK_GEN)?,
                    ),
                })
            }
            Updated::ConditionFailed(_) => Err(StoreError::Unreadable {
                pk,
                why: format!("written by a schema newer than {}", fleet_attrs::SCHEMA_READ),
            }),
        }
    }

    async fn load_doc<T: DeserializeOwned + Default + Send>(&self, pk: &str, doc: Doc) -> Result<(T, u64), StoreError> {
        let Some(attrs) = self.get(pk).await? else { return Ok((T::default(), 0)) };
        let r = Reader { pk, attrs: &attrs };
        let version = r.number(doc.version)?.unwrap_or(0);
        let value = match r.string(doc.attr)? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Unreadable { pk: pk.to_owned(), why: format!("{}: {e}", doc.attr) })?,
            None => T::default(),
        };
        Ok((value, version))
    }

    async fn save_doc<T: Serialize + Sync>(
        &self,
        pk: &str,
        doc: Doc,
        value: &T,
        expected: u64,
        expires_at: Option<u64>,
        fields: &[(&'static str, String)],
    ) -> Result<Option<u64>, StoreError> {
        let json = serde_json::to_string(value).map_err(|e| StoreError::Invariant(format!("{}: {e}", doc.attr)))?;
        let mut e = Expr::default();
        let (attr, version, expires) = (e.n(doc.attr), e.n(doc.version), e.n(EXPIRES_AT));
        let j = e.v("json", AttributeValue::S(json));
        let (old, new) = (e.v("old", num(expected)), e.v("new", num(expected + 1)));
        let mut sets = vec![format!("{attr} = {j}"), format!("{version} = {new}")];
        for (i, (name, v)) in fields.iter().enumerate() {
            let (n, v) = (e.n(name), e.v(&format!("f{i}"), AttributeValue::S(v.clone())));
            sets.push(format!("{n} = {v}"));
        }
        let mut update = format!("SET {}", sets.join(", "));
        match expires_at {
            Some(t) => {
                let tv = e.v("expires", num(t));
                update.push_str(&format!(", {expires} = {tv}"));
            }
            None => update.push_str(&format!(" REMOVE {expires}")),
        }
        let condition = if expected == 0 {
            format!("attribute_not_exists({version}) OR {version} = {old}")
        } else {
            format!("{version} = {old}")
        };
        Ok(match self.update(pk, update, Some(condition), e, false).await? {
            Updated::Written(_) => Some(expected + 1),
            Updated::ConditionFailed(_) => None,
        })
    }
}
