// SPDX-License-Identifier: GPL-2.0

//! A token bucket: `rate` tokens a second, at most `burst` saved up. The
//! agent paces each guest's frames, its hint frames, and the blocker
//! installs its locks cost (QMP calls into its QEMU) with one each.

use std::time::Instant;

/// A token bucket, full when made.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket refilled at `rate` per second up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: Instant::now(),
            rate,
            burst,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 3.0);
        b.at = t0;
        assert!((0..3).all(|_| b.take_at(t0)));
        assert!(!b.take_at(t0), "burst spent");
        assert!(!b.take_at(t0 + Duration::from_millis(50)), "half a token");
        assert!(b.take_at(t0 + Duration::from_millis(100)));
        // A long pause saves up no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take_at(later)));
        assert!(!b.take_at(later));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = Bucket::new(1000.0, 1.0);
        b.at = t0;
        assert!(b.take_at(t0));
        assert!(!b.take_at(t0 - Duration::from_millis(500)));
    }
}
