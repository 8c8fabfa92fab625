//! Time budgets: no handler waits past its deadline minus a margin.

use std::time::Duration;

/// What is kept back from the Lambda deadline for answering and logging.
pub const MARGIN: Duration = Duration::from_secs(5);

/// The time left to wait in, from the invocation's deadline (epoch ms) and
/// now (epoch ms): the deadline minus [`MARGIN`], at most `cap`, never negative.
pub fn budget(deadline_ms: u64, now_ms: u64, cap: Duration) -> Duration {
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    left.saturating_sub(MARGIN).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_a_margin_and_a_cap() {
        assert_eq!(budget(100_000, 40_000, Duration::from_secs(600)), Duration::from_secs(55));
        assert_eq!(budget(100_000, 40_000, Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(budget(100_000, 97_000, Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(budget(100_000, 200_000, Duration::from_secs(60)), Duration::ZERO);
    }
}
