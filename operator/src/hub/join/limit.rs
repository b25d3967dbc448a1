//! A token bucket per source IP for the registration endpoint (ADR 0031, "Flooding"): each source
//! may send `burst` requests back to back, then one per `refill`. The table is bounded: when it
//! is full, the buckets that are full again (sources that stopped asking) are dropped; if none
//! is, a new source waits like a limited one, so a flood from many addresses cannot grow memory.
//! Pure (the caller passes the time), so it is unit-tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Per-source token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    refill: Duration,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left at `at`.
    tokens: u32,
    /// When `tokens` was last brought up to date (whole refills only).
    at: Instant,
}

impl RateLimiter {
    /// `burst` requests at once, one more per `refill`, at most `max_sources` sources tracked.
    pub fn new(burst: u32, refill: Duration, max_sources: usize) -> Self {
        RateLimiter {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(b.at);
        let whole = elapsed.as_nanos() / self.refill.as_nanos();
        if whole == 0 {
            return b;
        }
        let tokens = u128::from(b.tokens).saturating_add(whole);
        Bucket {
            tokens: u32::try_from(tokens.min(u128::from(self.burst))).unwrap_or(self.burst),
            at: b.at
                + self
                    .refill
                    .saturating_mul(u32::try_from(whole).unwrap_or(u32::MAX)),
        }
    }

    /// Takes one token for `ip`, or says how long until one is free.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            let burst = self.burst;
            let refill = self.refill;
            self.buckets.retain(|_, b| {
                let missing = burst.saturating_sub(b.tokens);
                now.saturating_duration_since(b.at) < refill.saturating_mul(missing)
            });
            if self.buckets.len() >= self.max_sources {
                return Err(self.refill);
            }
        }
        let b = self.buckets.get(&ip).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        let mut b = self.refilled(b, now);
        if b.tokens == 0 {
            let wait = (b.at + self.refill).saturating_duration_since(now);
            self.buckets.insert(ip, b);
            return Err(wait.max(Duration::from_secs(1)));
        }
        if b.tokens == self.burst {
            // A full bucket starts its refill clock when the first token is taken.
            b.at = now;
        }
        b.tokens -= 1;
        self.buckets.insert(ip, b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_source_gets_its_burst_then_one_request_per_refill() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(3, Duration::from_secs(10), 100);
        for _ in 0..3 {
            l.check(ip(1), t0).unwrap();
        }
        let wait = l.check(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(
            l.check(ip(1), t0 + Duration::from_secs(4)).unwrap_err(),
            Duration::from_secs(6)
        );
        l.check(ip(1), t0 + Duration::from_secs(10)).unwrap();
        assert!(l.check(ip(1), t0 + Duration::from_secs(11)).is_err());
        // Another source is not affected.
        l.check(ip(2), t0).unwrap();
        // A long pause refills no more than the burst.
        let later = t0 + Duration::from_secs(1000);
        for _ in 0..3 {
            l.check(ip(1), later).unwrap();
        }
        assert!(l.check(ip(1), later).is_err());
    }

    #[test]
    fn a_full_table_drops_idle_sources_and_refuses_new_ones_while_all_are_busy() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(2, Duration::from_secs(10), 3);
        for n in 1..=3 {
            l.check(ip(n), t0).unwrap();
        }
        // Full of sources still refilling: a new one waits.
        assert!(l.check(ip(4), t0 + Duration::from_secs(1)).is_err());
        // Once they have refilled they are forgotten and the new source gets in.
        l.check(ip(4), t0 + Duration::from_secs(10)).unwrap();
        assert!(l.buckets.len() <= 3);
    }
}
