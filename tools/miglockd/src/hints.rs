// SPDX-License-Identifier: GPL-2.0

//! A VM's latest hint batch: the guest's working-set figures and the ranked
//! ranges it will touch next.
//!
//! A batch arrives as one `Workload` frame and its `Hints` frames, in order
//! on the link. Every range is checked (non-empty, no overflow, below the
//! guest's `pfn_limit`, which itself is capped), and a batch never grows
//! past [`MAX_RANGES`], so a guest cannot make the agent hold more than a
//! fixed amount for it.

use miglock_abi::wire::HintRange;
use serde::Serialize;

/// Most ranges kept per VM (the module sends at most 1024 a batch).
pub const MAX_RANGES: usize = 4096;
/// Largest `pfn_limit` believed: 2^40 frames (4 PiB of 4 KiB pages).
pub const MAX_PFN_LIMIT: u64 = 1 << 40;

/// The guest's figures for a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The tracer's sampling interval, ms.
    pub interval_ms: u32,
    /// Pages touched recently.
    pub wss_pages: u64,
    /// Pages written per second.
    pub dirty_pages_per_s: u64,
    /// Every frame number is below this.
    pub pfn_limit: u64,
}

/// One batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Its number.
    pub batch: u32,
    /// When its first frame arrived (agent clock, ms).
    pub received_ms: u64,
    /// The figures, if its `Workload` frame arrived.
    pub workload: Option<Workload>,
    /// Ranges in rank order, hottest first.
    pub ranges: Vec<HintRange>,
}

impl Batch {
    /// Pages the ranges cover.
    pub fn pages(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.pages)).sum()
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HintStats {
    /// Batches started.
    pub batches: u64,
    /// Hint and workload frames accepted.
    pub frames: u64,
    /// Frames rejected (bad ranges, bad figures).
    pub invalid: u64,
    /// Frames over the hint rate, dropped.
    pub rate_dropped: u64,
    /// Ranges beyond [`MAX_RANGES`], dropped.
    pub truncated: u64,
}

/// The latest batch and the counters.
#[derive(Clone, Debug, Default)]
pub struct HintStore {
    /// The latest batch.
    pub latest: Option<Batch>,
    /// Counters.
    pub stats: HintStats,
}

impl HintStore {
    /// A `Workload` frame: starts batch `batch`. False if the figures are
    /// impossible.
    pub fn workload(&mut self, batch: u32, w: Workload, now_ms: u64) -> bool {
        if w.pfn_limit == 0 || w.pfn_limit > MAX_PFN_LIMIT || w.wss_pages > w.pfn_limit {
            self.stats.invalid += 1;
            return false;
        }
        self.stats.batches += 1;
        self.stats.frames += 1;
        self.latest = Some(Batch {
            batch,
            received_ms: now_ms,
            workload: Some(w),
            ranges: Vec::new(),
        });
        true
    }

    /// A `Hints` frame of batch `batch`: appended to it if it is the current
    /// batch, else it starts a new one (its figures then unknown). False, and
    /// nothing changes, if any range is invalid.
    pub fn hints(&mut self, batch: u32, ranges: &[HintRange], now_ms: u64) -> bool {
        let current = self.latest.as_ref().filter(|b| b.batch == batch);
        let limit = current
            .and_then(|b| b.workload)
            .map_or(MAX_PFN_LIMIT, |w| w.pfn_limit);
        let valid = ranges.iter().all(|r| {
            r.pages > 0
                && r.start_pfn
                    .checked_add(r.pages.into())
                    .is_some_and(|end| end <= limit)
        });
        if !valid {
            self.stats.invalid += 1;
            return false;
        }
        if current.is_none() {
            self.stats.batches += 1;
            self.latest = Some(Batch {
                batch,
                received_ms: now_ms,
                ..Batch::default()
            });
        }
        self.stats.frames += 1;
        let Some(b) = self.latest.as_mut() else {
            return false;
        };
        let room = MAX_RANGES - b.ranges.len();
        b.ranges
            .extend_from_slice(&ranges[..ranges.len().min(room)]);
        self.stats.truncated += ranges.len().saturating_sub(room) as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start_pfn: u64, pages: u32, score: u32) -> HintRange {
        HintRange {
            start_pfn,
            pages,
            score,
        }
    }

    const W: Workload = Workload {
        interval_ms: 1000,
        wss_pages: 10,
        dirty_pages_per_s: 5,
        pfn_limit: 100,
    };

    #[test]
    fn a_batch_is_its_workload_and_hint_frames_in_order() {
        let mut s = HintStore::default();
        assert!(s.workload(7, W, 1));
        assert!(s.hints(7, &[r(1, 2, 9), r(50, 1, 8)], 2));
        assert!(s.hints(7, &[r(90, 10, 3)], 3));
        let b = s.latest.as_ref().unwrap();
        assert_eq!(b.batch, 7);
        assert_eq!(b.received_ms, 1);
        assert_eq!(b.workload, Some(W));
        assert_eq!(b.ranges, vec![r(1, 2, 9), r(50, 1, 8), r(90, 10, 3)]);
        assert_eq!(b.pages(), 13);
        // The next batch replaces it.
        assert!(s.workload(8, W, 4));
        assert!(s.latest.as_ref().unwrap().ranges.is_empty());
        assert_eq!(s.stats.batches, 2);
        assert_eq!(s.stats.frames, 4);
    }

    #[test]
    fn bad_ranges_and_figures_are_refused_whole() {
        let mut s = HintStore::default();
        assert!(s.workload(1, W, 0));
        assert!(!s.hints(1, &[r(1, 1, 1), r(99, 2, 1)], 0));
        assert!(!s.hints(1, &[r(1, 0, 1)], 0));
        assert!(!s.hints(1, &[r(u64::MAX, 1, 1)], 0));
        assert!(
            s.latest.as_ref().unwrap().ranges.is_empty(),
            "nothing half-applied"
        );
        assert!(!s.workload(2, Workload { pfn_limit: 0, ..W }, 0));
        assert!(!s.workload(
            2,
            Workload {
                wss_pages: 101,
                ..W
            },
            0
        ));
        assert!(!s.workload(
            2,
            Workload {
                pfn_limit: MAX_PFN_LIMIT + 1,
                ..W
            },
            0
        ));
        assert_eq!(s.stats.invalid, 6);
        assert_eq!(s.latest.as_ref().unwrap().batch, 1);
    }

    #[test]
    fn a_batch_never_grows_past_the_cap() {
        let mut s = HintStore::default();
        let many: Vec<_> = (0..100).map(|i| r(i, 1, 1)).collect();
        for _ in 0..50 {
            assert!(s.hints(3, &many, 0));
        }
        assert_eq!(s.latest.as_ref().unwrap().ranges.len(), MAX_RANGES);
        assert_eq!(s.stats.truncated, 5000 - MAX_RANGES as u64);
    }
}
