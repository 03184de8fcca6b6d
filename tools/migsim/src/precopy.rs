// SPDX-License-Identifier: GPL-2.0

//! Iterative pre-copy: send memory while the VM runs at the source, resend
//! what it dirtied, then stop it and copy the rest.
//!
//! Two policies share the round engine: Clark et al. (NSDI'05, Xen) with
//! dynamic rate limiting, and QEMU's bandwidth cap with a downtime limit.
//!
//! Within one trace interval the link sends first and the interval's
//! dirtying lands at its end (the dirty log is read at interval
//! granularity); the interval in which the VM stops counts as dirtied.

use crate::bitset::{Costs, PageSet};
use crate::model::{ps_to_secs, secs_to_ps, SchemeResult, Sim, SimError};
use miglock_trace::Sample;

/// Clark et al. pre-copy parameters (defaults from the paper and Xen).
#[derive(Clone, Debug, PartialEq)]
pub struct ClarkConfig {
    /// Rate of the first round, bytes/s (paper: 100 Mbit/s).
    pub min_rate: f64,
    /// Highest rate, bytes/s; also the stop-and-copy rate (default: link).
    pub max_rate: Option<f64>,
    /// Added to the previous round's dirtying rate (paper: 50 Mbit/s).
    pub increment: f64,
    /// Stop when fewer dirty bytes than this remain (paper: 256 KiB).
    pub wws_threshold: u64,
    /// Stop after this many rounds (Xen: 30).
    pub max_rounds: u32,
    /// Stop once this many times the VM's memory was sent (Xen: 3).
    pub max_factor: f64,
}

impl Default for ClarkConfig {
    fn default() -> Self {
        ClarkConfig {
            min_rate: 100e6 / 8.0,
            max_rate: None,
            increment: 50e6 / 8.0,
            wws_threshold: 256 << 10,
            max_rounds: 30,
            max_factor: 3.0,
        }
    }
}

/// QEMU pre-copy parameters (names follow its migration parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct QemuConfig {
    /// `max-bandwidth`, bytes/s (default: the link).
    pub max_bandwidth: Option<f64>,
    /// `downtime-limit`, seconds (QEMU default 300 ms).
    pub downtime_limit: f64,
    /// Declare non-convergence after this many iterations (QEMU would
    /// iterate forever; we report it instead).
    pub max_iterations: u32,
    /// Declare non-convergence after this much migration time, seconds.
    pub max_time: Option<f64>,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            max_bandwidth: None,
            downtime_limit: 0.3,
            max_iterations: 30,
            max_time: None,
        }
    }
}

/// The source side while the VM runs there: link clock, dirty log, and
/// the trace interval in progress.
pub(crate) struct PreEngine<'a, S: PageSet> {
    pub sim: Sim<'a>,
    /// Pages dirtied since the last dirty-log sync.
    pub dirty: S,
    /// All-zero frames (never written by the workload): a header each.
    pub zero: S,
    /// Link clock: when the link finishes what it has been given.
    pub now: u64,
    wall_end: u64,
    cur: &'a Sample,
    cur_idx: usize,
    /// Dirty-log generation in which each sample was last applied: within
    /// one generation the log only grows, so applying a sample twice is a
    /// no-op and is skipped (long rounds replay a looping trace often).
    applied: Vec<u32>,
    generation: u32,
}

impl<'a, S: PageSet> PreEngine<'a, S> {
    pub fn new(mut sim: Sim<'a>, zero: S) -> Self {
        let (dt, cur, cur_idx) = sim.replay.next_sample();
        PreEngine {
            dirty: S::empty(sim.pages),
            zero,
            now: 0,
            wall_end: dt,
            cur,
            cur_idx,
            applied: vec![u32::MAX; sim.replay.len()],
            generation: 0,
            sim,
        }
    }

    fn end_interval(&mut self) {
        if self.applied[self.cur_idx] != self.generation {
            self.applied[self.cur_idx] = self.generation;
            for r in &self.cur.dirtied {
                self.dirty.insert_range(r.start, r.pages);
            }
            self.sim.replay.pages_replayed += self.cur.dirtied_pages();
        }
        self.sim.record(self.wall_end);
        let (dt, s, i) = self.sim.replay.next_sample();
        self.wall_end = self.wall_end.saturating_add(dt);
        self.cur = s;
        self.cur_idx = i;
    }

    /// Dirty-log sync: the log becomes `into` and starts empty again.
    pub fn sync_into(&mut self, into: &mut S) {
        std::mem::swap(into, &mut self.dirty);
        self.dirty.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == u32::MAX {
            self.generation = 0;
            self.applied.fill(u32::MAX);
        }
    }

    /// The VM stops now: the interval in progress adds its dirtying to
    /// `into` (the final dirty-log read after the pause sees it).
    pub fn stop_into(&mut self, into: &mut S) {
        self.sim.replay.pages_replayed += self.cur.dirtied_pages();
        for r in &self.cur.dirtied {
            into.insert_range(r.start, r.pages);
        }
    }

    /// Sends every page of `set` in address order at `c` per page (zero
    /// pages cheap), replaying the workload meanwhile; with `skip`, pages
    /// already dirtied again this round are left for the next one (Xen's
    /// to_skip). Returns pages sent.
    pub fn send_round(&mut self, set: &mut S, c: Costs, skip: bool) -> u64 {
        let mut cursor = 0;
        let mut sent = 0;
        loop {
            let budget = self.wall_end.saturating_sub(self.now);
            let m = set.take_costed(cursor, budget, skip.then_some(&self.dirty), &self.zero, c);
            cursor = m.pos;
            sent += m.pages();
            self.now += m.spent;
            self.sim.pages_sent += m.pages();
            self.sim.zero_sent += m.cheap;
            if m.done {
                self.sim.record(self.now);
                return sent;
            }
            self.end_interval();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Clark et al.: rounds at an adaptive rate, then stop-and-copy at the
/// maximum rate.
pub fn clark<S: PageSet>(
    sim: Sim<'_>,
    zero: S,
    cfg: &ClarkConfig,
) -> Result<SchemeResult, SimError> {
    let (pages, ps) = (sim.pages, sim.page_size);
    let page_bytes = u64::from(ps);
    let max_rate = cfg.max_rate.unwrap_or(sim.bandwidth).min(sim.bandwidth);
    let min_rate = cfg.min_rate.min(max_rate);
    let tpp_max = sim.costs_at(max_rate)?.normal;
    let mem = pages * page_bytes;
    let mut e = PreEngine::<S>::new(sim, zero);
    let mut set = S::full(pages);
    let mut rate = min_rate;
    let mut rounds = 0;
    let status = loop {
        rounds += 1;
        let t0 = e.now;
        let c = e.sim.costs_at(rate)?;
        let sent = e.send_round(&mut set, c, true);
        let dur = ps_to_secs(e.now - t0);
        let dirty = e.dirty.count();
        if dirty * page_bytes <= cfg.wws_threshold {
            break format!(
                "dirty set {} at or below the {} threshold",
                mib(dirty * page_bytes),
                mib(cfg.wws_threshold)
            );
        }
        if rounds >= cfg.max_rounds {
            break format!("stopped after the maximum {rounds} rounds");
        }
        if e.sim.bytes() as f64 >= cfg.max_factor * mem as f64 {
            break format!("stopped after sending {}x memory", cfg.max_factor);
        }
        if dirty >= sent {
            break format!("round {rounds} did not shrink the dirty set ({dirty} >= {sent} pages)");
        }
        let dirty_rate = if dur > 0.0 {
            (dirty * page_bytes) as f64 / dur
        } else {
            f64::INFINITY
        };
        let next = dirty_rate + cfg.increment;
        if next > max_rate {
            break format!(
                "dirty rate {:.1} MB/s + increment exceeds the maximum rate",
                dirty_rate / 1e6
            );
        }
        rate = next.max(min_rate);
        e.sync_into(&mut set);
    };
    let stop = e.now;
    let mut last = std::mem::replace(&mut e.dirty, S::empty(0));
    e.stop_into(&mut last);
    let final_pages = last.count();
    let downtime = final_pages * tpp_max + e.sim.latency;
    e.sim.pages_sent += final_pages;
    let status = format!("{status}; stop-and-copy of {final_pages} pages after {rounds} rounds");
    Ok(e.sim.finish(
        "precopy-clark",
        true,
        status,
        stop + downtime,
        downtime,
        rounds,
        0,
        false,
    ))
}

/// QEMU: send all dirty pages each iteration, re-sync the dirty bitmap,
/// stop when what remains fits the downtime limit at the bandwidth.
pub fn qemu<S: PageSet>(sim: Sim<'_>, zero: S, cfg: &QemuConfig) -> Result<SchemeResult, SimError> {
    let pages = sim.pages;
    let rate = cfg
        .max_bandwidth
        .unwrap_or(sim.bandwidth)
        .min(sim.bandwidth);
    let costs = sim.costs_at(rate)?;
    let tpp = costs.normal;
    let tpp_link = sim.tpp;
    let limit = secs_to_ps(cfg.downtime_limit, "downtime limit")?;
    let max_time = match cfg.max_time {
        Some(t) => Some(secs_to_ps(t, "max time")?),
        None => None,
    };
    let max_iter = cfg.max_iterations.max(1);
    let mut e = PreEngine::<S>::new(sim, zero);
    let mut set = S::full(pages);
    let mut iterations = 0;
    let (converged, status) = loop {
        iterations += 1;
        e.send_round(&mut set, costs, false);
        // dirty-sync: what was dirtied meanwhile is the next iteration
        e.sync_into(&mut set);
        let rem = set.count();
        let expect = rem.saturating_mul(tpp);
        if expect <= limit {
            break (
                true,
                format!(
                    "converged after {iterations} iterations ({rem} pages left, expected downtime {:.1} ms)",
                    ps_to_secs(expect) * 1e3
                ),
            );
        }
        let timed_out = max_time.is_some_and(|m| e.now >= m);
        if iterations >= max_iter || timed_out {
            break (
                false,
                format!(
                    "did not converge: after {iterations} iterations {rem} pages stay dirty, {:.3} s to send > downtime limit {:.3} s",
                    ps_to_secs(expect),
                    cfg.downtime_limit
                ),
            );
        }
    };
    let stop = e.now;
    e.stop_into(&mut set);
    let final_pages = set.count();
    let downtime = final_pages * tpp_link + e.sim.latency;
    e.sim.pages_sent += final_pages;
    let status = if converged {
        status
    } else {
        format!("{status}; times shown are for a forced stop-and-copy")
    };
    Ok(e.sim.finish(
        "precopy-qemu",
        converged,
        status,
        stop + downtime,
        downtime,
        iterations,
        0,
        false,
    ))
}
