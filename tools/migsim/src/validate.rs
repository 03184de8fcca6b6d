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

/// The migration mode the harness ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// QEMU pre-copy, cancelled at `timeout_s` if it does not converge.
    Precopy,
    /// QEMU post-copy, switched to right after the migration starts.
    Postcopy,
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
            Mode::Postcopy => Scheme::Postcopy,
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
        Mode::Precopy => real.bandwidth_bytes_per_s,
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
    /// Simulated remote faults.
    pub sim_remote_faults: u64,
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

fn cells(r: &Row) -> Vec<String> {
    let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
    let na = || "n/a".to_string();
    vec![
        r.name.clone(),
        match r.mode {
            Mode::Precopy => "precopy",
            Mode::Postcopy => "postcopy",
        }
        .to_string(),
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
        if r.pass { "PASS" } else { "MISS" }.to_string(),
    ]
}

/// The terminal table, followed by the reasons for each MISS.
pub fn text(rows: &[Row]) -> String {
    let t: Vec<_> = rows.iter().map(cells).collect();
    let mut s = crate::report::table(&t, &HEAD);
    let _ = writeln!(s, "\n{}", summary(rows));
    for r in rows.iter().filter(|r| !r.pass) {
        let _ = writeln!(s, "{}: MISS: {}", r.name, r.misses.join("; "));
    }
    s
}

fn summary(rows: &[Row]) -> String {
    format!(
        "{} of {} within the goal (same convergence, time and bytes within {:.0} %, syncs within {}).",
        rows.iter().filter(|r| r.pass).count(),
        rows.len(),
        REL_TOLERANCE * 100.0,
        SYNC_TOLERANCE
    )
}

/// An RST table of the rows with a caption.
pub fn rst(rows: &[Row]) -> String {
    let t: Vec<_> = rows.iter().map(cells).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Real QEMU migrations against migsim (``migsim validate``). *done r/s*: \
         completed for real / in simulation; *time err* and *bytes err*: \
         (simulated - real) / real; syncs: QEMU's ``dirty-sync-count`` and the \
         count expected from the simulated rounds; *zero pg*: zero pages \
         simulated. A pre-copy that timed out is compared by bytes sent by \
         the cancel. {}\n",
        summary(rows)
    );
    s += &crate::report::rst_grid(&t, &HEAD);
    let misses: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    if !misses.is_empty() {
        s.push('\n');
        for r in misses {
            let _ = writeln!(s, "* ``{}``: {}", r.name, r.misses.join("; "));
        }
    }
    s
}

/// Marker lines of the validation table in an RST document.
pub const MARKERS: (&str, &str) = (".. migsim-validation-begin", ".. migsim-validation-end");
