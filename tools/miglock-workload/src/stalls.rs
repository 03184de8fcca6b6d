// SPDX-License-Identifier: GPL-2.0

//! The workload's own stall time: how long its operations were blocked,
//! as the workload itself sees it. No I/O and no clock: durations and
//! phases are passed in.
//!
//! An operation is one page rewrite (4 KiB, 512 words). The usual time of
//! one is the median over the calibration operations (the first
//! [`CALIBRATION_OPS`] after the memory was filled, before any migration).
//! An operation is *slow* when it takes at least [`SLOW_FACTOR`] times
//! that, and at least [`SLOW_FLOOR_US`]: a page not yet on this host
//! blocks its writer for a round trip to the source, far above a local
//! page write. The stall time is the sum of the slow operations' whole
//! durations. It is kept apart for three phases: before the host
//! announced a migration (the floor: the vCPU preempted, the host busy),
//! from that notice until the post-copy notice (pre-copy and the
//! switchover; with post-copy from the start, the first faults on the
//! destination before the notice gets there), and after the post-copy
//! notice.

use std::time::Duration;

/// Operations timed to find the usual time of one.
pub const CALIBRATION_OPS: usize = 4096;
/// How many times the usual time a slow operation takes at least.
pub const SLOW_FACTOR: u32 = 20;
/// The least time a slow operation takes, in microseconds.
pub const SLOW_FLOOR_US: u64 = 500;

/// Where in a migration an operation ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No migration announced yet.
    Before,
    /// Announced (pending), post-copy not yet announced.
    Pending,
    /// The host announced post-copy: the VM runs on the destination.
    Postcopy,
}

/// Slow operations of one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Operations timed.
    pub ops: u64,
    /// Of those, slow.
    pub slow: u64,
    /// Their summed durations.
    pub stalled: Duration,
}

/// The stall accounting of one run.
#[derive(Debug, Default)]
pub struct Stalls {
    calibration: Vec<Duration>,
    threshold: Option<Duration>,
    usual: Duration,
    /// Per phase: before, pending, post-copy.
    pub tally: [Tally; 3],
}

impl Stalls {
    /// Notes one operation of `took` in `phase`.
    pub fn op(&mut self, took: Duration, phase: Phase) {
        let Some(threshold) = self.threshold else {
            self.calibration.push(took);
            if self.calibration.len() >= CALIBRATION_OPS {
                let mid = self.calibration.len() / 2;
                self.usual = *self.calibration.select_nth_unstable(mid).1;
                self.threshold =
                    Some((self.usual * SLOW_FACTOR).max(Duration::from_micros(SLOW_FLOOR_US)));
                self.calibration = Vec::new();
            }
            return;
        };
        let t = &mut self.tally[phase as usize];
        t.ops += 1;
        if took >= threshold {
            t.slow += 1;
            t.stalled += took;
        }
    }

    /// The usual time of one operation and the slow threshold, once
    /// calibrated.
    pub fn calibrated(&self) -> Option<(Duration, Duration)> {
        self.threshold.map(|t| (self.usual, t))
    }

    /// The line the harness reads (`workload: stalls ...`).
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (usual, threshold) = self.calibrated().unwrap_or_default();
        let [b, p, c] = self.tally;
        format!(
            "workload: stalls usual_us={:.1} threshold_us={:.0} \
             before_ops={} before_slow={} before_ms={:.1} \
             pending_ops={} pending_slow={} pending_ms={:.1} \
             postcopy_ops={} postcopy_slow={} postcopy_ms={:.1}",
            usual.as_secs_f64() * 1e6,
            threshold.as_secs_f64() * 1e6,
            b.ops,
            b.slow,
            ms(b.stalled),
            p.ops,
            p.slow,
            ms(p.stalled),
            c.ops,
            c.slow,
            ms(c.stalled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn calibrates_then_counts_slow_operations_per_phase() {
        let mut s = Stalls::default();
        for i in 0..CALIBRATION_OPS as u64 {
            assert!(s.calibrated().is_none());
            s.op(us(10 + i % 3), Phase::Before);
        }
        // Median 11 us; 20 times that is under the floor.
        assert_eq!(s.calibrated(), Some((us(11), us(SLOW_FLOOR_US))));
        s.op(us(12), Phase::Before);
        s.op(us(900), Phase::Before);
        s.op(us(499), Phase::Pending);
        s.op(us(500), Phase::Pending);
        s.op(us(3000), Phase::Postcopy);
        s.op(us(4000), Phase::Postcopy);
        s.op(us(20), Phase::Postcopy);
        assert_eq!(
            s.tally,
            [
                Tally {
                    ops: 2,
                    slow: 1,
                    stalled: us(900)
                },
                Tally {
                    ops: 2,
                    slow: 1,
                    stalled: us(500)
                },
                Tally {
                    ops: 3,
                    slow: 2,
                    stalled: us(7000)
                },
            ]
        );
        let l = s.line();
        assert!(l.contains("postcopy_slow=2 postcopy_ms=7.0"), "{l}");
        assert!(l.contains("usual_us=11.0 threshold_us=500"), "{l}");
    }

    #[test]
    fn a_slow_machine_raises_the_threshold() {
        let mut s = Stalls::default();
        for _ in 0..CALIBRATION_OPS {
            s.op(us(100), Phase::Before);
        }
        assert_eq!(s.calibrated(), Some((us(100), us(2000))));
        s.op(us(1999), Phase::Postcopy);
        assert_eq!(s.tally[2].slow, 0);
    }
}
