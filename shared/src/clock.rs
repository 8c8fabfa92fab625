//! Injected time. Handlers never read the system clock or sleep directly:
//! the lease, deadlines, heartbeats and bounded waits are decided against a
//! [`Clock`], so tests drive time instead of waiting for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wait on a [`Clock`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of wall-clock time in epoch milliseconds, and of waits.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Waits `duration` (a test clock moves forward instead of waiting).
    fn sleep(&self, duration: Duration) -> Sleep<'_>;

    /// Epoch ms `budget` from now.
    fn deadline_in(&self, budget: Duration) -> u64 {
        self.now_ms() + u64::try_from(budget.as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// What is left until `until_ms` (zero once it passed).
    fn left_until(&self, until_ms: u64) -> Duration {
        Duration::from_millis(until_ms.saturating_sub(self.now_ms()))
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to, or when slept on (unit tests with
/// mocked I/O, the property models).
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        self.advance(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2));
        Box::pin(std::future::ready(()))
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        let handle = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        handle.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
        handle.set(7);
        assert_eq!(clock.now_ms(), 7);
    }

    #[tokio::test]
    async fn sleeping_on_a_manual_clock_moves_it_at_once() {
        let clock = ManualClock::at(1_000);
        let until = clock.deadline_in(Duration::from_secs(3));
        clock.sleep(Duration::from_secs(2)).await;
        assert_eq!(clock.now_ms(), 3_000);
        assert_eq!(clock.left_until(until), Duration::from_secs(1));
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.left_until(until), Duration::ZERO);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
