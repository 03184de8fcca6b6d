// SPDX-License-Identifier: GPL-2.0

//! Which frames are RAM: `/proc/iomem`'s "System RAM" ranges (root sees the
//! addresses), else `/proc/zoneinfo`'s zone spans. `pfn_limit` is the end of
//! the highest range, so the model's arrays cover exactly the frames the
//! idle bitmap can report on; holes between ranges are never read (the
//! bitmap read may fail on them on some kernels).

use crate::Roots;
use anyhow::{bail, Context, Result};
use std::fs;

/// Frames `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRange {
    /// First frame.
    pub start: u64,
    /// One past the last frame.
    pub end: u64,
}

/// The guest's RAM layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysMem {
    /// Bytes per page.
    pub page_size: u64,
    /// Sorted, disjoint RAM frame ranges.
    pub ram: Vec<PfnRange>,
    /// Every RAM frame is below this.
    pub pfn_limit: u64,
    /// Where `ram` came from.
    pub source: &'static str,
}

impl SysMem {
    /// Frames of RAM.
    pub fn ram_pages(&self) -> u64 {
        self.ram.iter().map(|r| r.end - r.start).sum()
    }
}

/// "System RAM" lines of `/proc/iomem`, as whole frames inside them. Zero
/// addresses (what non-root readers see) give no ranges.
pub fn parse_iomem(text: &str, page: u64) -> Vec<PfnRange> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((span, name)) = line.split_once(" : ") else {
            continue;
        };
        if name.trim() != "System RAM" {
            continue;
        }
        let Some((a, b)) = span.trim().split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if b <= a {
            continue;
        }
        // Inclusive end; keep only frames wholly inside.
        let start = a.div_ceil(page);
        let end = b.saturating_add(1) / page;
        if end > start {
            out.push(PfnRange { start, end });
        }
    }
    normalize(out)
}

/// Highest `start_pfn + spanned` over `/proc/zoneinfo`'s zones.
pub fn parse_zoneinfo(text: &str) -> Option<u64> {
    let mut best = None;
    let (mut spanned, mut start) = (None::<u64>, None::<u64>);
    let mut flush = |spanned: &mut Option<u64>, start: &mut Option<u64>| {
        if let (Some(s), Some(p)) = (spanned.take(), start.take()) {
            if s > 0 {
                best = best.max(Some(p + s));
            }
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Node ") {
            flush(&mut spanned, &mut start);
        } else if let Some(v) = t.strip_prefix("spanned") {
            spanned = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("start_pfn:") {
            start = v.trim().parse().ok();
        }
    }
    flush(&mut spanned, &mut start);
    best
}

fn normalize(mut v: Vec<PfnRange>) -> Vec<PfnRange> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<PfnRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Reads the layout under `roots`.
pub fn detect(roots: &Roots, page_size: u64) -> Result<SysMem> {
    let iomem = roots.proc("iomem");
    if let Ok(text) = fs::read_to_string(&iomem) {
        let ram = parse_iomem(&text, page_size);
        if let Some(last) = ram.last() {
            return Ok(SysMem {
                page_size,
                pfn_limit: last.end,
                ram,
                source: "iomem",
            });
        }
    }
    let zi = roots.proc("zoneinfo");
    let text = fs::read_to_string(&zi).with_context(|| format!("reading {}", zi.display()))?;
    let Some(limit) = parse_zoneinfo(&text) else {
        bail!(
            "no System RAM in {} and no zone spans in {}",
            iomem.display(),
            zi.display()
        );
    };
    Ok(SysMem {
        page_size,
        ram: vec![PfnRange {
            start: 0,
            end: limit,
        }],
        pfn_limit: limit,
        source: "zoneinfo",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  01000000-01ffffff : Kernel code
3ffe0000-3fffffff : Reserved
fd000000-fdffffff : PCI Bus 0000:00
";

    #[test]
    fn iomem_ram_ranges() {
        let r = parse_iomem(IOMEM, 4096);
        // 0x1000..=0x9fbff: frames 1..0x9f (0x9f000..0x9fbff is partial).
        assert_eq!(
            r,
            vec![
                PfnRange {
                    start: 1,
                    end: 0x9f
                },
                PfnRange {
                    start: 0x100,
                    end: 0x3ffe0
                }
            ]
        );
    }

    #[test]
    fn iomem_as_non_root_is_empty() {
        let t = "00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n";
        assert!(parse_iomem(t, 4096).is_empty());
        assert!(parse_iomem("garbage\n : System RAM\nzz-yy : System RAM\n", 4096).is_empty());
    }

    #[test]
    fn zoneinfo_limit() {
        let t = "\
Node 0, zone      DMA
  pages free     3840
        spanned  4095
        present  3998
  start_pfn:           1
Node 0, zone    DMA32
  pages free     200000
        spanned  258048
  start_pfn:           4096
Node 0, zone   Normal
        spanned  0
  start_pfn:           262144
";
        assert_eq!(parse_zoneinfo(t), Some(4096 + 258048));
        assert_eq!(parse_zoneinfo("nothing"), None);
    }

    #[test]
    fn detect_falls_back_to_zoneinfo() {
        let d = tempfile::tempdir().unwrap();
        let roots = Roots {
            procfs: d.path().into(),
            sysfs: d.path().into(),
        };
        std::fs::write(d.path().join("iomem"), "00000000-00000000 : System RAM\n").unwrap();
        std::fs::write(
            d.path().join("zoneinfo"),
            "Node 0, zone DMA32\n spanned 1000\n start_pfn: 24\n",
        )
        .unwrap();
        let m = detect(&roots, 4096).unwrap();
        assert_eq!((m.pfn_limit, m.source), (1024, "zoneinfo"));
        std::fs::write(d.path().join("iomem"), "00000000-003fffff : System RAM\n").unwrap();
        let m = detect(&roots, 4096).unwrap();
        assert_eq!(
            (m.pfn_limit, m.ram_pages(), m.source),
            (1024, 1024, "iomem")
        );
    }
}
