//! [`MemoryTable`]: the lock table in memory. Each step runs under one
//! lock, as one conditional write is atomic in DynamoDB; items are JSON
//! objects whose fields carry the same names as the DynamoDB attributes.
//! Domains implement their stores over it as the executable specification
//! the DynamoDB implementations are held to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{Doc, EXPIRES_AT, Items, Keys, Lineage, StoreError, fleet_attrs};

/// An item: its attributes as JSON fields.
pub type Item = Map<String, Value>;

/// The lock table of one fleet, in memory.
#[derive(Debug, Clone)]
pub struct MemoryTable {
    keys: Keys,
    items: Arc<Mutex<HashMap<String, Item>>>,
}

impl Default for MemoryTable {
    fn default() -> Self {
        MemoryTable::new("fleet")
    }
}

impl MemoryTable {
    /// An empty table for fleet `fleet`.
    pub fn new(fleet: impl Into<String>) -> Self {
        MemoryTable { keys: Keys::new(fleet), items: Arc::default() }
    }

    /// Runs `f` on every item under the table's lock: one atomic step.
    pub fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Item>) -> T) -> T {
        let mut guard = match self.items.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// An item's fields as `T` (fields `T` does not know are ignored).
    pub fn read<T: DeserializeOwned>(pk: &str, item: &Item) -> Result<T, StoreError> {
        serde_json::from_value(Value::Object(item.clone()))
            .map_err(|e| StoreError::Unreadable { pk: pk.to_owned(), why: e.to_string() })
    }

    /// Writes `value`'s fields into `item`, keeping the fields it does not have.
    pub fn write<T: Serialize>(item: &mut Item, value: &T) -> Result<(), StoreError> {
        match serde_json::to_value(value) {
            Ok(Value::Object(fields)) => {
                item.extend(fields);
                Ok(())
            }
            Ok(other) => Err(StoreError::Invariant(format!("an item must be an object, not {other}"))),
            Err(e) => Err(StoreError::Invariant(e.to_string())),
        }
    }
}

impl Items for MemoryTable {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn number(&self, pk: &str, attr: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|items| items.get(pk).and_then(|item| item.get(attr)).and_then(Value::as_u64)))
    }

    async fn lineage(&self, epoch: &str) -> Result<Lineage, StoreError> {
        let pk = self.keys.fleet_pk();
        Ok(self.with(|items| {
            let item = items.entry(pk).or_default();
            for attr in [fleet_attrs::REQUESTED_GEN, fleet_attrs::COMPLETED_GEN] {
                item.entry(attr.to_owned()).or_insert(Value::from(0));
            }
            let current = item.get(fleet_attrs::EPOCH).and_then(Value::as_str).unwrap_or_default().to_owned();
            if current.is_empty() {
                item.insert(fleet_attrs::EPOCH.to_owned(), Value::from(epoch));
            }
            let epoch = item.get(fleet_attrs::EPOCH).and_then(Value::as_str).unwrap_or_default().to_owned();
            let number = |attr: &str| item.get(attr).and_then(Value::as_u64).unwrap_or(0);
            let completed = number(fleet_attrs::COMPLETED_GEN);
            Lineage {
                epoch,
                requested_gen: number(fleet_attrs::REQUESTED_GEN),
                completed_gen: completed,
                release: item
                    .get(fleet_attrs::RELEASE_MANIFEST)
                    .and_then(|v| serde_json::from_value::<super::ReleaseRef>(v.clone()).ok()),
                pin: item.get(fleet_attrs::PIN).and_then(|v| serde_json::from_value::<super::Pin>(v.clone()).ok()),
                releases: item
                    .get(fleet_attrs::RELEASES)
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
                release_held: fleet_attrs::release_held(
                    number(fleet_attrs::REFUSED_GEN),
                    completed,
                    number(fleet_attrs::ALLOW_SHRINK_GEN),
                ),
            }
        }))
    }

    async fn load_doc<T: DeserializeOwned + Default + Send>(&self, pk: &str, doc: Doc) -> Result<(T, u64), StoreError> {
        self.with(|items| {
            let Some(item) = items.get(pk) else { return Ok((T::default(), 0)) };
            let version = item.get(doc.version).and_then(Value::as_u64).unwrap_or(0);
            let value = match item.get(doc.attr) {
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| StoreError::Unreadable { pk: pk.to_owned(), why: format!("{}: {e}", doc.attr) })?,
                None => T::default(),
            };
            Ok((value, version))
        })
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
        let json = serde_json::to_value(value).map_err(|e| StoreError::Invariant(format!("{}: {e}", doc.attr)))?;
        Ok(self.with(|items| {
            let item = items.entry(pk.to_owned()).or_default();
            let current = item.get(doc.version).and_then(Value::as_u64).unwrap_or(0);
            if current != expected {
                return None;
            }
            item.insert(doc.attr.to_owned(), json);
            item.insert(doc.version.to_owned(), Value::from(expected + 1));
            for (name, v) in fields {
                item.insert((*name).to_owned(), Value::from(v.clone()));
            }
            match expires_at {
                Some(t) => item.insert(EXPIRES_AT.to_owned(), Value::from(t)),
                None => item.remove(EXPIRES_AT),
            };
            Some(expected + 1)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: Doc = Doc { attr: "doc", version: "doc_version" };

    #[tokio::test]
    async fn a_document_is_written_only_over_the_version_read() {
        let table = MemoryTable::new("web");
        let pk = table.keys().instance_pk("i-1");
        let (empty, v0): (Vec<u32>, u64) = table.load_doc(&pk, DOC).await.expect("load");
        assert_eq!((empty, v0), (vec![], 0));
        assert_eq!(table.save_doc(&pk, DOC, &vec![1u32], 0, Some(9), &[]).await.expect("save"), Some(1));
        assert_eq!(table.save_doc(&pk, DOC, &vec![2u32], 0, None, &[]).await.expect("save"), None, "a stale writer");
        let (doc, v): (Vec<u32>, u64) = table.load_doc(&pk, DOC).await.expect("load");
        assert_eq!((doc, v), (vec![1], 1));
        table.with(|items| assert_eq!(items[&pk][EXPIRES_AT], 9));
    }
}
