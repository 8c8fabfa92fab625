//! `UpdateItem` expressions and typed reads of an item's attributes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::StoreError;

/// Builds an expression's attribute names and values. Attribute names are
/// always used through `#placeholders` (several are DynamoDB reserved words).
#[derive(Debug, Default)]
pub struct Expr {
    /// `#name` -> attribute name.
    pub names: HashMap<String, String>,
    /// `:value` -> value.
    pub values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// The placeholder of attribute `attr` (`#attr`).
    pub fn n(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_owned());
        key
    }

    /// The placeholder of a value named `name` (`:name`). One name, one
    /// value: a second value under a name already used is a bug (it would
    /// silently replace the first in every place that names it), caught in
    /// debug builds.
    pub fn v(&mut self, name: &str, value: AttributeValue) -> String {
        let key = format!(":{name}");
        if let Some(old) = self.values.insert(key.clone(), value.clone()) {
            debug_assert_eq!(old, value, "placeholder {key} given two values");
        }
        key
    }

    /// Drops placeholders the final expressions do not use (DynamoDB
    /// rejects unused ones), so branches may name attributes freely.
    pub fn prune(&mut self, texts: &[&str]) {
        let used = |placeholder: &str| {
            texts.iter().any(|t| {
                t.match_indices(placeholder).any(|(at, _)| {
                    let next = t[at + placeholder.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
        };
        self.names.retain(|k, _| used(k));
        self.values.retain(|k, _| used(k));
    }
}

/// A number attribute.
pub fn num(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A list-of-strings attribute.
pub fn string_list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().cloned().map(AttributeValue::S).collect())
}

/// Typed reads of an item's attributes; a mistyped one is
/// [`StoreError::Unreadable`] naming the item and the attribute.
pub struct Reader<'a> {
    /// The item's key (for errors).
    pub pk: &'a str,
    /// Its attributes.
    pub attrs: &'a HashMap<String, AttributeValue>,
}

impl<'a> Reader<'a> {
    /// A list of maps (absent: none), each read as an item.
    pub fn maps(&self, attr: &str) -> Result<Vec<Reader<'a>>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| match v {
                    AttributeValue::M(m) => Ok(Reader { pk: self.pk, attrs: m }),
                    _ => Err(self.bad(attr, "a list of maps")),
                })
                .collect(),
            Some(_) => Err(self.bad(attr, "a list")),
        }
    }
    /// The error for attribute `attr` that is not `what`.
    pub fn bad(&self, attr: &str, what: &str) -> StoreError {
        StoreError::Unreadable { pk: self.pk.to_owned(), why: format!("{attr} is not {what}") }
    }

    /// A whole number, if present.
    pub fn number(&self, attr: &str) -> Result<Option<u64>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| self.bad(attr, "a whole number")),
            Some(_) => Err(self.bad(attr, "a number")),
        }
    }

    /// A string, if present.
    pub fn string(&self, attr: &str) -> Result<Option<String>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(attr, "a string")),
        }
    }

    /// A list (or set) of strings; empty when absent.
    pub fn strings(&self, attr: &str) -> Result<Vec<String>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
            Some(AttributeValue::L(items)) => items
                .iter()
                .map(|i| match i {
                    AttributeValue::S(s) => Ok(s.clone()),
                    _ => Err(self.bad(attr, "a list of strings")),
                })
                .collect(),
            Some(AttributeValue::Ss(items)) => Ok(items.clone()),
            Some(_) => Err(self.bad(attr, "a list")),
        }
    }

    /// A boolean; false when absent.
    pub fn boolean(&self, attr: &str) -> Result<bool, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(false),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.bad(attr, "a boolean")),
        }
    }

    /// A map attribute, read with a nested reader.
    pub fn map<T>(
        &self,
        attr: &str,
        read: impl FnOnce(&Reader<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::M(m)) => read(&Reader { pk: self.pk, attrs: m }).map(Some),
            Some(_) => Err(self.bad(attr, "a map")),
        }
    }
}

/// A manifest reference as stored (a map: `key`, `sha256`).
pub fn release_ref(r: &Reader<'_>, attr: &str) -> Result<Option<super::ReleaseRef>, StoreError> {
    r.map(attr, |inner| match (inner.string("key")?, inner.string("sha256")?) {
        (Some(key), Some(sha256)) => Ok(super::ReleaseRef {
            key,
            sha256,
            generation: inner.number("generation")?.unwrap_or(0),
            versioned: inner.boolean("versioned")?,
        }),
        _ => Err(r.bad(attr, "a manifest reference")),
    })
}

/// A pin as stored (a map: `release`, `manifest`, `reason`, `since`).
pub fn pin(r: &Reader<'_>, attr: &str) -> Result<Option<super::Pin>, StoreError> {
    r.map(attr, |inner| {
        Ok(super::Pin {
            release: inner.string("release")?.unwrap_or_default(),
            manifest: release_ref(inner, "manifest")?.ok_or_else(|| r.bad(attr, "a pin with its manifest"))?,
            reason: inner.string("reason")?.unwrap_or_default(),
            since: inner.number("since")?.unwrap_or_default(),
            request: inner.string("request")?.unwrap_or_default(),
        })
    })
}

/// The ids of a fleet item's releases (a list of maps with an `id`).
pub fn release_ids(r: &Reader<'_>, attr: &str) -> Result<Vec<String>, StoreError> {
    r.maps(attr)?.iter().map(|inner| Ok(inner.string("id")?.unwrap_or_default())).collect()
}

/// A manifest reference as stored by [`release_ref`].
pub fn release_value(r: &super::ReleaseRef) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("key".to_owned(), AttributeValue::S(r.key.clone())),
        ("sha256".to_owned(), AttributeValue::S(r.sha256.clone())),
        ("generation".to_owned(), num(r.generation)),
        ("versioned".to_owned(), AttributeValue::Bool(r.versioned)),
    ]))
}

/// A pin as stored by [`pin`].
pub fn pin_value(p: &super::Pin) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("release".to_owned(), AttributeValue::S(p.release.clone())),
        ("manifest".to_owned(), release_value(&p.manifest)),
        ("reason".to_owned(), AttributeValue::S(p.reason.clone())),
        ("since".to_owned(), num(p.since)),
        ("request".to_owned(), AttributeValue::S(p.request.clone())),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_placeholders_are_pruned_but_prefixes_are_not_confused() {
        let mut e = Expr::default();
        let (sent, sent_at, wave) = (e.n("sent"), e.n("sent_at"), e.n("wave_id"));
        let (w, unused) = (e.v("w", num(1)), e.v("unused", num(2)));
        let update = format!("SET {sent_at} = {w}");
        let condition = format!("{wave} = {w}");
        e.prune(&[&update, &condition]);
        assert!(e.names.contains_key(&sent_at) && e.names.contains_key(&wave));
        assert!(!e.names.contains_key(&sent), "#sent only appears as a prefix of #sent_at");
        assert!(e.values.contains_key(&w) && !e.values.contains_key(&unused));
    }

    #[test]
    fn mistyped_attributes_name_the_item_and_the_attribute() {
        let attrs = HashMap::from([
            ("n".to_owned(), AttributeValue::S("x".into())),
            ("l".to_owned(), AttributeValue::L(vec![num(1)])),
        ]);
        let r = Reader { pk: "fleet", attrs: &attrs };
        let err = r.number("n").expect_err("a string is not a number").to_string();
        assert!(err.contains("\"fleet\"") && err.contains("n is not a number"), "{err}");
        assert!(r.strings("l").is_err());
        assert_eq!(r.number("absent").expect("absent"), None);
        assert!(!r.boolean("absent").expect("absent"));
    }
}
