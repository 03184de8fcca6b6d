// SPDX-License-Identifier: GPL-2.0

//! Validation against real QEMU migrations: a guest harness records a
//! trace (`NAME.mltrace`) and migrates the same guest with QEMU, writing
//! what QEMU reported (`NAME.real.json`); `migsim validate` simulates the
//! matching scheme with the same link, start and zero pages and compares.
//!
//! Rounds: QEMU's `dirty_sync_count` counts every dirty-bitmap sync. Pre-copy
//! syncs once at setup, once at the end of each pass (migsim's iteration
//! ends with that sync), and once more in `ram_save_complete` when it
//! completes; a run cancelled at the timeout has the setup sync plus the
//! passes that ended before it. Post-copy started right away syncs at setup
//! and once when switching (the discard bitmap). So the expected count is
//! `rounds + 2` for a completed pre-copy, `rounds` for one that timed out
//! (its last simulated round is the one the timeout cut), `rounds + 1` for
//! post-copy.
//!
//! Checkpoints: the harness also takes real live checkpoints (QEMU's
//! background snapshot, copy-on-write through userfaultfd write-protection)
//! with the image sent over the same paced link, and `mode: checkpoint`
//! runs are compared with the `cow` scheme on the time until the image is
//! through the link, the RAM bytes QEMU wrote, and the pages copied on
//! write. QEMU reports no count of those; the harness counts the
//! write-protect faults QEMU's snapshot thread served (`cow_faults`, one
//! `uffd_msg` read each) and, beside it, the distinct pages the workload
//! wrote while the checkpoint ran (`cow_written_pages`: an upper bound on
//! the workload's share, blind to the kernel's and the tracer's writes).

use crate::model::{Link, SchemeResult};
use crate::{simulate, zero_frames, Config, Scheme};
use anyhow::{bail, Context, Result};
use miglock_trace::Trace;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Relative error allowed on time and bytes for a PASS.
pub const REL_TOLERANCE: f64 = 0.10;
/// Difference allowed between real and simulated sync counts for a PASS.
pub const SYNC_TOLERANCE: i64 = 1;
/// Copy-on-write pages: an absolute difference allowed beside
/// [`REL_TOLERANCE`], for the few pages an idle guest writes (its kernel,
/// the tracer), where a relative error says little.
pub const COW_ABS_TOLERANCE: u64 = 64;

/// The migration mode the harness ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// QEMU pre-copy, cancelled at `timeout_s` if it does not converge.
    Precopy,
    /// QEMU post-copy, switched to right after the migration starts.
    Postcopy,
    /// A live checkpoint: QEMU's background snapshot, the image sent over
    /// the link.
    Checkpoint,
}

impl Mode {
    /// As in real.json.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Precopy => "precopy",
            Mode::Postcopy => "postcopy",
            Mode::Checkpoint => "checkpoint",
        }
    }
}

/// `NAME.real.json`: what the harness measured on a real migration.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RealRun {
    /// Workload name (informational).
    #[serde(default)]
    pub workload: String,
    /// Pre-copy or post-copy.
    pub mode: Mode,
    /// QEMU `max-bandwidth`, bytes/s.
    pub bandwidth_bytes_per_s: f64,
    /// Post-copy rate limit (`max-postcopy-bandwidth`) if it differs from
    /// `bandwidth_bytes_per_s`.
    #[serde(default)]
    pub postcopy_bandwidth_bytes_per_s: Option<f64>,
    /// QEMU `downtime-limit`, ms.
    #[serde(default = "default_downtime_ms")]
    pub downtime_limit_ms: f64,
    /// Migration start in trace seconds.
    pub start_at_s: f64,
    /// The harness cancels a pre-copy still running after this long.
    pub timeout_s: f64,
    /// Whether the migration completed.
    pub completed: bool,
    /// Migration start to completion (or cancel), ms: the real total time.
    /// For a checkpoint: until the image's last byte was through the link.
    pub wall_ms: f64,
    /// QEMU's `total-time` (unreliable with QEMU 7.2 here; unused).
    #[serde(default)]
    pub total_time_ms: Option<f64>,
    /// QEMU's `ram.transferred`, bytes.
    #[serde(default)]
    pub transferred_bytes: Option<u64>,
    /// QEMU's `ram.dirty-sync-count`.
    #[serde(default)]
    pub dirty_sync_count: Option<u64>,
    /// QEMU's `ram.postcopy-requests`.
    #[serde(default)]
    pub postcopy_requests: Option<u64>,
    /// QEMU's `ram.duplicate`: zero pages sent.
    #[serde(default)]
    pub zero_pages: u64,
    /// QEMU's `ram.normal`: normal pages sent.
    #[serde(default)]
    pub normal_pages: Option<u64>,
    /// One-way latency, seconds.
    #[serde(default = "default_latency")]
    pub latency_s: f64,
    /// QEMU's `downtime`, ms (the checkpoint's pause).
    #[serde(default)]
    pub downtime_ms: Option<f64>,
    /// Checkpoint: vCPU writes that hit a write-protected page (each
    /// blocked until QEMU had saved it): the real copy-on-write pages.
    #[serde(default)]
    pub cow_faults: Option<u64>,
    /// Checkpoint: of those, the ones QEMU's snapshot thread read and
    /// served out of its scan's order.
    #[serde(default)]
    pub cow_served: Option<u64>,
    /// Checkpoint: mean wait of a served write, fault to un-protect, ms.
    #[serde(default)]
    pub cow_wait_mean_ms: Option<f64>,
    /// Checkpoint: distinct pages the workload wrote while it ran (an upper
    /// bound on the workload's copy-on-write pages).
    #[serde(default)]
    pub cow_written_pages: Option<u64>,
    /// Post-copy with the guest tracer's run-ahead prefetch (the real
    /// counterpart of lazy-copy), simulated as `lazy`.
    #[serde(default)]
    pub prefetch: bool,
    /// The workload's own stall from the migration's notice on, ms: its
    /// page rewrites that took at least 20 times the usual one (`mlworkload
    /// --stalls`), summed. `null` where the workload never calibrated.
    #[serde(default)]
    pub stall_ms: Option<f64>,
    /// Those slow rewrites.
    #[serde(default)]
    pub stall_slow_ops: Option<u64>,
    /// QEMU's `postcopy-vcpu-blocktime` at the destination, ms per vCPU.
    #[serde(default)]
    pub postcopy_vcpu_blocktime_ms: Option<Vec<f64>>,
}

fn default_downtime_ms() -> f64 {
    300.0
}

fn default_latency() -> f64 {
    100e-6
}

impl RealRun {
    /// Reads and checks a `real.json`.
    pub fn load(path: &Path) -> Result<RealRun> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r: RealRun =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(r.bandwidth_bytes_per_s.is_finite() && r.bandwidth_bytes_per_s >= 1.0) {
            bail!("{}: bandwidth_bytes_per_s must be positive", path.display());
        }
        if !(ok(r.start_at_s) && ok(r.timeout_s) && ok(r.wall_ms) && ok(r.latency_s)) {
            bail!(
                "{}: start_at_s, timeout_s, wall_ms and latency_s must be non-negative",
                path.display()
            );
        }
        Ok(r)
    }

    /// The scheme simulated for this run.
    pub fn scheme(&self) -> Scheme {
        match self.mode {
            Mode::Precopy => Scheme::PrecopyQemu,
            Mode::Postcopy if self.prefetch => Scheme::Lazy,
            Mode::Postcopy => Scheme::Postcopy,
            Mode::Checkpoint => Scheme::Cow,
        }
    }
}

/// `base` adjusted to the real run: its link, start, zero pages, downtime
/// limit, and (pre-copy) the harness's timeout as the give-up time.
pub fn config_for(real: &RealRun, base: &Config) -> Config {
    let mut cfg = base.clone();
    let bw = match real.mode {
        Mode::Postcopy => real
            .postcopy_bandwidth_bytes_per_s
            .unwrap_or(real.bandwidth_bytes_per_s),
        Mode::Precopy | Mode::Checkpoint => real.bandwidth_bytes_per_s,
    };
    cfg.link = Link {
        bandwidth: bw,
        latency: real.latency_s,
    };
    cfg.start_at = Some(real.start_at_s);
    cfg.wire.zero_pages = real.zero_pages;
    cfg.qemu.max_bandwidth = None;
    cfg.qemu.downtime_limit = real.downtime_limit_ms / 1e3;
    cfg.qemu.max_time = Some(real.timeout_s);
    // QEMU iterates until the harness cancels it: only the time bounds it.
    cfg.qemu.max_iterations = u32::MAX;
    cfg.postcopy.precopy_first = false;
    if real.mode == Mode::Checkpoint {
        cfg.cow.style = crate::cow::CowStyle::Qemu;
        // How long a blocked write waited, measured (its timestamps, not
        // the count compared) on this run.
        if let Some(w) = real.cow_wait_mean_ms.filter(|w| w.is_finite() && *w >= 0.0) {
            cfg.cow.fault_cost = w / 1e3;
        }
    }
    cfg
}

/// One real run against its simulation.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// NAME of the pair.
    pub name: String,
    /// Workload from real.json.
    pub workload: String,
    /// precopy or postcopy.
    pub mode: Mode,
    /// Scheme simulated.
    pub scheme: String,
    /// Link bandwidth used, bytes/s.
    pub bandwidth_bytes_per_s: f64,
    /// Zero pages asked for (real.json) and used (at most the frames the
    /// trace never touches).
    pub zero_pages_real: u64,
    /// Zero pages the simulation used.
    pub zero_pages_sim: u64,
    /// Real migration completed.
    pub real_converged: bool,
    /// Simulation converged (completed before the timeout).
    pub sim_converged: bool,
    /// Real total time (`wall_ms`), s.
    pub real_time_s: f64,
    /// Simulated total time, s (the timeout for a run that gave up).
    pub sim_time_s: f64,
    /// (sim - real) / real.
    pub time_rel_err: f64,
    /// Real bytes transferred.
    pub real_bytes: Option<u64>,
    /// Simulated bytes (by the real cancel time for a run that gave up).
    pub sim_bytes: u64,
    /// (sim - real) / real, when real bytes are known.
    pub bytes_rel_err: Option<f64>,
    /// Real dirty-sync count.
    pub real_syncs: Option<u64>,
    /// Simulated rounds.
    pub sim_rounds: u32,
    /// Sync count expected from the simulated rounds (see module docs).
    pub sim_syncs: u64,
    /// sim_syncs - real_syncs.
    pub sync_diff: Option<i64>,
    /// Real post-copy page requests.
    pub real_postcopy_requests: Option<u64>,
    /// Real downtime (QEMU's), ms.
    pub real_downtime_ms: Option<f64>,
    /// Simulated downtime, ms.
    pub sim_downtime_ms: f64,
    /// Checkpoint: real copy-on-write pages (writes that hit a protected
    /// page).
    pub real_cow_faults: Option<u64>,
    /// Checkpoint: of those, served out of the scan's order.
    pub real_cow_served: Option<u64>,
    /// Blocked-write wait simulated (the real one when measured), ms.
    pub sim_fault_wait_ms: f64,
    /// Checkpoint: distinct pages the workload wrote while it ran.
    pub real_cow_written: Option<u64>,
    /// Simulated copy-on-write faults.
    pub sim_cow_faults: u64,
    /// (sim - real) / real copy-on-write pages, when counted.
    pub cow_rel_err: Option<f64>,
    /// Simulated remote faults.
    pub sim_remote_faults: u64,
    /// (sim - real) / real remote faults against `postcopy-requests`.
    pub faults_rel_err: Option<f64>,
    /// Post-copy with the run-ahead (simulated as lazy-copy).
    pub prefetch: bool,
    /// The workload's real stall, ms.
    pub real_stall_ms: Option<f64>,
    /// Simulated stall, ms.
    pub sim_stall_ms: f64,
    /// (sim - real) / real stall.
    pub stall_rel_err: Option<f64>,
    /// QEMU's blocked time summed over the destination's vCPUs, ms.
    pub real_vcpu_block_ms: Option<f64>,
    /// The real bytes over the link's rate, s: what the run would take if
    /// the link bound it.
    pub link_time_s: Option<f64>,
    /// Post-copy without the run-ahead: lazy-copy simulated on the same
    /// trace (faults, stall ms), for the gain against a prefetch run.
    pub sim_lazy: Option<(u64, f64)>,
    /// Post-copy: the same simulation with the interval's touches in
    /// address order rather than shuffled (faults, stall ms): the trace
    /// does not say which, and QEMU's sweep serves address order best.
    pub sim_address_order: Option<(u64, f64)>,
    /// Within the goal: same convergence, time and bytes within 10 %,
    /// syncs within 1.
    pub pass: bool,
    /// What missed the goal, in words.
    pub misses: Vec<String>,
    /// The simulation's own status line.
    pub sim_status: String,
}

/// Bytes sent by time `t_s`, interpolated from the result's series.
fn bytes_at(r: &SchemeResult, t_s: f64) -> u64 {
    let s = &r.series;
    let i = s.partition_point(|p| p.t_s <= t_s);
    if i == 0 {
        return 0;
    }
    if i >= s.len() {
        return s.last().map_or(0, |p| p.bytes);
    }
    let (a, b) = (&s[i - 1], &s[i]);
    let f = if b.t_s > a.t_s {
        (t_s - a.t_s) / (b.t_s - a.t_s)
    } else {
        0.0
    };
    a.bytes + ((b.bytes - a.bytes) as f64 * f).round() as u64
}

/// Simulates `real`'s scheme on `trace` and compares.
pub fn compare(name: &str, trace: &Trace, real: &RealRun, base: &Config) -> Result<Row> {
    let cfg = config_for(real, base);
    let scheme = real.scheme();
    let r = simulate(trace, scheme, &cfg).with_context(|| format!("{name}: {}", scheme.name()))?;
    let untouched = crate::untouched_frames(trace);
    let zero_sim = real
        .zero_pages
        .min(crate::bitset::PageSet::count(&untouched));
    debug_assert_eq!(
        crate::bitset::PageSet::count(&zero_frames::<crate::bitset::Bitset>(
            trace,
            real.zero_pages
        )),
        zero_sim
    );
    let real_time = real.wall_ms / 1e3;
    let (sim_time, sim_bytes) = if r.converged {
        (r.total_time_s, r.bytes_sent)
    } else {
        (real.timeout_s, bytes_at(&r, real_time))
    };
    let sim_syncs = match (real.mode, r.converged) {
        (Mode::Precopy, true) => u64::from(r.rounds) + 2,
        (Mode::Precopy, false) => u64::from(r.rounds),
        (Mode::Postcopy, _) => u64::from(r.rounds) + 1,
        // One bitmap sync at the start (the image's moment).
        (Mode::Checkpoint, _) => 1,
    };
    let rel = |sim: f64, real: f64| {
        if real > 0.0 {
            (sim - real) / real
        } else if sim == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let time_rel_err = rel(sim_time, real_time);
    let bytes_rel_err = real
        .transferred_bytes
        .map(|b| rel(sim_bytes as f64, b as f64));
    let sync_diff = real.dirty_sync_count.map(|n| sim_syncs as i64 - n as i64);
    let post = real.mode == Mode::Postcopy;
    let faults_rel_err = real
        .postcopy_requests
        .filter(|_| post)
        .map(|n| rel(r.remote_faults as f64, n as f64));
    let real_stall_ms = real.stall_ms.filter(|_| post);
    let sim_stall_ms = r.stall_time_s * 1e3;
    let stall_rel_err = real_stall_ms.map(|x| rel(sim_stall_ms, x));
    let sim_lazy = if post && !real.prefetch {
        let l = simulate(trace, Scheme::Lazy, &cfg).with_context(|| format!("{name}: lazy"))?;
        Some((l.remote_faults, l.stall_time_s * 1e3))
    } else {
        None
    };
    let sim_address_order = if post {
        let mut c = cfg.clone();
        c.postcopy.touch_order = crate::postcopy::TouchOrder::Address;
        let a = simulate(trace, scheme, &c).with_context(|| format!("{name}: address order"))?;
        Some((a.remote_faults, a.stall_time_s * 1e3))
    } else {
        None
    };
    let real_cow = real.cow_faults.filter(|_| real.mode == Mode::Checkpoint);
    let cow_rel_err = real_cow.map(|n| rel(r.cow_faults as f64, n as f64));
    let mut misses = Vec::new();
    if r.converged != real.completed {
        misses.push(format!(
            "convergence: real {}, simulated {}",
            if real.completed {
                "completed"
            } else {
                "timed out"
            },
            if r.converged {
                "completed"
            } else {
                "timed out"
            }
        ));
    }
    if time_rel_err.abs() > REL_TOLERANCE {
        misses.push(format!("time {:+.1} %", time_rel_err * 100.0));
    }
    if let Some(e) = bytes_rel_err.filter(|e| e.abs() > REL_TOLERANCE) {
        misses.push(format!("bytes {:+.1} %", e * 100.0));
    }
    if let Some(d) = sync_diff.filter(|d| d.abs() > SYNC_TOLERANCE) {
        misses.push(format!("syncs {d:+}"));
    }
    if let (Some(n), Some(e)) = (real_cow, cow_rel_err) {
        if e.abs() > REL_TOLERANCE && r.cow_faults.abs_diff(n) > COW_ABS_TOLERANCE {
            misses.push(format!(
                "copy-on-write pages {} real, {} simulated ({:+.1} %)",
                n,
                r.cow_faults,
                e * 100.0
            ));
        }
    }
    Ok(Row {
        name: name.to_string(),
        workload: real.workload.clone(),
        mode: real.mode,
        scheme: scheme.name().to_string(),
        bandwidth_bytes_per_s: cfg.link.bandwidth,
        zero_pages_real: real.zero_pages,
        zero_pages_sim: zero_sim,
        real_converged: real.completed,
        sim_converged: r.converged,
        real_time_s: real_time,
        sim_time_s: sim_time,
        time_rel_err,
        real_bytes: real.transferred_bytes,
        sim_bytes,
        bytes_rel_err,
        real_syncs: real.dirty_sync_count,
        sim_rounds: r.rounds,
        sim_syncs,
        sync_diff,
        real_postcopy_requests: real.postcopy_requests,
        sim_remote_faults: r.remote_faults,
        faults_rel_err,
        prefetch: real.prefetch,
        real_stall_ms,
        sim_stall_ms,
        stall_rel_err,
        real_vcpu_block_ms: real
            .postcopy_vcpu_blocktime_ms
            .as_ref()
            .filter(|_| post)
            .map(|v| v.iter().sum()),
        link_time_s: real
            .transferred_bytes
            .map(|b| b as f64 / cfg.link.bandwidth),
        sim_lazy,
        sim_address_order,
        real_downtime_ms: real.downtime_ms,
        sim_downtime_ms: r.downtime_s * 1e3,
        real_cow_faults: real_cow,
        real_cow_served: real.cow_served,
        sim_fault_wait_ms: cfg.cow.fault_cost * 1e3,
        real_cow_written: real.cow_written_pages,
        sim_cow_faults: r.cow_faults,
        cow_rel_err,
        pass: misses.is_empty(),
        misses,
        sim_status: r.status,
    })
}

/// The `NAME.real.json` files of `dir` with their `NAME.mltrace`, sorted.
pub fn pairs(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let Some(fname) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(name) = fname.strip_suffix(".real.json") else {
            continue;
        };
        let trace = dir.join(format!("{name}.mltrace"));
        if !trace.exists() {
            bail!("{} has no {}", p.display(), trace.display());
        }
        out.push((name.to_string(), trace, p));
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: no NAME.real.json files", dir.display());
    }
    Ok(out)
}

/// The real run recorded beside a trace `NAME.mltrace`, if any.
pub fn real_beside(trace: &Path) -> Result<Option<RealRun>> {
    let Some(stem) = trace.file_name().and_then(|f| f.to_str()) else {
        return Ok(None);
    };
    let stem = stem.strip_suffix(".mltrace").unwrap_or(stem);
    let p = trace.with_file_name(format!("{stem}.real.json"));
    if p.exists() {
        RealRun::load(&p).map(Some)
    } else {
        Ok(None)
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn pct(e: f64) -> String {
    format!("{:+.1}%", e * 100.0)
}

const HEAD: [&str; 14] = [
    "name",
    "mode",
    "done r/s",
    "real s",
    "sim s",
    "time err",
    "real MiB",
    "sim MiB",
    "bytes err",
    "real syncs",
    "sim syncs",
    "diff",
    "zero pg",
    "goal",
];

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 20) as f64)
}

fn na() -> String {
    "n/a".to_string()
}

fn goal(r: &Row) -> String {
    if r.pass { "PASS" } else { "MISS" }.to_string()
}

fn cells(r: &Row) -> Vec<String> {
    vec![
        r.name.clone(),
        r.mode.name().to_string(),
        format!("{}/{}", yn(r.real_converged), yn(r.sim_converged)),
        format!("{:.2}", r.real_time_s),
        format!("{:.2}", r.sim_time_s),
        pct(r.time_rel_err),
        r.real_bytes.map_or_else(na, mib),
        mib(r.sim_bytes),
        r.bytes_rel_err.map_or_else(na, pct),
        r.real_syncs.map_or_else(na, |n| n.to_string()),
        r.sim_syncs.to_string(),
        r.sync_diff.map_or_else(na, |d| format!("{d:+}")),
        r.zero_pages_sim.to_string(),
        goal(r),
    ]
}

const CKPT_HEAD: [&str; 16] = [
    "name",
    "real s",
    "sim s",
    "time err",
    "real MiB",
    "sim MiB",
    "bytes err",
    "real CoW",
    "sim CoW",
    "CoW err",
    "served",
    "wait ms",
    "wrote",
    "real pause ms",
    "sim pause ms",
    "goal",
];

fn checkpoint_cells(r: &Row) -> Vec<String> {
    vec![
        r.name.clone(),
        format!("{:.2}", r.real_time_s),
        format!("{:.2}", r.sim_time_s),
        pct(r.time_rel_err),
        r.real_bytes.map_or_else(na, mib),
        mib(r.sim_bytes),
        r.bytes_rel_err.map_or_else(na, pct),
        r.real_cow_faults.map_or_else(na, |n| n.to_string()),
        r.sim_cow_faults.to_string(),
        r.cow_rel_err.map_or_else(na, pct),
        r.real_cow_served.map_or_else(na, |n| n.to_string()),
        format!("{:.2}", r.sim_fault_wait_ms),
        r.real_cow_written.map_or_else(na, |n| n.to_string()),
        r.real_downtime_ms.map_or_else(na, |d| format!("{d:.0}")),
        format!("{:.1}", r.sim_downtime_ms),
        goal(r),
    ]
}

/// The migration rows and the checkpoint rows.
fn split(rows: &[Row]) -> (Vec<&Row>, Vec<&Row>) {
    rows.iter().partition(|r| r.mode != Mode::Checkpoint)
}

const POST_HEAD: [&str; 15] = [
    "name",
    "scheme",
    "link MiB/s",
    "real s",
    "link s",
    "sim s",
    "real req",
    "sim faults",
    "faults err",
    "real stall ms",
    "sim stall ms",
    "stall err",
    "addr faults",
    "addr stall ms",
    "vCPU block ms",
];

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(na, |x| format!("{x:.0}"))
}

fn post_cells(r: &Row) -> Vec<String> {
    vec![
        r.name.clone(),
        r.scheme.clone(),
        format!("{:.0}", r.bandwidth_bytes_per_s / (1u64 << 20) as f64),
        format!("{:.2}", r.real_time_s),
        r.link_time_s.map_or_else(na, |t| format!("{t:.2}")),
        format!("{:.2}", r.sim_time_s),
        r.real_postcopy_requests.map_or_else(na, |n| n.to_string()),
        r.sim_remote_faults.to_string(),
        r.faults_rel_err.map_or_else(na, pct),
        opt_ms(r.real_stall_ms),
        format!("{:.0}", r.sim_stall_ms),
        r.stall_rel_err.map_or_else(na, pct),
        r.sim_address_order.map_or_else(na, |(f, _)| f.to_string()),
        opt_ms(r.sim_address_order.map(|(_, s)| s)),
        opt_ms(r.real_vcpu_block_ms),
    ]
}

/// Lazy-copy's simulated gain against the real run-ahead's: a post-copy
/// run without the run-ahead and one with it, of the same workload over
/// the same link.
#[derive(Clone, Debug, Serialize)]
pub struct Gain {
    /// The workload.
    pub workload: String,
    /// The run without and the run with the run-ahead.
    pub names: (String, String),
    /// The workload's real stall without and with the run-ahead, ms.
    pub real_stall_ms: (Option<f64>, Option<f64>),
    /// (without - with) / without.
    pub real_gain: Option<f64>,
    /// Simulated post-copy and lazy-copy stall on the trace of the run
    /// without the run-ahead, ms.
    pub sim_stall_ms: (f64, f64),
    /// (post-copy - lazy) / post-copy.
    pub sim_gain: Option<f64>,
    /// sim_gain - real_gain, in fractions (0.1 = 10 points).
    pub gain_err: Option<f64>,
    /// Real requests without and with the run-ahead.
    pub real_requests: (Option<u64>, Option<u64>),
    /// Simulated faults, post-copy and lazy-copy.
    pub sim_faults: (u64, u64),
}

/// Pairs each prefetch run with the run without it (same workload and
/// link).
pub fn gains(rows: &[Row]) -> Vec<Gain> {
    let frac = |a: f64, b: f64| (a > 0.0).then(|| (a - b) / a);
    rows.iter()
        .filter(|on| on.prefetch && on.mode == Mode::Postcopy)
        .filter_map(|on| {
            let off = rows.iter().find(|r| {
                !r.prefetch
                    && r.mode == Mode::Postcopy
                    && r.workload == on.workload
                    && r.bandwidth_bytes_per_s == on.bandwidth_bytes_per_s
                    && r.sim_lazy.is_some()
            })?;
            let (lazy_faults, lazy_stall) = off.sim_lazy?;
            let real_gain = match (off.real_stall_ms, on.real_stall_ms) {
                (Some(a), Some(b)) => frac(a, b),
                _ => None,
            };
            let sim_gain = frac(off.sim_stall_ms, lazy_stall);
            Some(Gain {
                workload: on.workload.clone(),
                names: (off.name.clone(), on.name.clone()),
                real_stall_ms: (off.real_stall_ms, on.real_stall_ms),
                real_gain,
                sim_stall_ms: (off.sim_stall_ms, lazy_stall),
                sim_gain,
                gain_err: sim_gain.zip(real_gain).map(|(s, r)| s - r),
                real_requests: (off.real_postcopy_requests, on.real_postcopy_requests),
                sim_faults: (off.sim_remote_faults, lazy_faults),
            })
        })
        .collect()
}

const GAIN_HEAD: [&str; 11] = [
    "workload",
    "real stall ms",
    "with run-ahead",
    "real gain",
    "sim post-copy ms",
    "sim lazy ms",
    "sim gain",
    "gain err",
    "real req",
    "with run-ahead",
    "sim faults p/l",
];

fn gain_cells(g: &Gain) -> Vec<String> {
    let opt_n = |v: Option<u64>| v.map_or_else(na, |n| n.to_string());
    vec![
        g.workload.clone(),
        opt_ms(g.real_stall_ms.0),
        opt_ms(g.real_stall_ms.1),
        g.real_gain.map_or_else(na, pct),
        format!("{:.0}", g.sim_stall_ms.0),
        format!("{:.0}", g.sim_stall_ms.1),
        g.sim_gain.map_or_else(na, pct),
        g.gain_err
            .map_or_else(na, |e| format!("{:+.0} pt", e * 100.0)),
        opt_n(g.real_requests.0),
        opt_n(g.real_requests.1),
        format!("{}/{}", g.sim_faults.0, g.sim_faults.1),
    ]
}

/// The post-copy rows' faults and stall, and the run-ahead's gain, as a
/// terminal table each.
fn post_text(rows: &[Row]) -> String {
    let post: Vec<_> = rows.iter().filter(|r| r.mode == Mode::Postcopy).collect();
    let mut s = String::new();
    if post.is_empty() {
        return s;
    }
    let t: Vec<_> = post.iter().map(|r| post_cells(r)).collect();
    s += &crate::report::table(&t, &POST_HEAD);
    let g = gains(rows);
    if !g.is_empty() {
        s.push('\n');
        let t: Vec<_> = g.iter().map(gain_cells).collect();
        s += &crate::report::table(&t, &GAIN_HEAD);
    }
    s
}

/// The terminal tables (migrations, then checkpoints), each followed by
/// the reasons for each MISS.
pub fn text(rows: &[Row]) -> String {
    let (mig, ckpt) = split(rows);
    let mut s = String::new();
    for (rows, summary, head, cells) in [
        (
            &mig,
            summary(&mig),
            &HEAD[..],
            cells as fn(&Row) -> Vec<String>,
        ),
        (
            &ckpt,
            checkpoint_summary(&ckpt),
            &CKPT_HEAD[..],
            checkpoint_cells,
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push('\n');
        }
        let t: Vec<_> = rows.iter().map(|r| cells(r)).collect();
        s += &crate::report::table(&t, head);
        let _ = writeln!(s, "\n{summary}");
        for r in rows.iter().filter(|r| !r.pass) {
            let _ = writeln!(s, "{}: MISS: {}", r.name, r.misses.join("; "));
        }
    }
    let p = post_text(rows);
    if !p.is_empty() {
        s.push('\n');
        s += &p;
    }
    s
}

fn summary(rows: &[&Row]) -> String {
    format!(
        "{} of {} within the goal (same convergence, time and bytes within {:.0} %, syncs within {}).",
        rows.iter().filter(|r| r.pass).count(),
        rows.len(),
        REL_TOLERANCE * 100.0,
        SYNC_TOLERANCE
    )
}

fn checkpoint_summary(rows: &[&Row]) -> String {
    format!(
        "{} of {} within the goal (time, bytes and copy-on-write pages within {:.0} %, \
         or within {} pages for copy-on-write).",
        rows.iter().filter(|r| r.pass).count(),
        rows.len(),
        REL_TOLERANCE * 100.0,
        COW_ABS_TOLERANCE
    )
}

fn rst_misses(s: &mut String, rows: &[&Row]) {
    let misses: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    if !misses.is_empty() {
        s.push('\n');
        for r in misses {
            let _ = writeln!(s, "* ``{}``: {}", r.name, r.misses.join("; "));
        }
    }
}

/// RST tables of the rows with captions: migrations, then checkpoints.
pub fn rst(rows: &[Row]) -> String {
    let (mig, ckpt) = split(rows);
    let mut s = String::new();
    if !mig.is_empty() {
        let t: Vec<_> = mig.iter().map(|r| cells(r)).collect();
        let _ = writeln!(
            s,
            "Real QEMU migrations against migsim (``migsim validate``). *done r/s*: \
             completed for real / in simulation; *time err* and *bytes err*: \
             (simulated - real) / real; syncs: QEMU's ``dirty-sync-count`` and the \
             count expected from the simulated rounds; *zero pg*: zero pages \
             simulated. A pre-copy that timed out is compared by bytes sent by \
             the cancel. {}\n",
            summary(&mig)
        );
        s += &crate::report::rst_grid(&t, &HEAD);
        rst_misses(&mut s, &mig);
    }
    if !ckpt.is_empty() {
        if !s.is_empty() {
            s.push('\n');
        }
        let t: Vec<_> = ckpt.iter().map(|r| checkpoint_cells(r)).collect();
        let _ = writeln!(
            s,
            "Real QEMU live checkpoints (``background-snapshot``, the image sent \
             over the same link) against migsim's ``cow`` scheme (style ``qemu``). \
             *real s*: until the image's last byte was through the link; MiB: RAM \
             bytes (QEMU's ``ram.transferred``); *real CoW*: guest writes that hit \
             a write-protected page and blocked until QEMU had saved it (counted \
             by the harness from outside with the kernel's trace points: QEMU \
             reports none); *sim CoW*: simulated copy-on-write faults; *served*: \
             of the real ones, those QEMU read and saved out of its scan's order; \
             *wait ms*: how long a blocked write waits in the simulation, the \
             mean measured on the run (fault to un-protect); *wrote*: distinct \
             pages the workload wrote while the checkpoint ran (most after QEMU \
             had saved them); *pause*: QEMU's ``downtime`` and the simulated \
             pause. {}\n",
            checkpoint_summary(&ckpt)
        );
        s += &crate::report::rst_grid(&t, &CKPT_HEAD);
        rst_misses(&mut s, &ckpt);
    }
    let post: Vec<_> = rows.iter().filter(|r| r.mode == Mode::Postcopy).collect();
    if !post.is_empty() {
        if !s.is_empty() {
            s.push('\n');
        }
        let t: Vec<_> = post.iter().map(|r| post_cells(r)).collect();
        let _ = writeln!(
            s,
            "Post-copy's remote faults and the workload's stall (the same runs). \
             *link MiB/s*: the post-copy rate limit; *link s*: the real bytes over \
             it (a run well above it is not bound by the link); *real req*: QEMU's \
             ``postcopy-requests``; *sim faults*: simulated remote faults; *real \
             stall*: the workload's own blocked page rewrites from the migration's \
             notice on (``mlworkload --stalls``; n/a where it writes too few pages \
             to calibrate); *sim stall*: the simulated vCPU's time blocked on \
             faults; errors (simulated - real) / real; *addr*: the same \
             simulation with each interval's touches in address order rather \
             than shuffled (the trace does not record their order); *vCPU \
             block*: QEMU's ``postcopy-vcpu-blocktime`` summed over the \
             destination's two vCPUs.\n"
        );
        s += &crate::report::rst_grid(&t, &POST_HEAD);
    }
    let g = gains(rows);
    if !g.is_empty() {
        s.push('\n');
        let t: Vec<_> = g.iter().map(gain_cells).collect();
        let _ = writeln!(
            s,
            "Lazy-copy's gain against the real one: the workload's stall in a real \
             post-copy without and with the guest tracer's run-ahead (its real \
             counterpart), and migsim's post-copy and lazy-copy on the trace of the \
             run without it; gains (without - with) / without, *gain err* simulated \
             minus real in percentage points; requests real, faults simulated \
             (post-copy/lazy). One run each.\n"
        );
        s += &crate::report::rst_grid(&t, &GAIN_HEAD);
    }
    s
}

/// Marker lines of the validation table in an RST document.
pub const MARKERS: (&str, &str) = (".. migsim-validation-begin", ".. migsim-validation-end");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{generate, GenParams, Workload};

    fn write_heavy() -> Trace {
        generate(&GenParams {
            workload: Workload::WriteHeavy,
            mem: 16 << 20,
            seconds: 4.0,
            interval_us: 100_000,
            seed: 3,
        })
        .unwrap()
    }

    fn checkpoint(extra: &str) -> RealRun {
        serde_json::from_str(&format!(
            r#"{{"workload": "write-heavy", "mode": "checkpoint",
                "bandwidth_bytes_per_s": 33554432, "start_at_s": 1.0, "timeout_s": 60.0,
                "completed": true, "wall_ms": 500, "transferred_bytes": 16000000,
                "zero_pages": 100, "downtime_ms": 4 {extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_checkpoint_is_simulated_as_qemu_cow_with_its_measured_wait() {
        let r = checkpoint(r#", "cow_faults": 700, "cow_served": 650, "cow_wait_mean_ms": 2.5"#);
        assert_eq!(r.scheme(), Scheme::Cow);
        let base = Config {
            cow: crate::cow::CowConfig {
                style: crate::cow::CowStyle::CopyAside,
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = config_for(&r, &base);
        assert_eq!(cfg.cow.style, crate::cow::CowStyle::Qemu);
        assert!((cfg.cow.fault_cost - 2.5e-3).abs() < 1e-12);
        assert_eq!(cfg.link.bandwidth, 33554432.0);
        // Without a measured wait, the model's own.
        let cfg = config_for(&checkpoint(""), &Config::default());
        assert_eq!(
            cfg.cow.fault_cost,
            crate::cow::CowConfig::default().fault_cost
        );
        // A migration keeps the base's CoW settings.
        let mut m = checkpoint("");
        m.mode = Mode::Precopy;
        assert_eq!(
            config_for(&m, &base).cow.style,
            crate::cow::CowStyle::CopyAside
        );
    }

    #[test]
    fn a_checkpoint_row_compares_time_bytes_and_cow_pages_with_the_simulation() {
        let t = write_heavy();
        let real = checkpoint(r#", "cow_faults": 700, "cow_served": 650, "cow_wait_mean_ms": 1.0"#);
        let row = compare("wh-checkpoint", &t, &real, &Config::default()).unwrap();
        let sim = simulate(&t, Scheme::Cow, &config_for(&real, &Config::default())).unwrap();
        assert_eq!(row.mode, Mode::Checkpoint);
        assert_eq!(row.scheme, "cow");
        assert_eq!(row.sim_cow_faults, sim.cow_faults);
        assert_eq!(row.sim_bytes, sim.bytes_sent);
        assert_eq!(row.sim_time_s, sim.total_time_s);
        assert_eq!(
            (row.real_cow_faults, row.real_cow_served),
            (Some(700), Some(650))
        );
        let e = (sim.cow_faults as f64 - 700.0) / 700.0;
        assert!((row.cow_rel_err.unwrap() - e).abs() < 1e-12);
        assert!((row.time_rel_err - (sim.total_time_s - 0.5) / 0.5).abs() < 1e-12);
        assert_eq!(row.real_downtime_ms, Some(4.0));
        assert_eq!(row.sync_diff, None);
        // The goal: CoW pages within 10 % or 64 pages.
        let cow_missed = row.misses.iter().any(|m| m.starts_with("copy-on-write"));
        let n = sim.cow_faults;
        assert_eq!(
            cow_missed,
            n.abs_diff(700) > COW_ABS_TOLERANCE && e.abs() > REL_TOLERANCE,
            "{row:?}"
        );
        // A real count equal to the simulation's passes on CoW.
        let same = checkpoint(&format!(r#", "cow_faults": {n}, "cow_wait_mean_ms": 1.0"#));
        let row = compare("same", &t, &same, &Config::default()).unwrap();
        assert_eq!(row.cow_rel_err, Some(0.0));
        assert!(!row.misses.iter().any(|m| m.starts_with("copy-on-write")));
        // Without a count, nothing is judged on CoW.
        let row = compare("none", &t, &checkpoint(""), &Config::default()).unwrap();
        assert_eq!((row.real_cow_faults, row.cow_rel_err), (None, None));
    }

    #[test]
    fn migrations_and_checkpoints_get_their_own_tables() {
        let t = write_heavy();
        let ck = compare(
            "wh-checkpoint",
            &t,
            &checkpoint(r#", "cow_faults": 7"#),
            &Config::default(),
        )
        .unwrap();
        let rst_one = rst(std::slice::from_ref(&ck));
        assert!(rst_one.contains("background-snapshot") && rst_one.contains("real CoW"));
        assert!(!rst_one.contains("dirty-sync-count"), "{rst_one}");
        let mut m = checkpoint("");
        m.mode = Mode::Postcopy;
        let mig = compare("wh-postcopy", &t, &m, &Config::default()).unwrap();
        let both = rst(&[mig, ck]);
        let (a, b) = (
            both.find("dirty-sync-count").unwrap(),
            both.find("real CoW").unwrap(),
        );
        assert!(a < b, "migrations first");
        assert!(both.contains("\nwh-postcopy ") && both.contains("\nwh-checkpoint "));
        assert_eq!(both.matches("of 1 within the goal").count(), 2, "{both}");
        assert!(text(&[]).is_empty());
    }

    #[test]
    fn postcopy_rows_compare_faults_and_stall_and_pair_the_run_ahead() {
        let t = write_heavy();
        let post = |extra: &str| -> RealRun {
            let mut r = checkpoint(&format!(
                r#", "postcopy_requests": 40, "stall_ms": 500.0, "postcopy_vcpu_blocktime_ms": [300, 200] {extra}"#
            ));
            r.mode = Mode::Postcopy;
            r
        };
        let off = compare("hs-postcopy", &t, &post(""), &Config::default()).unwrap();
        let sim = simulate(
            &t,
            Scheme::Postcopy,
            &config_for(&post(""), &Config::default()),
        )
        .unwrap();
        assert_eq!(off.scheme, "postcopy");
        assert_eq!(off.sim_remote_faults, sim.remote_faults);
        let e = (sim.remote_faults as f64 - 40.0) / 40.0;
        assert!((off.faults_rel_err.unwrap() - e).abs() < 1e-12);
        let e = (sim.stall_time_s * 1e3 - 500.0) / 500.0;
        assert!((off.stall_rel_err.unwrap() - e).abs() < 1e-9);
        assert_eq!(off.real_vcpu_block_ms, Some(500.0));
        assert!(off.sim_lazy.is_some() && off.sim_address_order.is_some());
        // The run with the run-ahead is simulated as lazy-copy and paired
        // with the one without it.
        let mut on = post("");
        on.prefetch = true;
        on.stall_ms = Some(250.0);
        assert_eq!(on.scheme(), Scheme::Lazy);
        let on = compare("hs-prefetch", &t, &on, &Config::default()).unwrap();
        assert!(on.sim_lazy.is_none());
        let g = gains(&[off.clone(), on.clone()]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].real_gain, Some(0.5));
        let (lf, ls) = off.sim_lazy.unwrap();
        assert_eq!(g[0].sim_faults, (off.sim_remote_faults, lf));
        if off.sim_stall_ms > 0.0 {
            let sg = (off.sim_stall_ms - ls) / off.sim_stall_ms;
            assert!((g[0].gain_err.unwrap() - (sg - 0.5)).abs() < 1e-12);
        }
        let both = rst(&[off.clone(), on]);
        assert!(both.contains("postcopy-requests") && both.contains("run-ahead"));
        // A checkpoint or a pre-copy has no post-copy figures.
        let ck = compare("ck", &t, &checkpoint(""), &Config::default()).unwrap();
        assert_eq!((ck.faults_rel_err, ck.real_stall_ms), (None, None));
        assert!(gains(&[off]).is_empty());
    }
}
