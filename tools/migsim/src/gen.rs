// SPDX-License-Identifier: GPL-2.0

//! Synthetic workloads, written as ordinary traces, for trying schemes
//! before real recorded traces exist and for the benchmark.
//!
//! Memory is cut into 64 KiB chunks; a hot set of chunks, scattered over
//! memory by a fixed shuffle, is touched with Zipf-like popularity (rank r
//! with probability ~ 1/r), each touch a run of 1 to 16 pages. Writes go
//! only to the hottest chunks, the writable working set. Rates scale with
//! the square root of memory size: bigger VMs run bigger workloads, but
//! not proportionally (a 64 GiB guest touching 64x what a 1 GiB one does
//! would be touching tens of GB/s).

use crate::bitset::{Bitset, PageSet};
use miglock_trace::{Header, Sample, Trace};

/// Pages per chunk.
const CHUNK: u64 = 16;

/// A synthetic workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// A quiet guest: timers and daemons touching a tiny set.
    Idle,
    /// A cache or read-serving guest: a large hot set, few writes.
    ReadMostly,
    /// A write-intensive guest (database, build): a big writable set.
    WriteHeavy,
    /// A streaming scan over all memory, writing a small log.
    Sequential,
    /// Uniformly random touches over all memory.
    Random,
}

impl Workload {
    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::ReadMostly => "read-mostly",
            Workload::WriteHeavy => "write-heavy",
            Workload::Sequential => "sequential",
            Workload::Random => "random",
        }
    }
}

struct Profile {
    /// Fraction of memory in the hot set.
    hot: f64,
    /// Pages touched per second by a 1 GiB guest.
    touch_per_gib: f64,
    /// Fraction of touches of writable chunks that write.
    write: f64,
    /// Fraction of memory that is written (the hottest chunks).
    wws: f64,
    /// Zipf-like popularity (else uniform).
    zipf: bool,
}

fn profile(w: Workload) -> Profile {
    match w {
        Workload::Idle => Profile {
            hot: 0.005,
            touch_per_gib: 2_000.0,
            write: 0.3,
            wws: 0.001,
            zipf: true,
        },
        Workload::ReadMostly => Profile {
            hot: 0.25,
            touch_per_gib: 60_000.0,
            write: 0.05,
            wws: 0.02,
            zipf: true,
        },
        Workload::WriteHeavy => Profile {
            hot: 0.4,
            touch_per_gib: 250_000.0,
            write: 0.6,
            wws: 0.25,
            zipf: true,
        },
        Workload::Random => Profile {
            hot: 1.0,
            touch_per_gib: 100_000.0,
            write: 0.3,
            wws: 1.0,
            zipf: false,
        },
        // Sequential is generated separately; these are its scan rate.
        Workload::Sequential => Profile {
            hot: 1.0,
            touch_per_gib: 50_000.0,
            write: 0.0,
            wws: 0.0,
            zipf: false,
        },
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenParams {
    /// The workload.
    pub workload: Workload,
    /// Guest memory, bytes.
    pub mem: u64,
    /// Trace length, seconds.
    pub seconds: f64,
    /// Sampling interval, microseconds.
    pub interval_us: u64,
    /// Random seed (same seed, same trace).
    pub seed: u64,
}

/// Generates a trace; errors only on impossible parameters.
pub fn generate(p: &GenParams) -> Result<Trace, String> {
    const PAGE: u64 = 4096;
    if p.mem < PAGE * CHUNK {
        return Err(format!("--mem must be at least {} bytes", PAGE * CHUNK));
    }
    if !(p.seconds > 0.0 && p.seconds <= 1e6) {
        return Err("--seconds must be above 0 and at most 10^6".to_string());
    }
    if p.interval_us == 0 {
        return Err("--interval must be above 0".to_string());
    }
    let pages = p.mem / PAGE;
    if pages > crate::model::MAX_SIM_PAGES {
        return Err("--mem is too large".to_string());
    }
    let header = Header {
        page_size: PAGE as u32,
        pfn_limit: pages,
        interval_us: p.interval_us,
    };
    let prof = profile(p.workload);
    let mut rng = fastrand::Rng::with_seed(p.seed);
    let chunks = pages / CHUNK;
    let mut perm: Vec<u64> = (0..chunks).collect();
    rng.shuffle(&mut perm);
    let hot = ((chunks as f64 * prof.hot) as u64).clamp(1, chunks);
    let wws = ((chunks as f64 * prof.wws) as u64).min(hot);
    let scale = (p.mem as f64 / (1u64 << 30) as f64).sqrt();
    let dt_s = p.interval_us as f64 / 1e6;
    let n_samples = ((p.seconds / dt_s).ceil() as u64).max(1);
    let mut acc = Bitset::empty(pages);
    let mut dirty = Bitset::empty(pages);
    let mut samples = Vec::with_capacity(n_samples as usize);
    let mut scan = 0u64;
    for i in 1..=n_samples {
        acc.clear();
        dirty.clear();
        let touches = prof.touch_per_gib * scale * dt_s;
        if p.workload == Workload::Sequential {
            let n = (touches as u64).clamp(1, pages);
            let first = n.min(pages - scan);
            acc.insert_range(scan, first);
            acc.insert_range(0, n - first);
            scan = (scan + n) % pages;
            // a small log at the top of memory, rewritten every interval
            let log = 64.min(pages);
            acc.insert_range(pages - log, log);
            dirty.insert_range(pages - log, log);
        } else {
            // runs average 8.5 pages; round the draw count stochastically
            let draws_f = touches / 8.5;
            let mut draws = draws_f as u64;
            if rng.f64() < draws_f.fract() {
                draws += 1;
            }
            for _ in 0..draws {
                let rank = if prof.zipf {
                    ((hot as f64).powf(rng.f64()) as u64).saturating_sub(1)
                } else {
                    rng.u64(0..hot)
                }
                .min(hot - 1);
                let run = rng.u64(1..=CHUNK);
                let start = perm[rank as usize] * CHUNK + rng.u64(0..=CHUNK - run);
                acc.insert_range(start, run);
                if rank < wws && rng.f64() < prof.write {
                    dirty.insert_range(start, run);
                }
            }
        }
        samples.push(Sample {
            t_us: i * p.interval_us,
            accessed: acc.ranges(),
            dirtied: dirty.ranges(),
        });
    }
    Ok(Trace {
        header,
        samples,
        complete: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(w: Workload) -> Trace {
        generate(&GenParams {
            workload: w,
            mem: 64 << 20,
            seconds: 2.0,
            interval_us: 100_000,
            seed: 7,
        })
        .unwrap()
    }

    #[test]
    fn traces_are_valid_and_ordered_by_intensity() {
        let mut dirty_rate = Vec::new();
        for w in [Workload::Idle, Workload::ReadMostly, Workload::WriteHeavy] {
            let t = gen(w);
            assert_eq!(t.samples.len(), 20);
            let mut buf = Vec::new();
            t.write(&mut buf).unwrap();
            assert_eq!(Trace::parse(&buf).unwrap(), t);
            let d: u64 = t.samples.iter().map(|s| s.dirtied_pages()).sum();
            dirty_rate.push(d);
        }
        assert!(dirty_rate[0] < dirty_rate[1] && dirty_rate[1] < dirty_rate[2]);
    }

    #[test]
    fn sequential_scans_forward() {
        let t = gen(Workload::Sequential);
        assert_eq!(t.samples[0].accessed[0].start, 0);
        assert!(t.samples[1].accessed[0].start > 0);
    }

    #[test]
    fn same_seed_same_trace() {
        assert_eq!(gen(Workload::WriteHeavy), gen(Workload::WriteHeavy));
    }
}
