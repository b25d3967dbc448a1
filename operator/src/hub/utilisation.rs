//! The pool's utilisation figure (issue 17 item 6): GPU-hours allocated ÷ GPU-hours available over
//! the last [`WINDOW`], from the pool's roll-ups. Each roll-up records (allocated, available) GPUs
//! — available: allocatable GPUs of Ready members offered at a price; allocated: those not free
//! (held by pods or promised to attempts) — and each sample counts until the next one. The figure
//! in the pool's status is refreshed at most every [`PUBLISH_EVERY`], so a busy pool does not get
//! a status write at every roll-up for a figure that moved by a fraction of a percent.
//!
//! Samples live in the hub's memory: a new leader starts a fresh window (the status says how long
//! the window it covers is).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use gpufed_crds::Utilization;

/// How far back the figure looks.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The published figure changes at most this often.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// One pool's samples and last published figure.
#[derive(Debug, Default)]
pub struct Tracker {
    /// (when, allocated GPUs, available GPUs), oldest first.
    samples: VecDeque<(Instant, u32, u32)>,
    published: Option<(Instant, Utilization)>,
}

impl Tracker {
    /// Records the pool's GPUs at `at` and returns the figure to publish.
    pub fn record(&mut self, at: Instant, allocated: u32, available: u32) -> Utilization {
        self.samples
            .push_back((at, allocated.min(available), available));
        // Keep the newest sample older than the window: it covers the window's start.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(t, ..)| at.saturating_duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
        match &self.published {
            Some((when, figure)) if at.saturating_duration_since(*when) < PUBLISH_EVERY => {
                figure.clone()
            }
            _ => {
                let figure = self.figure(at);
                self.published = Some((at, figure.clone()));
                figure
            }
        }
    }

    /// The figure over the window ending at `at` (shorter if the first sample is more recent).
    pub fn figure(&self, at: Instant) -> Utilization {
        let start = at.checked_sub(WINDOW);
        let (mut allocated, mut available) = (0u64, 0u64);
        let mut covered = Duration::ZERO;
        let mut it = self.samples.iter().peekable();
        while let Some(&(t, alloc, avail)) = it.next() {
            let from = match start {
                Some(s) if s > t => s,
                _ => t,
            };
            let to = it.peek().map_or(at, |(next, ..)| *next).min(at);
            let Some(span) = to.checked_duration_since(from) else {
                continue;
            };
            let secs = span.as_secs();
            allocated += u64::from(alloc) * secs;
            available += u64::from(avail) * secs;
            covered += span;
        }
        let percent = (allocated * 100).checked_div(available).unwrap_or(0);
        Utilization {
            window: format!("{}s", covered.as_secs()),
            allocated_gpu_seconds: allocated,
            available_gpu_seconds: available,
            percent: u32::try_from(percent).unwrap_or(100),
        }
    }
}

/// Trackers per pool.
pub type Trackers = std::sync::Mutex<HashMap<String, Tracker>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figure_weighs_each_sample_by_how_long_it_held() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.record(t0, 8, 16);
        t.record(t0 + Duration::from_secs(100), 16, 16);
        let f = t.figure(t0 + Duration::from_secs(200));
        // 100 s at 8/16 then 100 s at 16/16: 2,400 of 3,200 GPU-seconds.
        assert_eq!(f.allocated_gpu_seconds, 2400);
        assert_eq!(f.available_gpu_seconds, 3200);
        assert_eq!(f.percent, 75);
        assert_eq!(f.window, "200s");
    }

    #[test]
    fn samples_older_than_the_window_count_only_inside_it() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.record(t0, 0, 10);
        t.record(t0 + WINDOW, 10, 10);
        let at = t0 + WINDOW + Duration::from_secs(1800);
        let f = t.figure(at);
        // Half the window idle (the first sample, clipped), half fully allocated.
        assert_eq!(f.percent, 50);
        assert_eq!(f.window, "3600s");
        assert_eq!(f.available_gpu_seconds, 36_000);
    }

    #[test]
    fn the_published_figure_moves_at_most_every_publish_interval() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let first = t.record(t0, 0, 4);
        let later = t.record(t0 + Duration::from_secs(10), 4, 4);
        assert_eq!(first, later);
        let refreshed = t.record(t0 + PUBLISH_EVERY + Duration::from_secs(10), 4, 4);
        assert_ne!(first, refreshed);
        assert!(refreshed.percent > 0);
    }

    #[test]
    fn nothing_available_is_zero_percent() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.record(t0, 0, 0);
        assert_eq!(t.figure(t0 + Duration::from_secs(60)).percent, 0);
    }
}
