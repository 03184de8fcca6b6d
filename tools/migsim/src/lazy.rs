// SPDX-License-Identifier: GPL-2.0

//! Lazy-copy (Sun, Lv, Tao, COEN283 2014; after Kim et al.'s Guide-Copy):
//! post-copy whose background push sends first the pages the guest will
//! need soonest. The paper learns them from a forward context running
//! ahead at the source; here a [`HintSource`] ranks pages, causally from
//! the trace before the migration start ([`History`]), from a file
//! ([`HintList`]) or, as an upper bound only, from the future ([`Oracle`]).

use crate::bitset::{Bitset, PageSet};
use miglock_trace::{Header, Range, Sample};

/// Ranks pages for the push: most urgent first.
pub trait HintSource {
    /// Short name for reports.
    fn name(&self) -> String;
    /// Page ranges in push order. `past` is the trace before the migration
    /// starts; `future` the trace after it, which only an oracle may read.
    /// Pages left out are pushed afterwards in address order.
    fn push_order(&self, header: &Header, past: &[Sample], future: &[Sample]) -> Vec<Range>;
}

/// Recency and frequency over the last `window` samples before the start:
/// pages touched in the last few samples first, each group ordered by how
/// many of the window's samples touched them.
#[derive(Clone, Debug)]
pub struct History {
    /// Samples of history looked at (1 to 100).
    pub window: usize,
}

/// Samples counted as "recent" by [`History`].
const RECENT: usize = 4;

impl HintSource for History {
    fn name(&self) -> String {
        format!("history({})", self.window)
    }

    fn push_order(&self, header: &Header, past: &[Sample], _future: &[Sample]) -> Vec<Range> {
        let w = self.window.clamp(1, 100);
        let hist = &past[past.len().saturating_sub(w)..];
        if hist.is_empty() {
            return Vec::new();
        }
        let limit = header.pfn_limit;
        // score = samples touching the page (<= w), plus w if one of the
        // last RECENT did: at most 2w <= 200, fits a byte.
        let mut score = vec![0u8; limit as usize];
        for s in hist {
            for r in &s.accessed {
                for p in r.start..r.end().min(limit) {
                    score[p as usize] += 1;
                }
            }
        }
        let wb = w as u8;
        for s in &hist[hist.len().saturating_sub(RECENT)..] {
            for r in &s.accessed {
                for p in r.start..r.end().min(limit) {
                    if score[p as usize] <= wb {
                        score[p as usize] += wb;
                    }
                }
            }
        }
        let mut buckets: Vec<Vec<Range>> = vec![Vec::new(); 2 * w + 1];
        for (p, &sc) in score.iter().enumerate() {
            if sc == 0 {
                continue;
            }
            let b = &mut buckets[sc as usize];
            let p = p as u64;
            match b.last_mut() {
                Some(r) if r.end() == p => r.pages += 1,
                _ => b.push(Range { start: p, pages: 1 }),
            }
        }
        buckets.into_iter().rev().flatten().collect()
    }
}

/// An externally supplied order (a hint file), used as given.
#[derive(Clone, Debug)]
pub struct HintList(pub Vec<Range>);

impl HintSource for HintList {
    fn name(&self) -> String {
        "hint-file".to_string()
    }

    fn push_order(&self, header: &Header, _past: &[Sample], _future: &[Sample]) -> Vec<Range> {
        let limit = header.pfn_limit;
        self.0
            .iter()
            .filter(|r| r.start < limit)
            .map(|r| Range {
                start: r.start,
                pages: r.pages.min(limit - r.start),
            })
            .collect()
    }
}

/// Perfect hints: pages in the order the workload will first touch them.
/// Not causal; it bounds what any predictor could achieve.
#[derive(Clone, Debug)]
pub struct Oracle;

impl HintSource for Oracle {
    fn name(&self) -> String {
        "oracle".to_string()
    }

    fn push_order(&self, header: &Header, _past: &[Sample], future: &[Sample]) -> Vec<Range> {
        let mut seen = Bitset::empty(header.pfn_limit);
        let mut out: Vec<Range> = Vec::new();
        for s in future {
            for r in s.accessed.iter().chain(&s.dirtied) {
                for p in r.start..r.end().min(header.pfn_limit) {
                    if seen.insert(p) {
                        match out.last_mut() {
                            Some(x) if x.end() == p => x.pages += 1,
                            _ => out.push(Range { start: p, pages: 1 }),
                        }
                    }
                }
            }
        }
        out
    }
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses a hint file: one `PFN` or `START+PAGES` per line, most urgent
/// first; `#` starts a comment; numbers decimal or `0x` hex.
pub fn parse_hints(text: &str) -> Result<Vec<Range>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("line {}: expected PFN or START+PAGES, got {line:?}", i + 1);
        let r = match line.split_once('+') {
            Some((a, b)) => Range {
                start: parse_num(a.trim()).ok_or_else(bad)?,
                pages: parse_num(b.trim()).filter(|&n| n > 0).ok_or_else(bad)?,
            },
            None => Range {
                start: parse_num(line).ok_or_else(bad)?,
                pages: 1,
            },
        };
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(acc: &[(u64, u64)]) -> Sample {
        Sample {
            t_us: 0,
            accessed: acc
                .iter()
                .map(|&(start, pages)| Range { start, pages })
                .collect(),
            dirtied: vec![],
        }
    }

    #[test]
    fn history_puts_recent_and_frequent_first() {
        let h = Header {
            page_size: 4096,
            pfn_limit: 100,
            interval_us: 1000,
        };
        // page 50 touched often but long ago, 10 once but recently, 20
        // both often and recently
        let mut past = vec![s(&[(20, 1), (50, 1)]); 10];
        past.extend(vec![s(&[(20, 1)]); 4]);
        past.push(s(&[(10, 1), (20, 1)]));
        let order = History { window: 20 }.push_order(&h, &past, &[]);
        let pfns: Vec<u64> = order.iter().map(|r| r.start).collect();
        assert_eq!(pfns, vec![20, 10, 50]);
    }

    #[test]
    fn oracle_orders_by_first_touch() {
        let h = Header {
            page_size: 4096,
            pfn_limit: 100,
            interval_us: 1000,
        };
        let fut = vec![s(&[(7, 2)]), s(&[(3, 1), (7, 3)])];
        let order = Oracle.push_order(&h, &[], &fut);
        let v: Vec<_> = order.iter().map(|r| (r.start, r.pages)).collect();
        assert_eq!(v, vec![(7, 2), (3, 1), (9, 1)]);
    }

    #[test]
    fn hint_file_syntax() {
        let r = parse_hints("# hot\n5\n0x10+4  # tail\n\n").unwrap();
        assert_eq!(
            r,
            vec![
                Range { start: 5, pages: 1 },
                Range {
                    start: 16,
                    pages: 4
                }
            ]
        );
        assert!(parse_hints("12+0").unwrap_err().contains("line 1"));
        assert!(parse_hints("x").is_err());
    }
}
