// SPDX-License-Identifier: GPL-2.0

//! A bounded reverse map, frame → one (process, virtual address) mapping
//! it, for the hot frames only: the prefetcher can only touch a frame
//! through some process's address space (`/proc/PID/mem`).

/// Where a frame is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The process.
    pub pid: u32,
    /// A virtual address in it (page aligned).
    pub vaddr: u64,
}

/// Frame → mapping, at most `cap` frames (built per scan, then sorted).
#[derive(Clone, Debug, Default)]
pub struct Rmap {
    entries: Vec<(u64, Mapping)>,
    cap: usize,
    dropped: u64,
}

impl Rmap {
    /// An empty map holding at most `cap` frames (24 bytes each).
    pub fn new(cap: usize) -> Self {
        Rmap {
            entries: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    /// Empties it for the next scan.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.dropped = 0;
    }

    /// Adds a mapping; over the cap it is counted and dropped.
    pub fn insert(&mut self, pfn: u64, pid: u32, vaddr: u64) {
        if self.entries.len() < self.cap {
            self.entries.push((pfn, Mapping { pid, vaddr }));
        } else {
            self.dropped += 1;
        }
    }

    /// Sorts for lookups; a frame mapped twice keeps its first mapping.
    pub fn finish(&mut self) {
        self.entries.sort_by_key(|e| e.0);
        self.entries.dedup_by_key(|e| e.0);
    }

    /// The mapping of `pfn` (after [`Rmap::finish`]).
    pub fn lookup(&self, pfn: u64) -> Option<Mapping> {
        let i = self.entries.binary_search_by_key(&pfn, |e| e.0).ok()?;
        Some(self.entries[i].1)
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Mappings dropped over the cap in the last scan.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_first_wins() {
        let mut r = Rmap::new(3);
        r.insert(50, 1, 0x1000);
        r.insert(10, 2, 0x2000);
        r.insert(50, 3, 0x3000);
        r.insert(70, 4, 0x4000);
        r.finish();
        assert_eq!((r.len(), r.dropped()), (2, 1));
        assert_eq!(
            r.lookup(50),
            Some(Mapping {
                pid: 1,
                vaddr: 0x1000
            })
        );
        assert_eq!(r.lookup(10).map(|m| m.pid), Some(2));
        assert_eq!(r.lookup(70), None);
        r.clear();
        assert!(r.is_empty() && r.dropped() == 0);
    }
}
