//! The launch-side circuit breaker.
//!
//! A launch that fails on the instance (its catch-up failed twice, its
//! target never turned healthy) is ABANDONed so the group replaces it. When
//! the cause is not the instance — a broken codebase, a missing bucket
//! permission in the instance profile, an application that never answers
//! its health check — every replacement fails the same way, and the group
//! cycles instances for as long as nobody looks. So the gate counts launch
//! failures by class, fleet-wide, over [`WINDOW_MS`]: from the
//! [`TRIP_AFTER`]-th failure of one class in the window on, a failing launch
//! of that class is held (heartbeated, loud: `refused` in the response, an
//! `ERROR` log line) instead of abandoned, until the cause is fixed or the
//! hook's global timeout applies its `DefaultResult`. As failures age out of
//! the window, the group may try again: at most `TRIP_AFTER - 1`
//! replacements per class and window.
//!
//! Stored in its own item (`<fleet>#breaker#launch`), written conditionally
//! on a version; a lost race is retried once, then the count of this drive
//! stands (the breaker is a brake, not a lock).

use serde::{Deserialize, Serialize};

/// The window launch failures are counted over.
pub const WINDOW_MS: u64 = 60 * 60 * 1000;

/// Failures of one class in the window from which failing launches are held.
pub const TRIP_AFTER: usize = 3;

/// At most this many failures are kept.
const KEEP: usize = 50;

/// One launch failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When, epoch ms.
    pub at: u64,
    /// Its class (`catch-up failed`, `never healthy`).
    pub class: String,
    /// The instance.
    pub instance_id: String,
}

/// The fleet's recent launch failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Newest last.
    pub failures: Vec<Failure>,
}

impl Breaker {
    /// Records `instance_id` failing as `class` at `now` (once per instance
    /// and class: a held instance driven again is not a new failure) and
    /// forgets failures out of the window.
    pub fn record(&mut self, class: &str, instance_id: &str, now: u64) {
        self.failures.retain(|f| f.at + WINDOW_MS > now);
        if !self.failures.iter().any(|f| f.class == class && f.instance_id == instance_id) {
            self.failures.push(Failure { at: now, class: class.to_owned(), instance_id: instance_id.to_owned() });
        }
        let excess = self.failures.len().saturating_sub(KEEP);
        self.failures.drain(..excess);
    }

    /// Failures of `class` in the window ending at `now`.
    pub fn count(&self, class: &str, now: u64) -> usize {
        self.failures.iter().filter(|f| f.class == class && f.at + WINDOW_MS > now).count()
    }

    /// Whether a launch failing as `class` is held rather than abandoned.
    pub fn open(&self, class: &str, now: u64) -> bool {
        self.count(class, now) >= TRIP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_failure_of_one_class_in_the_window_opens_it() {
        let mut b = Breaker::default();
        b.record("catch-up failed", "i-1", 0);
        b.record("catch-up failed", "i-2", 1_000);
        assert!(!b.open("catch-up failed", 1_000));
        b.record("never healthy", "i-3", 2_000);
        assert!(!b.open("catch-up failed", 2_000), "another class does not count");
        b.record("catch-up failed", "i-4", 3_000);
        assert!(b.open("catch-up failed", 3_000));
        assert!(!b.open("never healthy", 3_000));
    }

    #[test]
    fn a_held_instance_driven_again_is_not_a_new_failure() {
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.record("catch-up failed", "i-1", 0);
        }
        assert_eq!(b.count("catch-up failed", 0), 1);
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let mut b = Breaker::default();
        for (n, id) in ["i-1", "i-2", "i-3"].iter().enumerate() {
            b.record("catch-up failed", id, n as u64);
        }
        assert!(b.open("catch-up failed", 10));
        assert!(!b.open("catch-up failed", WINDOW_MS + 1), "an hour later the group may try again");
        b.record("catch-up failed", "i-4", WINDOW_MS + 5);
        assert_eq!(b.failures.len(), 1, "old failures are forgotten when recording");
    }

    #[test]
    fn it_keeps_a_bounded_history() {
        let mut b = Breaker::default();
        for n in 0..200u64 {
            b.record("never healthy", &format!("i-{n}"), n);
        }
        assert_eq!(b.failures.len(), KEEP);
        assert_eq!(b.failures.last().map(|f| f.instance_id.as_str()), Some("i-199"));
    }
}
