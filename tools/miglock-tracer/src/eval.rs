// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer eval`: how well a trace's hot set matches a known one.
//!
//! The hot set is every page accessed in the last `N` samples. Precision is
//! the share of hot-set pages that are truly hot, recall the share of truly
//! hot pages found. With a universe (say every page of the test program,
//! hot and cold), the hot set is first cut down to it, so pages of other
//! processes and the kernel do not count against precision.

use crate::show::merge;
use anyhow::{bail, Context, Result};
use miglock_trace::{Range, Trace};
use std::fmt;
use std::path::Path;

/// Pages accessed in the last `last` samples, merged.
pub fn hot_set(trace: &Trace, last: usize) -> Vec<Range> {
    let from = trace.samples.len().saturating_sub(last);
    merge(
        trace.samples[from..]
            .iter()
            .flat_map(|s| s.accessed.iter().copied())
            .collect(),
    )
}

/// Parses one decimal frame number per line (blank lines and `#`
/// comments allowed); sorted, without duplicates.
pub fn parse_pfns(text: &str) -> std::result::Result<Vec<u64>, String> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        v.push(
            t.parse::<u64>()
                .map_err(|_| format!("line {}: not a decimal PFN: {t:?}", i + 1))?,
        );
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// [`parse_pfns`] on a file.
pub fn read_pfns(path: &Path) -> Result<Vec<u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_pfns(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn contains(set: &[Range], pfn: u64) -> bool {
    let i = set.partition_point(|r| r.end() <= pfn);
    set.get(i).is_some_and(|r| r.start <= pfn)
}

/// Precision and recall.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Found pages that are truly hot (0 when nothing was found).
    pub precision: f64,
    /// Truly hot pages found.
    pub recall: f64,
    /// Truly hot pages.
    pub truth: u64,
    /// Pages found (within the universe, if any).
    pub found: u64,
    /// Found and truly hot.
    pub hits: u64,
}

/// Scores `hot` (merged ranges) against sorted `truth`, optionally only
/// within sorted `universe`.
pub fn score(hot: &[Range], truth: &[u64], universe: Option<&[u64]>) -> Result<Score> {
    if truth.is_empty() {
        bail!("the truth set is empty");
    }
    let found = match universe {
        Some(u) => u.iter().filter(|&&p| contains(hot, p)).count() as u64,
        None => hot.iter().map(|r| r.pages).sum(),
    };
    let hits = truth
        .iter()
        .filter(|&&p| contains(hot, p) && universe.is_none_or(|u| u.binary_search(&p).is_ok()))
        .count() as u64;
    Ok(Score {
        precision: if found == 0 {
            0.0
        } else {
            hits as f64 / found as f64
        },
        recall: hits as f64 / truth.len() as f64,
        truth: truth.len() as u64,
        found,
        hits,
    })
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precision {:.2} recall {:.2} (truth {} pages, found {})",
            self.precision, self.recall, self.truth, self.found
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglock_trace::{Header, Sample};

    fn rg(start: u64, pages: u64) -> Range {
        Range { start, pages }
    }

    #[test]
    fn precision_recall_math() {
        // Found 10..20 (10 pages); truth 15..25 (10 pages): 5 hits.
        let truth: Vec<u64> = (15..25).collect();
        let s = score(&[rg(10, 10)], &truth, None).unwrap();
        assert_eq!((s.found, s.hits, s.truth), (10, 5, 10));
        assert_eq!((s.precision, s.recall), (0.5, 0.5));
        assert_eq!(
            s.to_string(),
            "precision 0.50 recall 0.50 (truth 10 pages, found 10)"
        );
        // Universe 12..30: found within it is 12..20 = 8 pages.
        let uni: Vec<u64> = (12..30).collect();
        let s = score(&[rg(10, 10), rg(500, 100)], &truth, Some(&uni)).unwrap();
        assert_eq!((s.found, s.hits), (8, 5));
        assert_eq!(s.precision, 5.0 / 8.0);
        // Nothing found: precision 0, not NaN.
        let s = score(&[], &truth, None).unwrap();
        assert_eq!((s.precision, s.recall), (0.0, 0.0));
        assert!(score(&[rg(0, 1)], &[], None).is_err());
    }

    #[test]
    fn hot_set_is_last_n_samples() {
        let s = |t, a: Vec<Range>| Sample {
            t_us: t,
            accessed: a,
            dirtied: vec![],
        };
        let t = Trace {
            header: Header {
                page_size: 4096,
                pfn_limit: 100,
                interval_us: 1,
            },
            samples: vec![
                s(1, vec![rg(0, 50)]),
                s(2, vec![rg(60, 2)]),
                s(3, vec![rg(61, 4), rg(90, 1)]),
            ],
            complete: true,
        };
        assert_eq!(hot_set(&t, 2), vec![rg(60, 5), rg(90, 1)]);
        assert_eq!(hot_set(&t, 10).len(), 3);
        assert!(hot_set(&t, 0).is_empty());
    }

    #[test]
    fn pfn_file_parsing() {
        assert_eq!(parse_pfns("5\n3\n\n# c\n5\n 7 \n"), Ok(vec![3, 5, 7]));
        let e = parse_pfns("1\n0x10\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn membership() {
        let set = [rg(10, 5), rg(20, 1)];
        let got: Vec<u64> = (0..30).filter(|&p| contains(&set, p)).collect();
        assert_eq!(got, vec![10, 11, 12, 13, 14, 20]);
    }
}
