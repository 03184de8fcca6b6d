// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer bench`: the user-space cost of one sample — turning
//! idle words into accessed frames, the model update, ranking and
//! coalescing hints, and encoding the trace record — on synthetic data.
//! Kernel time for reading the bitmap, kpageflags and pagemap is not in it
//! (it depends on the guest; `run` reports the total).

use crate::bitset::Bitset;
use crate::hints::rank;
use crate::lru::accessed_from_idle;
use crate::model::Model;
use miglock_trace::{Header, Sample, Writer};
use std::time::{Duration, Instant};

/// Benchmark settings.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Frames modelled (262144 = 1 GiB of 4 KiB pages).
    pub frames: u64,
    /// Share of frames in the working set.
    pub wss_fraction: f64,
    /// Share of the working set written each sample.
    pub dirty_fraction: f64,
    /// Samples to time.
    pub samples: u32,
    /// Hint ranges per batch.
    pub max_hints: usize,
    /// RNG seed.
    pub seed: u64,
}

/// What it measured.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// CPU time per sample (this thread).
    pub cpu_per_sample: Duration,
    /// Wall time per sample.
    pub wall_per_sample: Duration,
    /// Working set the model reported at the end.
    pub wss: u64,
    /// Hint ranges of the last sample.
    pub hint_ranges: usize,
    /// Trace bytes per sample.
    pub trace_bytes_per_sample: u64,
}

/// Runs it. The working set is scattered single pages (the worst case
/// for coalescing); each sample 90% of it is touched plus 0.5% of all
/// frames at random.
pub fn run(p: Params) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(p.seed);
    let n = p.frames;
    let ws: Vec<u64> = (0..n).filter(|_| rng.f64() < p.wss_fraction).collect();
    // A few precomputed sample patterns, so generation is not timed.
    let patterns: Vec<(Bitset, Bitset)> = (0..8)
        .map(|_| {
            let mut idle = Bitset::new(n);
            idle.words_mut().fill(u64::MAX);
            let mut dirty = Bitset::new(n);
            let mut clear = |i: u64| idle.words_mut()[(i / 64) as usize] &= !(1 << (i % 64));
            for &f in &ws {
                if rng.f64() < 0.9 {
                    clear(f);
                }
                if rng.f64() < p.dirty_fraction {
                    dirty.set(f);
                }
            }
            for _ in 0..n / 200 {
                clear(rng.u64(0..n));
            }
            (idle, dirty)
        })
        .collect();
    let mut lru = Bitset::new(n);
    lru.set_range(0, n);
    let mut accessed = Bitset::new(n);
    let mut model = Model::new(n, 4);
    let header = Header {
        page_size: 4096,
        pfn_limit: n,
        interval_us: 1_000_000,
    };
    let mut w = Writer::new(CountingSink(0), header).expect("valid header");
    // Warm the model so ranking sees steady-state ages.
    for (idle, _) in &patterns {
        accessed_from_idle(idle, &lru, &mut accessed);
        model.update(&accessed);
    }
    let (c0, t0) = (crate::cpu::thread(), Instant::now());
    let mut hints = Vec::new();
    for i in 0..p.samples {
        let (idle, dirty) = &patterns[i as usize % patterns.len()];
        accessed_from_idle(idle, &lru, &mut accessed);
        accessed.union_with(dirty);
        model.update(&accessed);
        model.note_dirty(dirty.count(), Duration::from_secs(1));
        hints = rank(&model, p.max_hints);
        let s = Sample {
            t_us: u64::from(i + 1) * 1_000_000,
            accessed: accessed.ranges(),
            dirtied: dirty.ranges(),
        };
        w.write(&s).expect("sink");
    }
    let samples = p.samples.max(1);
    let (cpu, wall) = (crate::cpu::thread() - c0, t0.elapsed());
    let bytes = w.finish().expect("sink").0;
    Outcome {
        cpu_per_sample: cpu / samples,
        wall_per_sample: wall / samples,
        wss: model.wss(),
        hint_ranges: hints.len(),
        trace_bytes_per_sample: bytes / u64::from(samples),
    }
}

/// A writer that only counts bytes.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs() {
        let o = run(Params {
            frames: 4096,
            wss_fraction: 0.25,
            dirty_fraction: 0.1,
            samples: 3,
            max_hints: 16,
            seed: 1,
        });
        assert_eq!(o.hint_ranges, 16);
        // About a quarter of 4096 plus a little churn.
        assert!((900..1300).contains(&o.wss), "{}", o.wss);
    }
}
