//! Per-node retry spacing for apiserver writes, counted in ticks.
//!
//! A node whose write failed is retried on the next tick, then after skipping 1, 3, 7, … ticks, up
//! to [`MAX_SKIPPED_TICKS`]; one success resets it. Reads and metrics go on every tick regardless,
//! so a flaky apiserver never blinds the metrics, and a recovered apiserver is written to within
//! one backoff step. Counting ticks instead of wall time keeps it deterministic and testable.

/// The most ticks a failing node is skipped between retries (with the default 10 s interval,
/// about five minutes).
pub const MAX_SKIPPED_TICKS: u32 = 31;

/// Retry state of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    skip: u32,
}

impl Backoff {
    /// Whether to write on this tick. Call once per tick.
    pub fn tick(&mut self) -> bool {
        if self.skip == 0 {
            true
        } else {
            self.skip -= 1;
            false
        }
    }

    /// Record a failed write; returns how many ticks will be skipped before the next try.
    pub fn failed(&mut self) -> u32 {
        self.failures = self.failures.saturating_add(1);
        let exp = (self.failures - 1).min(5);
        self.skip = ((1u32 << exp) - 1).min(MAX_SKIPPED_TICKS);
        self.skip
    }

    /// Record a successful write.
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks on which a node that always fails is tried, over `n` ticks.
    fn tries(n: u32) -> Vec<u32> {
        let mut b = Backoff::default();
        (0..n)
            .filter(|_| {
                let go = b.tick();
                if go {
                    b.failed();
                }
                go
            })
            .collect()
    }

    #[test]
    fn a_failing_node_is_retried_with_doubling_gaps_up_to_a_cap() {
        let mut b = Backoff::default();
        let skips: Vec<u32> = (0..8).map(|_| b.failed()).collect();
        assert_eq!(skips, vec![0, 1, 3, 7, 15, 31, 31, 31]);
        assert_eq!(tries(40), vec![0, 1, 3, 7, 15, 31]);
    }

    #[test]
    fn a_first_failure_is_retried_on_the_very_next_tick() {
        let mut b = Backoff::default();
        assert!(b.tick());
        b.failed();
        assert!(b.tick());
    }

    #[test]
    fn one_success_resets_the_backoff() {
        let mut b = Backoff::default();
        b.failed();
        b.failed();
        b.failed();
        assert_eq!(b.failures(), 3);
        b.succeeded();
        assert_eq!(b.failures(), 0);
        assert!(b.tick());
    }
}
