//! Skipped events: each is logged once with its reason and delivery, and
//! counted by reason in the handler's summary.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::info;

use crate::events::{Event, Received, Skip, SkipReason, Via};

/// Skips of one invocation, counted by reason, with the first few details.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Skips {
    /// How many events were skipped, by reason.
    pub by_reason: BTreeMap<String, usize>,
    /// The first [`Skips::KEPT`] details, for the response.
    pub examples: Vec<Skip>,
}

impl Skips {
    /// How many details the summary keeps (a batch may hold thousands).
    pub const KEPT: usize = 5;

    /// Records and logs one skip.
    pub fn record(&mut self, via: &Via, skip: Skip) {
        info!(reason = ?skip.reason, detail = %skip.detail, via = ?via, "skipping event");
        *self.by_reason.entry(reason_name(skip.reason)).or_default() += 1;
        if self.examples.len() < Self::KEPT {
            self.examples.push(skip);
        }
    }

    /// Total skipped.
    pub fn total(&self) -> usize {
        self.by_reason.values().sum()
    }
}

/// Splits an invocation's events into those `accept` takes and the skipped
/// rest, which are logged and counted. `accept` answers `Err(skip)` for an
/// event it will not handle (not for this function, not managed, ...).
pub fn triage(received: Vec<Received>, mut accept: impl FnMut(&Event) -> Result<(), Skip>) -> (Vec<Received>, Skips) {
    let mut skips = Skips::default();
    let mut kept = Vec::new();
    for r in received {
        match r.event {
            Event::Skipped(skip) => skips.record(&r.via, skip),
            ref e => match accept(e) {
                Ok(()) => kept.push(r),
                Err(skip) => skips.record(&r.via, skip),
            },
        }
    }
    (kept, skips)
}

/// The skip for a well-formed event this function does not handle.
pub fn not_for_this_function(event: &Event) -> Skip {
    Skip::new(SkipReason::NotForThisFunction, event.kind_name())
}

fn reason_name(reason: SkipReason) -> String {
    serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events;

    #[test]
    fn triage_keeps_accepted_and_counts_the_rest() {
        let payload = json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}},
            {"eventSource": "aws:s3", "eventName": "ObjectTagging:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}},
            {"eventSource": "aws:sqs", "messageId": "1", "body": "{\"action\": \"reconcile\"}"}
        ]});
        let (kept, skips) = triage(events::parse(&payload), |e| {
            if matches!(e, Event::S3(_)) { Ok(()) } else { Err(not_for_this_function(e)) }
        });
        assert_eq!(kept.len(), 1);
        assert_eq!(skips.by_reason["not_a_content_change"], 1);
        assert_eq!(skips.by_reason["not_for_this_function"], 1);
    }

    #[test]
    fn counts_by_reason_and_keeps_few_examples() {
        let mut skips = Skips::default();
        for i in 0..8 {
            skips.record(&Via::Direct, Skip::new(SkipReason::Malformed, format!("m{i}")));
        }
        skips.record(&Via::Direct, Skip::new(SkipReason::NotForThisFunction, "scheduled event"));
        assert_eq!(skips.total(), 9);
        assert_eq!(skips.by_reason["malformed"], 8);
        assert_eq!(skips.by_reason["not_for_this_function"], 1);
        assert_eq!(skips.examples.len(), Skips::KEPT);
    }
}
