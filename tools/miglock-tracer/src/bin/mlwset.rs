// SPDX-License-Identifier: GPL-2.0

//! `mlwset`: a program with a known working set, to measure the tracer.
//!
//! It maps `--mib` MiB, writes every page once (so all of it is resident,
//! private memory), picks a hot subset (`--hot-fraction`; every k-th page,
//! or a seeded random subset), writes the hot pages' frame numbers to
//! `--truth` (and optionally all pages' to `--all-pfns`), prints
//! `mlwset: ready`, then touches only the hot pages every `--period-ms`
//! (a read, or for `--write-fraction` of them a write) for `--seconds`, or
//! until stdin closes. Cold pages stay resident and are never touched
//! again. Frame numbers need root (CAP_SYS_ADMIN).

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, ValueEnum)]
enum Pattern {
    /// Every k-th page, k = 1 / hot-fraction.
    Stride,
    /// A seeded random subset.
    Random,
}

#[derive(Parser)]
#[command(about = "Known-working-set test program for miglock-tracer")]
struct Args {
    /// Memory to map and keep resident, in MiB.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Share of pages touched every period.
    #[arg(long, default_value_t = 0.25)]
    hot_fraction: f64,
    /// Share of hot pages written (the rest are read).
    #[arg(long, default_value_t = 0.0)]
    write_fraction: f64,
    /// How hot pages are chosen.
    #[arg(long, value_enum, default_value = "stride")]
    pattern: Pattern,
    /// Seed for `--pattern random`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time between passes over the hot pages, ms.
    #[arg(long, default_value_t = 100)]
    period_ms: u64,
    /// Run this long; 0: until stdin closes.
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Write the hot pages' PFNs here, one per line.
    #[arg(long)]
    truth: PathBuf,
    /// Write every page's PFN here (hot and cold), one per line.
    #[arg(long)]
    all_pfns: Option<PathBuf>,
}

/// A private anonymous mapping, page aligned.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Result<Self> {
        // SAFETY: a fresh anonymous mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of {len} bytes: {}", io::Error::last_os_error());
        }
        // Keep one frame per page so each page has its own PFN (the test
        // kernel has no THP; a host might).
        // SAFETY: advising our own mapping.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    fn word(&self, page: usize, word: usize) -> *mut u64 {
        debug_assert!(page * PAGE + word * 8 < self.len);
        // SAFETY: in bounds of the mapping (callers index within it).
        unsafe { self.ptr.add(page * PAGE + (word % (PAGE / 8)) * 8).cast() }
    }

    fn write(&self, page: usize, word: usize, v: u64) {
        // SAFETY: an aligned word inside the mapping.
        unsafe { self.word(page, word).write_volatile(v) }
    }

    fn read(&self, page: usize, word: usize) -> u64 {
        // SAFETY: an aligned word inside the mapping.
        unsafe { self.word(page, word).read_volatile() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const PAGE: usize = 4096;

/// PFNs of `pages` pages at `base`, from `/proc/self/pagemap`.
fn pfns(base: usize, pages: usize) -> Result<Vec<u64>> {
    let f = File::open("/proc/self/pagemap").context("opening /proc/self/pagemap")?;
    let mut buf = vec![0u8; pages * 8];
    f.read_exact_at(&mut buf, (base / PAGE * 8) as u64)
        .context("reading /proc/self/pagemap")?;
    let mut out = Vec::with_capacity(pages);
    for (i, c) in buf.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(c.try_into().unwrap_or_default());
        let pfn = e & ((1 << 55) - 1);
        if e >> 63 == 0 {
            bail!("page {i} is not resident");
        }
        if pfn == 0 {
            bail!("/proc/self/pagemap hides frame numbers: run mlwset as root");
        }
        out.push(pfn);
    }
    Ok(out)
}

fn write_pfns(path: &Path, pfns: impl Iterator<Item = u64>) -> Result<()> {
    let mut s = String::new();
    for p in pfns {
        s.push_str(&p.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn hot_pages(a: &Args, pages: usize) -> Vec<usize> {
    let want = ((pages as f64 * a.hot_fraction).round() as usize).min(pages);
    match a.pattern {
        Pattern::Stride => {
            if want == 0 {
                return Vec::new();
            }
            let k = (pages / want).max(1);
            (0..pages).step_by(k).take(want).collect()
        }
        Pattern::Random => {
            let mut idx: Vec<usize> = (0..pages).collect();
            fastrand::Rng::with_seed(a.seed).shuffle(&mut idx);
            idx.truncate(want);
            idx.sort_unstable();
            idx
        }
    }
}

/// Whether the `j`-th hot page is written rather than read: a
/// golden-ratio spread, so writes are evenly mixed in.
fn is_written(j: usize, fraction: f64) -> bool {
    let x = (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (x as f64 / (1u64 << 53) as f64) < fraction
}

/// Waits up to `d`; false once stdin reached end of file.
fn wait(d: Duration, watch_stdin: bool) -> bool {
    let ts = Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    };
    if !watch_stdin {
        let _ = poll(&mut [], Some(&ts));
        return true;
    }
    let stdin = io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    if !matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0) {
        return true;
    }
    let mut b = [0u8; 256];
    !matches!(stdin.lock().read(&mut b), Ok(0) | Err(_))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("mlwset: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    if !(0.0..=1.0).contains(&a.hot_fraction) || !(0.0..=1.0).contains(&a.write_fraction) {
        bail!("fractions must be between 0 and 1");
    }
    let pages = a.mib * 256;
    if pages == 0 {
        bail!("--mib must be at least 1");
    }
    let mem = Region::new(pages * PAGE)?;
    for p in 0..pages {
        mem.write(p, 0, p as u64 | 1 << 40);
    }
    let hot = hot_pages(&a, pages);
    let all = pfns(mem.ptr as usize, pages)?;
    write_pfns(&a.truth, hot.iter().map(|&p| all[p]))?;
    if let Some(path) = &a.all_pfns {
        write_pfns(path, all.iter().copied())?;
    }
    let writes = (0..hot.len())
        .filter(|&j| is_written(j, a.write_fraction))
        .count();
    println!(
        "mlwset: {} pages ({} MiB), {} hot ({} written, {} read) every {} ms, truth {}",
        pages,
        a.mib,
        hot.len(),
        writes,
        hot.len() - writes,
        a.period_ms,
        a.truth.display()
    );
    println!("mlwset: ready");
    io::stdout().flush()?;

    let period = Duration::from_millis(a.period_ms.max(1));
    let t0 = Instant::now();
    let end = (a.seconds > 0).then(|| t0 + Duration::from_secs(a.seconds));
    let mut pass = 0u64;
    let mut sum = 0u64;
    loop {
        pass += 1;
        for (j, &p) in hot.iter().enumerate() {
            if is_written(j, a.write_fraction) {
                mem.write(p, pass as usize, pass);
            } else {
                sum = sum.wrapping_add(mem.read(p, pass as usize));
            }
        }
        let next = t0 + period * pass as u32;
        if end.is_some_and(|e| next >= e) {
            break;
        }
        let left = next.saturating_duration_since(Instant::now());
        if !wait(left, end.is_none()) {
            break;
        }
    }
    let now = pfns(mem.ptr as usize, pages)?;
    let moved = hot.iter().filter(|&&p| now[p] != all[p]).count();
    println!(
        "mlwset: done after {pass} passes in {:.1} s; {moved} hot pages changed frame since ready (checksum {sum:x})",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(frac: f64, pattern: Pattern) -> Args {
        Args::parse_from(["mlwset", "--truth", "/dev/null"]).with(frac, pattern)
    }

    impl Args {
        fn with(mut self, frac: f64, pattern: Pattern) -> Self {
            self.hot_fraction = frac;
            self.pattern = pattern;
            self
        }
    }

    #[test]
    fn hot_subsets() {
        assert_eq!(
            hot_pages(&args(0.25, Pattern::Stride), 16),
            vec![0, 4, 8, 12]
        );
        assert_eq!(hot_pages(&args(0.3, Pattern::Stride), 10), vec![0, 3, 6]);
        assert!(hot_pages(&args(0.0, Pattern::Stride), 10).is_empty());
        let r = hot_pages(&args(0.25, Pattern::Random), 1000);
        assert_eq!(r.len(), 250);
        assert!(r.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r, hot_pages(&args(0.25, Pattern::Random), 1000), "seeded");
    }

    #[test]
    fn write_share() {
        let n = (0..10000).filter(|&j| is_written(j, 0.3)).count();
        assert!((2900..3100).contains(&n), "{n}");
        assert_eq!((0..100).filter(|&j| is_written(j, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|&j| is_written(j, 1.0)).count(), 100);
    }
}
