// SPDX-License-Identifier: GPL-2.0

//! The obviously-correct page set: one `bool` per frame, one frame per step.
//!
//! Too slow for real use; it exists so tests can run every scheme on it and
//! on [`crate::bitset::Bitset`] and demand identical results.

use crate::bitset::{Costs, Inserted, Moved, PageSet};

/// A set of frames as a `Vec<bool>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NaiveSet {
    bits: Vec<bool>,
}

impl PageSet for NaiveSet {
    fn empty(len: u64) -> Self {
        NaiveSet {
            bits: vec![false; len as usize],
        }
    }

    fn full(len: u64) -> Self {
        NaiveSet {
            bits: vec![true; len as usize],
        }
    }

    fn len(&self) -> u64 {
        self.bits.len() as u64
    }

    fn count(&self) -> u64 {
        self.bits.iter().filter(|&&b| b).count() as u64
    }

    fn contains(&self, p: u64) -> bool {
        self.bits.get(p as usize).copied().unwrap_or(false)
    }

    fn insert(&mut self, p: u64) -> bool {
        match self.bits.get_mut(p as usize) {
            Some(b) => !std::mem::replace(b, true),
            None => false,
        }
    }

    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|b| *b = false);
    }

    fn invert(&mut self) {
        self.bits.iter_mut().for_each(|b| *b = !*b);
    }

    fn insert_range(&mut self, start: u64, pages: u64) -> Inserted {
        let mut out = Inserted {
            new: 0,
            first: 0,
            last: 0,
        };
        let end = start.saturating_add(pages).min(self.len());
        for p in start..end {
            if self.insert(p) {
                if out.new == 0 {
                    out.first = p;
                }
                out.last = p;
                out.new += 1;
            }
        }
        out
    }

    fn take(&mut self, from: u64, n: u64, skip: Option<&Self>) -> (u64, u64) {
        if n == 0 {
            return (0, from);
        }
        let mut taken = 0;
        for p in from..self.len() {
            if !self.bits[p as usize] {
                continue;
            }
            self.bits[p as usize] = false;
            if skip.is_some_and(|s| s.contains(p)) {
                continue;
            }
            taken += 1;
            if taken == n {
                return (n, p + 1);
            }
        }
        (taken, self.len())
    }

    fn fill(&mut self, from: u64, to: u64, n: u64) -> (u64, u64) {
        if n == 0 {
            return (0, from);
        }
        let to = to.min(self.len());
        let mut filled = 0;
        for p in from..to {
            if self.insert(p) {
                filled += 1;
                if filled == n {
                    return (n, p + 1);
                }
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
        let mut m = Moved {
            normal: 0,
            cheap: 0,
            spent: 0,
            pos: from,
            done: false,
        };
        if budget < c.normal {
            return m;
        }
        for p in from..self.len() {
            if !self.bits[p as usize] {
                continue;
            }
            self.bits[p as usize] = false;
            if skip.is_some_and(|s| s.contains(p)) {
                continue;
            }
            if cheap.contains(p) {
                m.cheap += 1;
                m.spent += c.cheap;
            } else {
                m.normal += 1;
                m.spent += c.normal;
            }
            if budget - m.spent < c.normal {
                m.pos = p + 1;
                return m;
            }
        }
        m.pos = self.len().max(from);
        m.done = true;
        m
    }

    fn fill_costed(&mut self, from: u64, to: u64, budget: u64, cheap: &Self, c: Costs) -> Moved {
        let to = to.min(self.len());
        let mut m = Moved {
            normal: 0,
            cheap: 0,
            spent: 0,
            pos: from,
            done: false,
        };
        if budget < c.normal {
            return m;
        }
        for p in from..to {
            if self.insert(p) {
                if cheap.contains(p) {
                    m.cheap += 1;
                    m.spent += c.cheap;
                } else {
                    m.normal += 1;
                    m.spent += c.normal;
                }
                if budget - m.spent < c.normal {
                    m.pos = p + 1;
                    return m;
                }
            }
        }
        m.pos = to.max(from);
        m.done = true;
        m
    }

    fn next_absent(&self, from: u64, to: u64) -> Option<u64> {
        (from..to.min(self.len())).find(|&p| !self.contains(p))
    }

    fn prev_absent(&self, from: u64, to: u64) -> Option<u64> {
        (from..to.min(self.len()))
            .rev()
            .find(|&p| !self.contains(p))
    }
}
