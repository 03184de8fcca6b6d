// SPDX-License-Identifier: GPL-2.0

//! migsim: replays a guest's page-access trace (`.mltrace`) against
//! live-migration schemes and reports what each would cost.
//!
//! See `Documentation/migsim.rst` for the model and its assumptions.

pub mod bench;
pub mod bitset;
pub mod cow;
pub mod gen;
pub mod lazy;
pub mod model;
pub mod postcopy;
pub mod precopy;
pub mod reference;
pub mod report;
pub mod svg;
pub mod units;
pub mod validate;

use bitset::{Bitset, PageSet};
use lazy::HintSource;
use miglock_trace::Trace;
use model::{start_point, Link, Progress, SchemeResult, Sim, SimError, Wire};

/// The migration schemes simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    /// Pre-copy with Clark et al.'s dynamic rate limiting (Xen).
    PrecopyClark,
    /// Pre-copy as QEMU does it: bandwidth cap and downtime limit.
    PrecopyQemu,
    /// Post-copy: demand paging plus address-order push.
    Postcopy,
    /// Post-copy with Hines et al.'s pre-paging around faults.
    PostcopyPrepaging,
    /// Post-copy pushing pages by predicted next access.
    Lazy,
    /// Copy-on-write checkpoint.
    Cow,
}

impl Scheme {
    /// Every scheme, in report order.
    pub const ALL: [Scheme; 6] = [
        Scheme::PrecopyClark,
        Scheme::PrecopyQemu,
        Scheme::Postcopy,
        Scheme::PostcopyPrepaging,
        Scheme::Lazy,
        Scheme::Cow,
    ];

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::PrecopyClark => "precopy-clark",
            Scheme::PrecopyQemu => "precopy-qemu",
            Scheme::Postcopy => "postcopy",
            Scheme::PostcopyPrepaging => "postcopy-prepaging",
            Scheme::Lazy => "lazy",
            Scheme::Cow => "cow",
        }
    }
}

/// Where lazy-copy's hints come from.
#[derive(Clone, Debug)]
pub enum Hints {
    /// Learned from the trace before the start (causal).
    History {
        /// Samples of history.
        window: usize,
    },
    /// Given by a hint file.
    List(Vec<miglock_trace::Range>),
    /// The future (upper bound, not causal).
    Oracle,
}

impl Hints {
    fn source(&self) -> Box<dyn HintSource> {
        match self {
            Hints::History { window } => Box::new(lazy::History { window: *window }),
            Hints::List(v) => Box::new(lazy::HintList(v.clone())),
            Hints::Oracle => Box::new(lazy::Oracle),
        }
    }
}

/// Everything a run needs besides the trace.
#[derive(Clone, Debug)]
pub struct Config {
    /// The link.
    pub link: Link,
    /// Per-page header and all-zero pages.
    pub wire: Wire,
    /// Migration start in trace seconds (default: a quarter in).
    pub start_at: Option<f64>,
    /// Clark pre-copy.
    pub clark: precopy::ClarkConfig,
    /// QEMU pre-copy.
    pub qemu: precopy::QemuConfig,
    /// Post-copy, pre-paging and lazy.
    pub postcopy: postcopy::PostcopyConfig,
    /// Lazy-copy's hints.
    pub hints: Hints,
    /// CoW checkpointing.
    pub cow: cow::CowConfig,
    /// Report progress on stderr for long runs.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            link: Link::default(),
            wire: Wire::default(),
            start_at: None,
            clark: Default::default(),
            qemu: Default::default(),
            postcopy: Default::default(),
            hints: Hints::History { window: 32 },
            cow: Default::default(),
            progress: false,
        }
    }
}

/// Frames never accessed nor dirtied in any sample of `trace`.
pub fn untouched_frames(trace: &Trace) -> Bitset {
    let mut b = Bitset::empty(trace.header.pfn_limit);
    for s in &trace.samples {
        for r in s.accessed.iter().chain(&s.dirtied) {
            b.insert_range(r.start, r.pages);
        }
    }
    b.invert();
    b
}

/// The frames taken as all-zero at migration start: the trace cannot say
/// which frames hold zeros, so these are the highest-numbered frames the
/// trace never touches (neither accessed nor dirtied in any sample), up to
/// `n` of them. The workload never writes them, so they stay zero for the
/// whole migration.
pub fn zero_frames<S: PageSet>(trace: &Trace, n: u64) -> S {
    let mut z = S::empty(trace.header.pfn_limit);
    let mut left = n;
    for r in untouched_frames(trace).ranges().iter().rev() {
        if left == 0 {
            break;
        }
        let k = r.pages.min(left);
        z.insert_range(r.end() - k, k);
        left -= k;
    }
    z
}

/// Simulates `scheme` on `trace` with the fast page sets.
pub fn simulate(trace: &Trace, scheme: Scheme, cfg: &Config) -> Result<SchemeResult, SimError> {
    simulate_with::<Bitset>(trace, scheme, cfg)
}

/// Simulates `scheme` on `trace` with page sets of type `S` (tests run the
/// naive reference through the same engine).
pub fn simulate_with<S: PageSet>(
    trace: &Trace,
    scheme: Scheme,
    cfg: &Config,
) -> Result<SchemeResult, SimError> {
    let start = start_point(trace, cfg.start_at)?;
    let sim = Sim::new(
        trace,
        start.index,
        &cfg.link,
        &cfg.wire,
        Progress::new(scheme.name(), cfg.progress),
    )?;
    let zero: S = zero_frames(trace, cfg.wire.zero_pages);
    match scheme {
        Scheme::PrecopyClark => precopy::clark::<S>(sim, zero, &cfg.clark),
        Scheme::PrecopyQemu => precopy::qemu::<S>(sim, zero, &cfg.qemu),
        Scheme::Postcopy => postcopy::postcopy::<S>(
            sim,
            zero,
            scheme.name(),
            &cfg.postcopy,
            postcopy::Push::Address,
        ),
        Scheme::PostcopyPrepaging => postcopy::postcopy::<S>(
            sim,
            zero,
            scheme.name(),
            &cfg.postcopy,
            postcopy::Push::Prepaging,
        ),
        Scheme::Lazy => {
            let (past, future) = trace.samples.split_at(start.index);
            let order = cfg.hints.source().push_order(&trace.header, past, future);
            postcopy::postcopy::<S>(
                sim,
                zero,
                scheme.name(),
                &cfg.postcopy,
                postcopy::Push::Ranked(order),
            )
        }
        Scheme::Cow => cow::cow::<S>(sim, zero, &cfg.cow),
    }
}
