// SPDX-License-Identifier: GPL-2.0

//! The simulated world: a VM of `pfn_limit` pages, a link, the workload
//! replayed from a trace, and what every scheme reports.
//!
//! Time is integer picoseconds so the fast and the reference page sets give
//! bit-identical results (no float drift between two orders of summation).

use crate::bitset::Costs;
use miglock_trace::{Header, Sample, Trace};
use serde::Serialize;
use std::time::Instant;

/// Picoseconds per second.
pub const PS: u64 = 1_000_000_000_000;

/// Largest VM simulated: 2^32 frames (16 TiB of 4 KiB pages); each page set
/// is then 512 MiB, and the format's own limit would need terabytes.
pub const MAX_SIM_PAGES: u64 = 1 << 32;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Nothing to replay.
    #[error("the trace has no samples, so there is no workload to replay")]
    EmptyTrace,
    /// Migration start after the last sample.
    #[error("--start-at {start_s} s is at or after the trace's last sample ({end_s} s)")]
    StartBeyondEnd {
        /// Requested start, seconds.
        start_s: f64,
        /// Last sample, seconds.
        end_s: f64,
    },
    /// Too many frames for memory.
    #[error("pfn_limit {0} is too large to simulate (at most {MAX_SIM_PAGES} pages)")]
    TooLarge(u64),
    /// A parameter out of range.
    #[error("{0}")]
    Param(String),
}

/// Converts seconds to picoseconds, refusing what does not fit.
pub fn secs_to_ps(s: f64, what: &str) -> Result<u64, SimError> {
    let ps = s * PS as f64;
    if !(0.0..1.8e19).contains(&ps) {
        return Err(SimError::Param(format!("{what}: {s} s is out of range")));
    }
    Ok(ps.round() as u64)
}

/// Picoseconds to seconds, for output.
pub fn ps_to_secs(ps: u64) -> f64 {
    ps as f64 / PS as f64
}

/// The network between source and destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Bytes per second.
    pub bandwidth: f64,
    /// One-way latency, seconds.
    pub latency: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            bandwidth: 125e6,
            latency: 100e-6,
        }
    }
}

/// What goes on the wire per page, after QEMU's RAM stream: a normal page
/// is `page_header` bytes of header plus the page; an all-zero page is the
/// header plus one byte (QEMU 7.2 `save_zero_page`: 8 + 1 = 9 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wire {
    /// Bytes of header per page sent (QEMU: 8, the be64 address and flags).
    pub page_header: u32,
    /// Frames that are all-zero at migration start: the highest-numbered
    /// frames the trace never touches (see [`crate::zero_frames`]).
    pub zero_pages: u64,
}

impl Default for Wire {
    fn default() -> Self {
        Wire {
            page_header: 8,
            zero_pages: 0,
        }
    }
}

impl Wire {
    /// Bytes on the wire for a normal page of `page_size`.
    pub fn page_bytes(&self, page_size: u32) -> u64 {
        u64::from(page_size) + u64::from(self.page_header)
    }

    /// Bytes on the wire for an all-zero page.
    pub fn zero_bytes(&self) -> u64 {
        u64::from(self.page_header) + 1
    }
}

/// Time to put `bytes` (one page) on the wire at `rate` bytes/s, rounded
/// to a picosecond (at 100 Gbit/s that is an error below one part in
/// 10^5).
pub fn page_time(bytes: u64, rate: f64, pages: u64) -> Result<u64, SimError> {
    if !(rate.is_finite() && rate >= 1.0) {
        return Err(SimError::Param(format!(
            "rate {rate} bytes/s is not a usable bandwidth"
        )));
    }
    let t = (bytes as f64 * PS as f64 / rate).round().max(1.0);
    // A whole pass must fit the clock many times over.
    if t * pages as f64 > 1e18 {
        return Err(SimError::Param(format!(
            "a link of {rate} bytes/s is too slow: one pass over {pages} pages would take over 11 days"
        )));
    }
    Ok(t as u64)
}

/// The workload: the trace's samples from the migration start on, looping
/// back to the first sample when they run out.
pub struct Replay<'a> {
    samples: &'a [Sample],
    dts: Vec<u64>,
    idx: usize,
    /// Times the replay wrapped around to the start of the trace.
    pub loops: u32,
    /// Page accesses and dirties the engine applied (for events/s).
    pub pages_replayed: u64,
}

impl<'a> Replay<'a> {
    /// Replays `trace` from sample `start`.
    pub fn new(trace: &'a Trace, start: usize) -> Result<Self, SimError> {
        let samples = &trace.samples[..];
        if samples.is_empty() {
            return Err(SimError::EmptyTrace);
        }
        let mut dts = Vec::with_capacity(samples.len());
        let mut prev = 0;
        for (i, s) in samples.iter().enumerate() {
            let mut dt = s.t_us - prev;
            if i == 0 && dt == 0 {
                dt = trace.header.interval_us;
            }
            prev = s.t_us;
            dts.push(dt.checked_mul(1_000_000).ok_or_else(|| {
                SimError::Param(format!("sample {i} is too long an interval to simulate"))
            })?);
        }
        Ok(Replay {
            samples,
            dts,
            idx: start.min(samples.len() - 1),
            loops: 0,
            pages_replayed: 0,
        })
    }

    /// The next interval: its length in picoseconds, what the guest
    /// touched during it, and its index in the trace.
    pub fn next_sample(&mut self) -> (u64, &'a Sample, usize) {
        if self.idx >= self.samples.len() {
            self.idx = 0;
            self.loops += 1;
        }
        let i = self.idx;
        self.idx += 1;
        (self.dts[i], &self.samples[i], i)
    }

    /// Samples in the trace.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the trace has no samples (never: `new` refuses those).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Where the migration starts: samples before `index` are history (hints
/// may use them), replay begins at `index`.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    /// First replayed sample.
    pub index: usize,
    /// Trace time of the start, seconds.
    pub at_s: f64,
}

/// Picks the start sample for `start_at` seconds, or a quarter into the
/// trace so history-driven hints have something to learn from.
pub fn start_point(trace: &Trace, start_at: Option<f64>) -> Result<Start, SimError> {
    let last = trace.samples.last().ok_or(SimError::EmptyTrace)?.t_us;
    let want_us = match start_at {
        Some(s) if s.is_finite() && s >= 0.0 => (s * 1e6) as u64,
        Some(s) => return Err(SimError::Param(format!("--start-at {s} is not a time"))),
        None => last / 4,
    };
    let index = trace.samples.partition_point(|s| s.t_us <= want_us);
    if index >= trace.samples.len() {
        return Err(SimError::StartBeyondEnd {
            start_s: want_us as f64 / 1e6,
            end_s: last as f64 / 1e6,
        });
    }
    let at_us = if index == 0 {
        0
    } else {
        trace.samples[index - 1].t_us
    };
    Ok(Start {
        index,
        at_s: at_us as f64 / 1e6,
    })
}

/// One point of a scheme's time series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the migration started.
    pub t_s: f64,
    /// Bytes sent so far.
    pub bytes: u64,
    /// Faults (remote or CoW) so far.
    pub faults: u64,
}

/// What one scheme did on one trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemeResult {
    /// Scheme name as on the command line.
    pub scheme: String,
    /// False when the scheme gave up (QEMU-style pre-copy that does not
    /// converge); the times then describe a forced stop-and-copy.
    pub converged: bool,
    /// Why it stopped, in words.
    pub status: String,
    /// Start of migration to the VM running at the destination with all
    /// its memory there (for CoW: checkpoint complete).
    pub total_time_s: f64,
    /// Time the VM was not running anywhere.
    pub downtime_s: f64,
    /// Bytes put on the link.
    pub bytes_sent: u64,
    /// Pages put on the link (a page sent twice counts twice).
    pub pages_sent: u64,
    /// Of those, all-zero pages sent as a header only.
    pub zero_pages_sent: u64,
    /// Iterative rounds (pre-copy) or push passes (post-copy, CoW).
    pub rounds: u32,
    /// Post-copy demand fetches: first touch of a page not yet received.
    pub remote_faults: u64,
    /// Copy-on-write faults: first write of a page not yet copied out.
    pub cow_faults: u64,
    /// Time the workload spent blocked on faults.
    pub stall_time_s: f64,
    /// Times the trace was replayed from its start again because the
    /// migration outlasted it.
    pub trace_loops: u32,
    /// Simulated page events: transfers, faults and replayed accesses.
    pub page_events: u64,
    /// Bytes and faults over time.
    pub series: Vec<Point>,
    /// Exact times, picoseconds (for tests; seconds fields are these).
    #[serde(skip)]
    pub total_ps: u64,
    /// Exact downtime, picoseconds.
    #[serde(skip)]
    pub downtime_ps: u64,
    /// Exact stall time, picoseconds.
    #[serde(skip)]
    pub stall_ps: u64,
}

/// Reports long simulations on stderr so a user knows it is working.
pub struct Progress {
    label: String,
    enabled: bool,
    start: Instant,
    last: Instant,
    ticks: u64,
    shown: bool,
}

impl Progress {
    /// A reporter for `label`, silent unless `enabled`.
    pub fn new(label: &str, enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            enabled,
            start: now,
            last: now,
            ticks: 0,
            shown: false,
        }
    }

    /// Called once per simulated interval; cheap.
    #[inline]
    pub fn tick(&mut self, t_ps: u64, bytes: u64) {
        self.ticks += 1;
        if !self.enabled || self.ticks % 1024 != 0 {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.start).as_secs_f64() > 1.0
            && now.duration_since(self.last).as_secs_f64() > 0.5
        {
            self.last = now;
            self.shown = true;
            eprint!(
                "\rmigsim: {}: simulated {:.1} s, {:.1} MiB sent   ",
                self.label,
                ps_to_secs(t_ps),
                bytes as f64 / (1 << 20) as f64
            );
        }
    }

    /// Ends the progress line, if one was shown.
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

/// State every scheme shares: the VM's size, the link, the replay and the
/// running counters.
pub struct Sim<'a> {
    /// Frames in the VM.
    pub pages: u64,
    /// Bytes per frame.
    pub page_size: u32,
    /// One-way latency, picoseconds.
    pub latency: u64,
    /// Time to send one normal page at the full link bandwidth.
    pub tpp: u64,
    /// Time to send one all-zero page at the full link bandwidth.
    pub tpz: u64,
    /// Bytes on the wire per page.
    pub wire: Wire,
    /// Link bandwidth, bytes/s.
    pub bandwidth: f64,
    /// The workload.
    pub replay: Replay<'a>,
    /// Pages put on the link so far.
    pub pages_sent: u64,
    /// Of those, all-zero pages.
    pub zero_sent: u64,
    /// Faults so far.
    pub faults: u64,
    /// Recorded time series.
    pub series: Vec<Point>,
    /// Progress reporter.
    pub progress: Progress,
    last_t: u64,
}

impl<'a> Sim<'a> {
    /// Sets up a simulation of `trace` from `start` over `link`.
    pub fn new(
        trace: &'a Trace,
        start: usize,
        link: &Link,
        wire: &Wire,
        progress: Progress,
    ) -> Result<Self, SimError> {
        let h: &Header = &trace.header;
        if h.pfn_limit > MAX_SIM_PAGES {
            return Err(SimError::TooLarge(h.pfn_limit));
        }
        if !(link.latency.is_finite() && link.latency >= 0.0) {
            return Err(SimError::Param(format!(
                "latency {} s is not a time",
                link.latency
            )));
        }
        Ok(Sim {
            pages: h.pfn_limit,
            page_size: h.page_size,
            latency: secs_to_ps(link.latency, "latency")?,
            tpp: page_time(wire.page_bytes(h.page_size), link.bandwidth, h.pfn_limit)?,
            tpz: page_time(wire.zero_bytes(), link.bandwidth, h.pfn_limit)?,
            wire: *wire,
            bandwidth: link.bandwidth,
            replay: Replay::new(trace, start)?,
            pages_sent: 0,
            zero_sent: 0,
            faults: 0,
            series: vec![Point {
                t_s: 0.0,
                bytes: 0,
                faults: 0,
            }],
            progress,
            last_t: 0,
        })
    }

    /// Bytes sent so far, headers included.
    pub fn bytes(&self) -> u64 {
        (self.pages_sent - self.zero_sent) * self.wire.page_bytes(self.page_size)
            + self.zero_sent * self.wire.zero_bytes()
    }

    /// Link costs of a normal and a zero page at `rate` bytes/s.
    pub fn costs_at(&self, rate: f64) -> Result<Costs, SimError> {
        Ok(Costs {
            normal: page_time(self.wire.page_bytes(self.page_size), rate, self.pages)?,
            cheap: page_time(self.wire.zero_bytes(), rate, self.pages)?,
        })
    }

    /// Link costs at the full bandwidth.
    pub fn costs(&self) -> Costs {
        Costs {
            normal: self.tpp,
            cheap: self.tpz,
        }
    }

    /// Records a point of the time series at `t` (never before the last
    /// point) and ticks progress.
    pub fn record(&mut self, t: u64) {
        let t = t.max(self.last_t);
        self.last_t = t;
        let p = Point {
            t_s: ps_to_secs(t),
            bytes: self.bytes(),
            faults: self.faults,
        };
        if self.series.last() != Some(&p) {
            self.series.push(p);
        }
        let b = self.bytes();
        self.progress.tick(t, b);
    }

    /// Builds the result; `cow` says the faults counted were copy-on-write
    /// faults rather than remote ones.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        mut self,
        scheme: &str,
        converged: bool,
        status: String,
        total: u64,
        downtime: u64,
        rounds: u32,
        stall: u64,
        cow: bool,
    ) -> SchemeResult {
        self.record(total);
        self.progress.finish();
        let (remote_faults, cow_faults) = if cow {
            (0, self.faults)
        } else {
            (self.faults, 0)
        };
        SchemeResult {
            scheme: scheme.to_string(),
            converged,
            status,
            total_time_s: ps_to_secs(total),
            downtime_s: ps_to_secs(downtime),
            bytes_sent: self.bytes(),
            pages_sent: self.pages_sent,
            zero_pages_sent: self.zero_sent,
            rounds,
            remote_faults,
            cow_faults,
            stall_time_s: ps_to_secs(stall),
            trace_loops: self.replay.loops,
            page_events: self.pages_sent + self.faults + self.replay.pages_replayed,
            series: thin(self.series, 2000),
            total_ps: total,
            downtime_ps: downtime,
            stall_ps: stall,
        }
    }
}

/// Keeps at most about `max` points, always the first and the last.
fn thin(series: Vec<Point>, max: usize) -> Vec<Point> {
    if series.len() <= max {
        return series;
    }
    let step = series.len().div_ceil(max);
    let last = *series.last().unwrap_or(&series[0]);
    let mut out: Vec<Point> = series.into_iter().step_by(step).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}
