// SPDX-License-Identifier: GPL-2.0

//! The hot-frame model: per frame one aging byte and one frequency byte,
//! so memory is 2 bytes × `pfn_limit`, allocated once at start (512 KiB
//! for a 1 GiB guest) and never grown.
//!
//! Aging is a shift register: each sample `age = age >> 1 | accessed << 7`.
//! Bit 7 is the last sample, bit 0 eight samples ago, so as a number it
//! orders frames by recency first and then by how often they were used.
//! `freq` counts samples with an access (saturating, halved every
//! [`FREQ_HALVING`] samples) and breaks ties over a longer horizon.

use crate::bitset::Bitset;
use std::time::Duration;

/// Samples between halvings of every frequency counter.
pub const FREQ_HALVING: u64 = 64;
/// Weight of the newest interval in the dirty-rate average.
pub const DIRTY_ALPHA: f64 = 0.3;

/// A frame's hint score: age in the high byte, frequency in the low.
pub fn score(age: u8, freq: u8) -> u32 {
    u32::from(age) << 8 | u32::from(freq)
}

/// What one update saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Frames accessed in this sample.
    pub accessed: u64,
    /// Frames accessed in the last `wss_samples` samples.
    pub wss: u64,
}

/// Per-frame state and the workload figures derived from it.
pub struct Model {
    age: Vec<u8>,
    freq: Vec<u8>,
    wss_mask: u8,
    samples: u64,
    dirty_rate: Option<f64>,
    last: Update,
    /// Per part of a shared idle sampling ([`Model::update_part`]): rounds
    /// seen and working set after its last round.
    parts: Vec<PartState>,
}

#[derive(Clone, Copy, Debug, Default)]
struct PartState {
    rounds: u64,
    wss: u64,
}

impl Model {
    /// A model of `frames` frames whose working set is what was accessed in
    /// the last `wss_samples` (1–8) samples.
    pub fn new(frames: u64, wss_samples: u8) -> Self {
        let k = wss_samples.clamp(1, 8);
        Model {
            age: vec![0; frames as usize],
            freq: vec![0; frames as usize],
            // The top `k` bits; a shift by 8 overflows a u8 (in a release
            // build it wrapped to a shift by 0: an empty mask, no working set).
            wss_mask: !u8::MAX.checked_shr(u32::from(k)).unwrap_or(0),
            samples: 0,
            dirty_rate: None,
            last: Update::default(),
            parts: Vec::new(),
        }
    }

    /// Frames modelled.
    pub fn frames(&self) -> u64 {
        self.age.len() as u64
    }

    /// Bytes of per-frame state.
    pub fn memory_bytes(&self) -> usize {
        self.age.len() + self.freq.len()
    }

    /// Ages every frame by one sample; `accessed` are this sample's.
    pub fn update(&mut self, accessed: &Bitset) -> Update {
        let mut up = Update::default();
        let halve = self.samples > 0 && self.samples % FREQ_HALVING == 0;
        let words = accessed.words();
        for (wi, (ages, freqs)) in self
            .age
            .chunks_mut(64)
            .zip(self.freq.chunks_mut(64))
            .enumerate()
        {
            let w = words.get(wi).copied().unwrap_or(0);
            age_word(ages, freqs, w, halve, self.wss_mask, &mut up);
        }
        self.samples += 1;
        self.last = up;
        up
    }

    /// One round of part `part` of `parts` (idle sampling shared over
    /// several intervals, see [`crate::idle::IdleBitmap::part_words`]):
    /// ages only the frames of the 64-frame words in `words`, with
    /// `accessed` as this round's accesses; every other frame keeps its
    /// state, since nothing new is known about it. So a frame's aging byte
    /// counts its own part's rounds, and frequencies halve every
    /// [`FREQ_HALVING`] rounds of the part. The working set is the sum over
    /// the parts of the frames accessed in the last `wss_samples` rounds of
    /// their part (as of each part's last round; a part not yet sampled
    /// adds nothing). `Update::accessed` counts this round's frames.
    pub fn update_part(
        &mut self,
        accessed: &Bitset,
        part: usize,
        parts: usize,
        words: &[(u64, u64)],
    ) -> Update {
        if self.parts.len() != parts {
            self.parts = vec![PartState::default(); parts];
        }
        let st = self.parts[part];
        let halve = st.rounds > 0 && st.rounds % FREQ_HALVING == 0;
        let mut up = Update::default();
        let aw = accessed.words();
        let nwords = self.age.len().div_ceil(64) as u64;
        for &(ws, we) in words {
            for wi in ws..we.min(nwords) {
                let (lo, hi) = (
                    wi as usize * 64,
                    (wi as usize * 64 + 64).min(self.age.len()),
                );
                let (ages, freqs) = (&mut self.age[lo..hi], &mut self.freq[lo..hi]);
                let w = aw.get(wi as usize).copied().unwrap_or(0);
                age_word(ages, freqs, w, halve, self.wss_mask, &mut up);
            }
        }
        self.parts[part] = PartState {
            rounds: st.rounds + 1,
            wss: up.wss,
        };
        up.wss = self.parts.iter().map(|p| p.wss).sum();
        self.samples += 1;
        self.last = up;
        up
    }

    /// Folds `pages` dirtied over `dt` into the dirty rate; returns it.
    pub fn note_dirty(&mut self, pages: u64, dt: Duration) -> f64 {
        let secs = dt.as_secs_f64();
        if secs <= 0.0 {
            return self.dirty_rate();
        }
        let now = pages as f64 / secs;
        let r = match self.dirty_rate {
            None => now,
            Some(old) => old + DIRTY_ALPHA * (now - old),
        };
        self.dirty_rate = Some(r);
        r
    }

    /// Pages dirtied per second (moving average).
    pub fn dirty_rate(&self) -> f64 {
        self.dirty_rate.unwrap_or(0.0)
    }

    /// The working set after the last update.
    pub fn wss(&self) -> u64 {
        self.last.wss
    }

    /// Samples seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Frame `pfn`'s aging byte (0 beyond the model).
    pub fn age(&self, pfn: u64) -> u8 {
        self.age.get(pfn as usize).copied().unwrap_or(0)
    }

    /// The aging bytes, indexed by frame.
    pub fn ages(&self) -> &[u8] {
        &self.age
    }

    /// The frequency bytes, indexed by frame.
    pub fn freqs(&self) -> &[u8] {
        &self.freq
    }

    /// Frame `pfn`'s score.
    pub fn score(&self, pfn: u64) -> u32 {
        let i = pfn as usize;
        match (self.age.get(i), self.freq.get(i)) {
            (Some(&a), Some(&f)) => score(a, f),
            _ => 0,
        }
    }
}

/// Ages the frames of one 64-frame word (`ages`, `freqs`) by one round in
/// which `w` has a bit set for each frame accessed; counts into `up`.
/// Untouched, long-cold frames (free memory, mostly) stay as they are: a
/// word of them is skipped cheaply.
fn age_word(ages: &mut [u8], freqs: &mut [u8], w: u64, halve: bool, wss_mask: u8, up: &mut Update) {
    if w == 0 && !halve && ages.iter().all(|&a| a == 0) {
        return;
    }
    up.accessed += u64::from(w.count_ones());
    for (i, (a, f)) in ages.iter_mut().zip(freqs.iter_mut()).enumerate() {
        let bit = (w >> i & 1) as u8;
        *a = *a >> 1 | bit << 7;
        if halve {
            *f >>= 1;
        }
        *f = f.saturating_add(bit);
        up.wss += u64::from(*a & wss_mask != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(frames: u64, on: &[u64]) -> Bitset {
        let mut b = Bitset::new(frames);
        for &p in on {
            b.set(p);
        }
        b
    }

    #[test]
    fn shift_register_aging() {
        let mut m = Model::new(100, 4);
        // Frame 1 every sample, frame 2 only in the first, frame 70 only in
        // the third.
        m.update(&set(100, &[1, 2]));
        assert_eq!((m.age(1), m.age(2)), (0x80, 0x80));
        m.update(&set(100, &[1]));
        let up = m.update(&set(100, &[1, 70]));
        assert_eq!(
            up,
            Update {
                accessed: 2,
                wss: 3
            }
        );
        assert_eq!(m.age(1), 0xe0);
        assert_eq!(m.age(2), 0x20);
        assert_eq!(m.age(70), 0x80);
        // Recency wins over frequency: 70 (last sample) beats 2 (older).
        assert!(m.score(70) > m.score(2));
        // Frequency breaks ties between equal ages.
        assert_eq!(m.score(1), 0xe0 << 8 | 3);
        assert_eq!(m.score(70), 0x80 << 8 | 1);
        assert_eq!(m.score(1000), 0);
    }

    #[test]
    fn working_set_window() {
        let mut m = Model::new(64, 2);
        m.update(&set(64, &[5]));
        assert_eq!(m.wss(), 1);
        m.update(&set(64, &[]));
        assert_eq!(m.wss(), 1, "still within the last 2 samples");
        m.update(&set(64, &[]));
        assert_eq!(m.wss(), 0);
        assert_eq!(m.age(5), 0x20, "aged, not forgotten");
    }

    #[test]
    fn frequency_saturates_and_halves() {
        let mut m = Model::new(1, 8);
        for _ in 0..FREQ_HALVING {
            m.update(&set(1, &[0]));
        }
        assert_eq!(m.freqs()[0], 64);
        m.update(&set(1, &[0]));
        assert_eq!(m.freqs()[0], 33, "halved then counted");
        for _ in 0..1000 {
            m.update(&set(1, &[0]));
        }
        // Steady state: halved to 64 then counted back up to 128.
        assert!((64..=128).contains(&m.freqs()[0]), "{}", m.freqs()[0]);
    }

    #[test]
    fn dirty_rate_ewma() {
        let mut m = Model::new(1, 4);
        assert_eq!(m.note_dirty(100, Duration::from_secs(1)), 100.0);
        // 100 + 0.3 × (400 − 100) = 190
        let r = m.note_dirty(200, Duration::from_millis(500));
        assert!((r - 190.0).abs() < 1e-9, "{r}");
        assert_eq!(m.note_dirty(5, Duration::ZERO), r);
    }

    #[test]
    fn memory_is_two_bytes_per_frame() {
        assert_eq!(Model::new(262144, 4).memory_bytes(), 524288);
    }

    #[test]
    fn parts_age_only_their_own_frames() {
        let mut m = Model::new(256, 2);
        // Two parts: words 0..2 and 2..4.
        let (p0, p1) = ([(0, 2)], [(2, 4)]);
        let up = m.update_part(&set(256, &[1, 130]), 0, 2, &p0);
        assert_eq!(
            up,
            Update {
                accessed: 1,
                wss: 1
            },
            "130 is not in part 0"
        );
        assert_eq!((m.age(1), m.age(130)), (0x80, 0));
        let up = m.update_part(&set(256, &[130]), 1, 2, &p1);
        assert_eq!(
            up,
            Update {
                accessed: 1,
                wss: 2
            }
        );
        assert_eq!(m.age(1), 0x80, "part 0 not aged by part 1's round");
        m.update_part(&set(256, &[]), 0, 2, &p0);
        m.update_part(&set(256, &[]), 1, 2, &p1);
        assert_eq!((m.age(1), m.age(130)), (0x40, 0x40));
        assert_eq!(m.wss(), 2, "within the last 2 rounds of each part");
        m.update_part(&set(256, &[]), 0, 2, &p0);
        assert_eq!(
            m.wss(),
            1,
            "part 0's frame left; part 1 as of its last round"
        );
        assert_eq!(m.samples(), 5);
    }
}
