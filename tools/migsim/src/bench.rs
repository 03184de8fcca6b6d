// SPDX-License-Identifier: GPL-2.0

//! `migsim bench`: how fast the simulator is, measured on one core.
//!
//! A "page event" is one simulated page transfer, fault, or page access or
//! dirtying replayed from the trace; the bitsets process up to 64 of them
//! per word operation, which is where the speed comes from.

use crate::bitset::{Bitset, PageSet};
use crate::gen::{generate, GenParams, Workload};
use crate::{simulate, Config, Scheme};
use serde::Serialize;
use std::time::Instant;

/// One scheme's timing.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Scheme, or the raw kernel measured.
    pub name: String,
    /// Simulated migration time, seconds.
    pub simulated_s: f64,
    /// Wall-clock time to simulate it, seconds.
    pub wall_s: f64,
    /// Page events simulated.
    pub page_events: u64,
    /// Page events per wall-clock second.
    pub events_per_s: f64,
}

/// The whole benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Guest memory, bytes.
    pub mem: u64,
    /// Workload of the generated trace.
    pub workload: String,
    /// Seconds of trace generated.
    pub trace_seconds: f64,
    /// Wall time to generate it (not part of any figure below).
    pub gen_wall_s: f64,
    /// Per scheme, then the raw bitset kernel.
    pub rows: Vec<BenchRow>,
}

/// Generates a `mem` trace of `workload` and times every scheme on it.
pub fn run(
    mem: u64,
    seconds: f64,
    workload: Workload,
    cfg: &Config,
) -> anyhow::Result<BenchReport> {
    let t0 = Instant::now();
    let trace = generate(&GenParams {
        workload,
        mem,
        seconds,
        interval_us: 100_000,
        seed: 1,
    })
    .map_err(anyhow::Error::msg)?;
    let gen_wall_s = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for scheme in Scheme::ALL {
        let t = Instant::now();
        let r = simulate(&trace, scheme, cfg)?;
        let wall = t.elapsed().as_secs_f64();
        rows.push(BenchRow {
            name: scheme.name().to_string(),
            simulated_s: r.total_time_s,
            wall_s: wall,
            page_events: r.page_events,
            events_per_s: r.page_events as f64 / wall.max(1e-9),
        });
    }
    rows.push(kernel(mem / 4096));
    Ok(BenchReport {
        mem,
        workload: workload.name().to_string(),
        trace_seconds: seconds,
        gen_wall_s,
        rows,
    })
}

/// The pre-copy inner loop alone: send a full memory's pages in
/// interval-sized batches, ten times.
fn kernel(pages: u64) -> BenchRow {
    let batch = 30_000;
    let t = Instant::now();
    let mut events = 0;
    for _ in 0..10 {
        let mut set = Bitset::full(pages);
        let skip = Bitset::empty(pages);
        let mut cursor = 0;
        loop {
            let (n, c) = set.take(cursor, batch, Some(&skip));
            events += n;
            cursor = c;
            if n < batch {
                break;
            }
        }
        let mut recv = Bitset::empty(pages);
        let mut cursor = 0;
        loop {
            let (n, c) = recv.fill(cursor, pages, batch);
            events += n;
            cursor = c;
            if n < batch {
                break;
            }
        }
    }
    let wall = t.elapsed().as_secs_f64();
    BenchRow {
        name: "kernel: take+fill".to_string(),
        simulated_s: 0.0,
        wall_s: wall,
        page_events: events,
        events_per_s: events as f64 / wall.max(1e-9),
    }
}
