// SPDX-License-Identifier: GPL-2.0

//! A fixed-size set of frame numbers, one bit per frame, in 64-bit words
//! (the idle bitmap's own layout, so its words drop straight in).

use miglock_trace::Range;

/// Bits `0..len`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    /// All clear.
    pub fn new(len: u64) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The words, bit `i` of word `w` being frame `64 w + i`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Mutable words; callers keep bits at or above `len` clear.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Sets bit `i`; ignored at or above `len`.
    pub fn set(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bits `start..end` (clipped to `len`).
    pub fn set_range(&mut self, start: u64, end: u64) {
        for i in start..end.min(self.len) {
            self.set(i);
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// `self |= other`.
    pub fn union_with(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Set bits as sorted, disjoint ranges.
    pub fn ranges(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for (wi, &w) in self.words.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                let bit = w.trailing_zeros() as u64;
                // Take the run of ones starting at `bit` inside this word.
                let run = (!(w >> bit)).trailing_zeros() as u64;
                let start = wi as u64 * 64 + bit;
                match out.last_mut() {
                    Some(r) if r.end() == start => r.pages += run,
                    _ => out.push(Range { start, pages: run }),
                }
                w = if bit + run >= 64 {
                    0
                } else {
                    w & !(((1u64 << run) - 1) << bit)
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cross_words() {
        let mut b = Bitset::new(200);
        b.set_range(3, 5);
        b.set_range(60, 130);
        b.set(199);
        b.set(200); // beyond len: ignored
        assert_eq!(b.count(), 2 + 70 + 1);
        assert_eq!(
            b.ranges(),
            vec![
                Range { start: 3, pages: 2 },
                Range {
                    start: 60,
                    pages: 70
                },
                Range {
                    start: 199,
                    pages: 1
                },
            ]
        );
        assert!(b.get(129) && !b.get(130) && !b.get(5000));
    }

    #[test]
    fn full_word_run() {
        let mut b = Bitset::new(128);
        b.words_mut()[0] = u64::MAX;
        b.words_mut()[1] = 1;
        assert_eq!(
            b.ranges(),
            vec![Range {
                start: 0,
                pages: 65
            }]
        );
    }

    #[test]
    fn ranges_match_brute_force() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut b = Bitset::new(1000);
        let mut pfns = Vec::new();
        for i in 0..1000 {
            if rng.u8(..) < 100 {
                b.set(i);
                pfns.push(i);
            }
        }
        assert_eq!(b.ranges(), miglock_trace::ranges_from_pfns(pfns));
    }
}
