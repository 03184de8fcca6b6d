// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer show`: what a trace holds.

use anyhow::{anyhow, Context, Result};
use miglock_trace::{Header, Range, Reader, Sample};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Sorted, merged ranges; bounded by merging whenever the pending list
/// doubles.
#[derive(Default)]
struct Union {
    merged: Vec<Range>,
    pending: Vec<Range>,
}

impl Union {
    fn add(&mut self, rs: &[Range]) {
        self.pending.extend_from_slice(rs);
        if self.pending.len() > 4096 + self.merged.len() {
            self.merge();
        }
    }

    fn merge(&mut self) {
        self.merged.append(&mut self.pending);
        self.merged = merge(std::mem::take(&mut self.merged));
    }

    fn pages(&mut self) -> u64 {
        self.merge();
        self.merged.iter().map(|r| r.pages).sum()
    }
}

/// Sorts and merges overlapping or touching ranges.
pub fn merge(mut v: Vec<Range>) -> Vec<Range> {
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end() => l.pages = l.pages.max(r.end() - l.start),
            _ => out.push(r),
        }
    }
    out
}

/// A trace's summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The header.
    pub header: Header,
    /// Samples.
    pub samples: u64,
    /// Time of the last sample, microseconds.
    pub duration_us: u64,
    /// Accessed pages summed over samples.
    pub accessed_total: u64,
    /// Dirtied pages summed over samples.
    pub dirtied_total: u64,
    /// Pages accessed in any sample.
    pub distinct_accessed: u64,
    /// Pages dirtied in any sample.
    pub distinct_dirtied: u64,
    /// Ends with the end record.
    pub complete: bool,
}

/// Reads a whole trace; errors name the byte and the samples read before.
pub fn summarize(inp: impl BufRead) -> Result<Stats> {
    let mut r = Reader::new(inp)?;
    let mut s = Sample::default();
    let (mut acc, mut dirt) = (Union::default(), Union::default());
    let (mut at, mut dt, mut last_t) = (0, 0, 0);
    loop {
        match r.next_into(&mut s) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(anyhow!("{e} (after {} good samples)", r.samples())),
        }
        at += s.accessed_pages();
        dt += s.dirtied_pages();
        last_t = s.t_us;
        acc.add(&s.accessed);
        dirt.add(&s.dirtied);
    }
    Ok(Stats {
        header: *r.header(),
        samples: r.samples(),
        duration_us: last_t,
        accessed_total: at,
        dirtied_total: dt,
        distinct_accessed: acc.pages(),
        distinct_dirtied: dirt.pages(),
        complete: r.complete(),
    })
}

/// [`summarize`] on a file.
pub fn summarize_file(path: &Path) -> Result<Stats> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    summarize(BufReader::new(f)).with_context(|| format!("{}", path.display()))
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let mib = |pages: u64| (pages * u64::from(h.page_size)) >> 20;
        let mean = |t: u64| {
            if self.samples == 0 {
                0.0
            } else {
                t as f64 / self.samples as f64
            }
        };
        writeln!(
            f,
            "page size {}, pfn_limit {} ({} MiB), interval {} us",
            h.page_size,
            h.pfn_limit,
            h.memory_bytes() >> 20,
            h.interval_us
        )?;
        writeln!(
            f,
            "samples {} over {:.3} s, {}",
            self.samples,
            self.duration_us as f64 / 1e6,
            if self.complete {
                "complete"
            } else {
                "INCOMPLETE (no end record: the writer stopped early)"
            }
        )?;
        writeln!(
            f,
            "mean per sample: accessed {:.1} pages, dirtied {:.1} pages",
            mean(self.accessed_total),
            mean(self.dirtied_total)
        )?;
        write!(
            f,
            "distinct pages: accessed {} ({} MiB), dirtied {} ({} MiB)",
            self.distinct_accessed,
            mib(self.distinct_accessed),
            self.distinct_dirtied,
            mib(self.distinct_dirtied)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglock_trace::Writer;

    fn rg(start: u64, pages: u64) -> Range {
        Range { start, pages }
    }

    fn trace(complete: bool) -> Vec<u8> {
        let h = Header {
            page_size: 4096,
            pfn_limit: 1000,
            interval_us: 500_000,
        };
        let mut w = Writer::new(Vec::new(), h).unwrap();
        w.write(&Sample {
            t_us: 500_000,
            accessed: vec![rg(10, 5), rg(100, 1)],
            dirtied: vec![rg(10, 2)],
        })
        .unwrap();
        w.write(&Sample {
            t_us: 1_000_000,
            accessed: vec![rg(12, 10)],
            dirtied: vec![],
        })
        .unwrap();
        let full = w.finish().unwrap();
        // The end record is 'E' and a one-byte count: drop it to get what
        // a writer that died leaves.
        let keep = if complete { full.len() } else { full.len() - 2 };
        full[..keep].to_vec()
    }

    #[test]
    fn summary_of_a_trace() {
        let s = summarize(&trace(true)[..]).unwrap();
        assert_eq!(s.samples, 2);
        assert_eq!(s.duration_us, 1_000_000);
        assert_eq!((s.accessed_total, s.dirtied_total), (16, 2));
        // 10..15 ∪ 12..22 ∪ {100} = 10..22 and 100: 13 pages.
        assert_eq!((s.distinct_accessed, s.distinct_dirtied), (13, 2));
        assert!(s.complete);
        let text = s.to_string();
        assert!(text.contains("samples 2 over 1.000 s, complete"), "{text}");
        assert!(
            text.contains("accessed 8.0 pages, dirtied 1.0 pages"),
            "{text}"
        );
    }

    #[test]
    fn incomplete_and_corrupt() {
        let s = summarize(&trace(false)[..]).unwrap();
        assert_eq!(s.samples, 2);
        assert!(!s.complete);
        assert!(s.to_string().contains("INCOMPLETE"));
        let mut bad = trace(true);
        bad[32] = b'X';
        let e = summarize(&bad[..]).unwrap_err().to_string();
        assert!(
            e.contains("corrupt trace at byte")
                && e.contains("unknown record tag")
                && e.contains("after 0 good samples"),
            "{e}"
        );
        let e = summarize(&b"not a trace at all, clearly not"[..]).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }

    #[test]
    fn merge_overlaps() {
        assert_eq!(
            merge(vec![rg(5, 5), rg(0, 3), rg(3, 2), rg(20, 1), rg(6, 1)]),
            vec![rg(0, 10), rg(20, 1)]
        );
    }
}
