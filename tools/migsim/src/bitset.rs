// SPDX-License-Identifier: GPL-2.0

//! Sets of page frames, one bit per frame, worked on 64 frames at a time.
//!
//! Every scheme is written against [`PageSet`], so the same engine runs on
//! [`Bitset`] (fast) and on the naive per-page reference
//! ([`crate::reference::NaiveSet`]) that the property tests compare it with.

/// What a range insertion changed: how many frames were new, and the first
/// and last of them (post-copy pre-paging pivots on those).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// Frames that were not in the set before.
    pub new: u64,
    /// Lowest new frame (meaningless when `new == 0`).
    pub first: u64,
    /// Highest new frame (meaningless when `new == 0`).
    pub last: u64,
}

/// Wire costs of a page: a normal page, and a cheap one (an all-zero page,
/// sent as a header only). `cheap <= normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costs {
    /// Cost of a normal page.
    pub normal: u64,
    /// Cost of a page also in the `cheap` set.
    pub cheap: u64,
}

/// What a costed `take` or `fill` moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Normal pages moved.
    pub normal: u64,
    /// Cheap pages moved.
    pub cheap: u64,
    /// Cost spent.
    pub spent: u64,
    /// Position after the last page moved (`from` if none); the end when
    /// `done`.
    pub pos: u64,
    /// True when the candidates ran out before the budget did.
    pub done: bool,
}

impl Moved {
    fn start(pos: u64) -> Self {
        Moved {
            normal: 0,
            cheap: 0,
            spent: 0,
            pos,
            done: false,
        }
    }

    /// Pages moved.
    pub fn pages(&self) -> u64 {
        self.normal + self.cheap
    }
}

/// The operations the migration engines need on a set of frames.
///
/// Positions are frame numbers below `len()`; ranges past the end are
/// clipped, never a panic.
pub trait PageSet: Clone {
    /// No frames of `len`.
    fn empty(len: u64) -> Self;
    /// All frames of `len`.
    fn full(len: u64) -> Self;
    /// Frames the set can hold.
    fn len(&self) -> u64;
    /// Whether the set holds no frames at all.
    fn is_empty(&self) -> bool {
        self.count() == 0
    }
    /// Frames in the set.
    fn count(&self) -> u64;
    /// Whether `p` is in the set.
    fn contains(&self, p: u64) -> bool;
    /// Adds `p`; true if it was not there.
    fn insert(&mut self, p: u64) -> bool;
    /// Removes every frame.
    fn clear(&mut self);
    /// Replaces the set by its complement.
    fn invert(&mut self);
    /// Adds `pages` frames from `start`, reporting what was new.
    fn insert_range(&mut self, start: u64, pages: u64) -> Inserted;
    /// Removes up to `n` members at or after `from` in address order,
    /// skipping (and dropping from the set) members also in `skip`.
    /// Returns (removed, position after the last removed member), the
    /// position being `len()` when the members ran out first.
    fn take(&mut self, from: u64, n: u64, skip: Option<&Self>) -> (u64, u64);
    /// Adds up to `n` non-members in `[from, to)` in address order.
    /// Returns (added, position after the last added), the position being
    /// `to` when the non-members ran out first.
    fn fill(&mut self, from: u64, to: u64, n: u64) -> (u64, u64);
    /// Like [`PageSet::take`], but each member costs `c.normal`, or
    /// `c.cheap` when also in `cheap`: members are removed in address order
    /// while at least `c.normal` of `budget` is left before each (so
    /// leftovers below one normal page carry over to the next call).
    fn take_costed(
        &mut self,
        from: u64,
        budget: u64,
        skip: Option<&Self>,
        cheap: &Self,
        c: Costs,
    ) -> Moved;
    /// Like [`PageSet::fill`], with the costs and budget rule of
    /// [`PageSet::take_costed`].
    fn fill_costed(&mut self, from: u64, to: u64, budget: u64, cheap: &Self, c: Costs) -> Moved;
    /// Lowest non-member in `[from, to)`.
    fn next_absent(&self, from: u64, to: u64) -> Option<u64>;
    /// Highest non-member in `[from, to)`.
    fn prev_absent(&self, from: u64, to: u64) -> Option<u64>;
}

/// A fixed-size bitset; bits past `len` are always zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    len: u64,
}

/// Bits `[lo, hi)` of a word, `hi <= 64`.
#[inline]
fn mask(lo: u64, hi: u64) -> u64 {
    let top = if hi >= 64 { !0 } else { (1u64 << hi) - 1 };
    top & (!0u64 << lo)
}

/// Bit index of the `n`-th (1-based) set bit of `x`; `x` has at least `n`.
#[inline]
fn nth_bit(mut x: u64, n: u64) -> u64 {
    for _ in 1..n {
        x &= x - 1;
    }
    u64::from(x.trailing_zeros())
}

impl Bitset {
    fn words_for(len: u64) -> usize {
        len.div_ceil(64) as usize
    }

    fn trim(&mut self) {
        let tail = self.len % 64;
        if tail != 0 {
            if let Some(w) = self.words.last_mut() {
                *w &= mask(0, tail);
            }
        }
    }

    /// The maximal runs of members, in address order.
    pub fn ranges(&self) -> Vec<miglock_trace::Range> {
        let mut out: Vec<miglock_trace::Range> = Vec::new();
        for (i, &w) in self.words.iter().enumerate() {
            let mut x = w;
            let base = i as u64 * 64;
            while x != 0 {
                let lo = u64::from(x.trailing_zeros());
                let run = u64::from((x >> lo).trailing_ones());
                let start = base + lo;
                match out.last_mut() {
                    Some(r) if r.end() == start => r.pages += run,
                    _ => out.push(miglock_trace::Range { start, pages: run }),
                }
                x &= !mask(lo, lo + run);
            }
        }
        out
    }
}

impl PageSet for Bitset {
    fn empty(len: u64) -> Self {
        Bitset {
            words: vec![0; Self::words_for(len)],
            len,
        }
    }

    fn full(len: u64) -> Self {
        let mut b = Bitset {
            words: vec![!0; Self::words_for(len)],
            len,
        };
        b.trim();
        b
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    fn contains(&self, p: u64) -> bool {
        p < self.len && self.words[(p / 64) as usize] & (1 << (p % 64)) != 0
    }

    fn insert(&mut self, p: u64) -> bool {
        if p >= self.len {
            return false;
        }
        let w = &mut self.words[(p / 64) as usize];
        let bit = 1 << (p % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn invert(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.trim();
    }

    fn insert_range(&mut self, start: u64, pages: u64) -> Inserted {
        let end = start.saturating_add(pages).min(self.len);
        let mut out = Inserted {
            new: 0,
            first: 0,
            last: 0,
        };
        if start >= end {
            return out;
        }
        let (w0, w1) = (start / 64, (end - 1) / 64);
        for w in w0..=w1 {
            let lo = if w == w0 { start % 64 } else { 0 };
            let hi = if w == w1 { (end - 1) % 64 + 1 } else { 64 };
            let m = mask(lo, hi);
            let word = &mut self.words[w as usize];
            let fresh = m & !*word;
            if fresh != 0 {
                if out.new == 0 {
                    out.first = w * 64 + u64::from(fresh.trailing_zeros());
                }
                out.last = w * 64 + 63 - u64::from(fresh.leading_zeros());
                out.new += u64::from(fresh.count_ones());
            }
            *word |= m;
        }
        out
    }

    fn take(&mut self, from: u64, n: u64, skip: Option<&Self>) -> (u64, u64) {
        if n == 0 {
            return (0, from);
        }
        if from >= self.len {
            return (0, self.len);
        }
        let mut taken = 0;
        let mut lo = from % 64;
        for w in (from / 64) as usize..self.words.len() {
            let live = self.words[w] & (!0u64 << lo);
            lo = 0;
            if live == 0 {
                continue;
            }
            let elig = match skip {
                Some(s) => live & !s.words[w],
                None => live,
            };
            let c = u64::from(elig.count_ones());
            let need = n - taken;
            if c < need {
                self.words[w] &= !live;
                taken += c;
            } else {
                let b = nth_bit(elig, need);
                self.words[w] &= !(live & mask(0, b + 1));
                return (n, w as u64 * 64 + b + 1);
            }
        }
        (taken, self.len)
    }

    fn fill(&mut self, from: u64, to: u64, n: u64) -> (u64, u64) {
        let to = to.min(self.len);
        if n == 0 {
            return (0, from);
        }
        if from >= to {
            return (0, to);
        }
        let mut filled = 0;
        let (w0, w1) = (from / 64, (to - 1) / 64);
        for w in w0..=w1 {
            let lo = if w == w0 { from % 64 } else { 0 };
            let hi = if w == w1 { (to - 1) % 64 + 1 } else { 64 };
            let word = &mut self.words[w as usize];
            let free = !*word & mask(lo, hi);
            if free == 0 {
                continue;
            }
            let c = u64::from(free.count_ones());
            let need = n - filled;
            if c < need {
                *word |= free;
                filled += c;
            } else {
                let b = nth_bit(free, need);
                *word |= free & mask(0, b + 1);
                return (n, w * 64 + b + 1);
            }
        }
        (filled, to)
    }

    fn take_costed(
        &mut self,
        from: u64,
        budget: u64,
        skip: Option<&Self>,
        cheap: &Self,
        c: Costs,
    ) -> Moved {
        let mut m = Moved::start(from);
        if budget < c.normal {
            return m;
        }
        let mut lo = from % 64;
        for w in (from / 64) as usize..self.words.len() {
            let live = self.words[w] & (!0u64 << lo);
            lo = 0;
            if live == 0 {
                continue;
            }
            let elig = match skip {
                Some(s) => live & !s.words[w],
                None => live,
            };
            let ch = elig & cheap.words[w];
            let (nc, nn) = (
                u64::from(ch.count_ones()),
                u64::from((elig & !ch).count_ones()),
            );
            let all = nn * c.normal + nc * c.cheap;
            if budget - m.spent >= all.saturating_add(c.normal) {
                self.words[w] &= !live;
                m.normal += nn;
                m.cheap += nc;
                m.spent += all;
                continue;
            }
            let mut x = elig;
            while x != 0 {
                let b = u64::from(x.trailing_zeros());
                x &= x - 1;
                if ch & (1 << b) != 0 {
                    m.cheap += 1;
                    m.spent += c.cheap;
                } else {
                    m.normal += 1;
                    m.spent += c.normal;
                }
                if budget - m.spent < c.normal {
                    self.words[w] &= !(live & mask(0, b + 1));
                    m.pos = w as u64 * 64 + b + 1;
                    return m;
                }
            }
            self.words[w] &= !live;
        }
        m.pos = self.len.max(from);
        m.done = true;
        m
    }

    fn fill_costed(&mut self, from: u64, to: u64, budget: u64, cheap: &Self, c: Costs) -> Moved {
        let to = to.min(self.len);
        let mut m = Moved::start(from);
        if budget < c.normal {
            return m;
        }
        m.done = true;
        if from >= to {
            m.pos = to.max(from);
            return m;
        }
        let (w0, w1) = (from / 64, (to - 1) / 64);
        for w in w0..=w1 {
            let lo = if w == w0 { from % 64 } else { 0 };
            let hi = if w == w1 { (to - 1) % 64 + 1 } else { 64 };
            let free = !self.words[w as usize] & mask(lo, hi);
            if free == 0 {
                continue;
            }
            let ch = free & cheap.words[w as usize];
            let (nc, nn) = (
                u64::from(ch.count_ones()),
                u64::from((free & !ch).count_ones()),
            );
            let all = nn * c.normal + nc * c.cheap;
            if budget - m.spent >= all.saturating_add(c.normal) {
                self.words[w as usize] |= free;
                m.normal += nn;
                m.cheap += nc;
                m.spent += all;
                continue;
            }
            let mut x = free;
            while x != 0 {
                let b = u64::from(x.trailing_zeros());
                x &= x - 1;
                self.words[w as usize] |= 1 << b;
                if ch & (1 << b) != 0 {
                    m.cheap += 1;
                    m.spent += c.cheap;
                } else {
                    m.normal += 1;
                    m.spent += c.normal;
                }
                if budget - m.spent < c.normal {
                    m.pos = w * 64 + b + 1;
                    m.done = false;
                    return m;
                }
            }
        }
        m.pos = to;
        m
    }

    fn next_absent(&self, from: u64, to: u64) -> Option<u64> {
        let to = to.min(self.len);
        if from >= to {
            return None;
        }
        let (w0, w1) = (from / 64, (to - 1) / 64);
        for w in w0..=w1 {
            let lo = if w == w0 { from % 64 } else { 0 };
            let hi = if w == w1 { (to - 1) % 64 + 1 } else { 64 };
            let free = !self.words[w as usize] & mask(lo, hi);
            if free != 0 {
                return Some(w * 64 + u64::from(free.trailing_zeros()));
            }
        }
        None
    }

    fn prev_absent(&self, from: u64, to: u64) -> Option<u64> {
        let to = to.min(self.len);
        if from >= to {
            return None;
        }
        let (w0, w1) = (from / 64, (to - 1) / 64);
        for w in (w0..=w1).rev() {
            let lo = if w == w0 { from % 64 } else { 0 };
            let hi = if w == w1 { (to - 1) % 64 + 1 } else { 64 };
            let free = !self.words[w as usize] & mask(lo, hi);
            if free != 0 {
                return Some(w * 64 + 63 - u64::from(free.leading_zeros()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_has_no_bits_past_len() {
        let b = Bitset::full(70);
        assert_eq!(b.count(), 70);
        let mut e = Bitset::empty(70);
        e.invert();
        assert_eq!(e.count(), 70);
    }

    #[test]
    fn insert_range_reports_first_and_last_new() {
        let mut b = Bitset::empty(200);
        b.insert(70);
        let r = b.insert_range(60, 80);
        assert_eq!(r.new, 79);
        assert_eq!((r.first, r.last), (60, 139));
        let r = b.insert_range(65, 10);
        assert_eq!(r.new, 0);
    }

    #[test]
    fn take_skips_and_stops_after_n() {
        let mut s = Bitset::full(130);
        let mut k = Bitset::empty(130);
        k.insert_range(1, 2);
        let (n, pos) = s.take(0, 3, Some(&k));
        assert_eq!((n, pos), (3, 5));
        assert!(!s.contains(1) && !s.contains(2) && !s.contains(4) && s.contains(5));
        let (n, pos) = s.take(pos, 1000, None);
        assert_eq!((n, pos), (125, 130));
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn fill_stops_at_to() {
        let mut s = Bitset::empty(100);
        s.insert(10);
        assert_eq!(s.fill(5, 20, 5), (5, 10));
        assert_eq!(s.fill(10, 20, 100), (9, 20));
        assert_eq!(s.count(), 15);
    }

    #[test]
    fn absent_search_both_ways() {
        let mut s = Bitset::full(200);
        s.take(0, 1, None);
        let mut k = Bitset::empty(200);
        k.insert(150);
        s.take(150, 1, None);
        assert_eq!(s.next_absent(1, 200), Some(150));
        assert_eq!(s.prev_absent(0, 150), Some(0));
        assert_eq!(s.prev_absent(1, 150), None);
        assert_eq!(s.next_absent(151, 200), None);
    }

    #[test]
    fn ranges_coalesce_across_words() {
        let mut s = Bitset::empty(300);
        s.insert_range(60, 10);
        s.insert_range(128, 64);
        s.insert(299);
        let r: Vec<_> = s.ranges().iter().map(|r| (r.start, r.pages)).collect();
        assert_eq!(r, vec![(60, 10), (128, 64), (299, 1)]);
    }
}
