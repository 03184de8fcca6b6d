// SPDX-License-Identifier: GPL-2.0

//! The migration planner: from the guest's working-set figures, the VM's
//! size and the link, chooses pre-copy, post-copy, or pre-copy then
//! post-copy, with the downtime limit and bandwidth to give QEMU.
//!
//! Pre-copy is modelled round by round as QEMU runs it: the first pass sends
//! all memory; each later pass sends what was written during the previous
//! one (at most the working set); it converges once a pass would fit in the
//! downtime limit. A workload that writes about as fast as the link sends
//! never gets there, and pre-copy would run until someone gives up: the
//! planner then switches to post-copy. Hints are advice: without them the
//! plan is QEMU's default pre-copy.

use crate::hints::Workload;
use serde::{Deserialize, Serialize};

/// Rounds after which a pre-copy that has not converged counts as never.
pub const MAX_ROUNDS: u32 = 30;
/// Bytes of a page (x86 guests).
pub const PAGE: u64 = 4096;
/// Share of memory in the working set above which post-copy starts at once:
/// a pre-copy pass over memory that is mostly hot is mostly resent.
pub const HOT_SHARE_FOR_POSTCOPY: f64 = 0.5;

/// What the planner may choose (`[planner]` in the agent's configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Pre-copy then post-copy for guests pre-copy cannot keep up with.
    /// Off by default until measured against post-copy from the start on
    /// the QEMU in use (with QEMU 7.2 under TCG its dirty log is not
    /// trusted, `fence.rs`, and its uncapped post-copy phase corrupted
    /// guests, `fence::postcopy_cap`).
    pub precopy_then_postcopy: bool,
    /// Run modes that rely on the dirty log even on a QEMU known to lose
    /// pages from it (`fence.rs`): only to reproduce that fault.
    pub allow_fenced: bool,
}

/// What the planner knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Input {
    /// Guest memory.
    pub ram_bytes: u64,
    /// The guest's figures, if it sent hints.
    pub workload: Option<Workload>,
    /// Link bandwidth the migration may use, bytes/s.
    pub bandwidth: u64,
    /// Longest pause allowed, ms.
    pub downtime_limit_ms: u64,
    /// What it may choose.
    pub options: Options,
}

/// The chosen mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Choice {
    /// Iterative pre-copy.
    Precopy,
    /// Post-copy from the start.
    Postcopy,
    /// One pre-copy pass, then post-copy for the rest.
    PrecopyThenPostcopy,
}

/// The plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Mode.
    pub choice: Choice,
    /// QEMU `downtime-limit`, ms.
    pub downtime_limit_ms: u64,
    /// QEMU `max-bandwidth`, bytes/s.
    pub max_bandwidth: u64,
    /// Predicted pre-copy rounds (None: it would not converge).
    pub precopy_rounds: Option<u32>,
    /// Predicted total time, s.
    pub predicted_total_s: f64,
    /// Why, in a sentence an operator can check.
    pub why: String,
}

/// `pages` in bytes. Saturating: the count comes from the guest, and a
/// wrapped product would look like an idle guest.
fn bytes(pages: u64) -> u64 {
    pages.saturating_mul(PAGE)
}

/// Pre-copy rounds and time until convergence, if it converges.
fn precopy(i: &Input, w: &Workload) -> Option<(u32, f64)> {
    let bw = i.bandwidth.max(1) as f64;
    let rate = bytes(w.dirty_pages_per_s) as f64;
    let wss = bytes(w.wss_pages) as f64;
    let fits = bw * i.downtime_limit_ms as f64 / 1000.0;
    let mut send = i.ram_bytes as f64;
    let mut total = 0.0;
    for round in 1..=MAX_ROUNDS {
        let t = send / bw;
        total += t;
        // Written meanwhile, but never more than the pages in use.
        send = (rate * t).min(wss);
        if send <= fits {
            return Some((round, total + send / bw));
        }
    }
    None
}

/// Plans a migration.
pub fn plan(i: &Input) -> Plan {
    let bw = i.bandwidth.max(1);
    let base = Plan {
        choice: Choice::Precopy,
        downtime_limit_ms: i.downtime_limit_ms,
        max_bandwidth: bw,
        precopy_rounds: None,
        predicted_total_s: i.ram_bytes as f64 / bw as f64,
        why: String::new(),
    };
    let Some(w) = i.workload else {
        return Plan {
            why: "no hints from the guest: QEMU's default pre-copy".into(),
            ..base
        };
    };
    let mib_s = |b: u64| b as f64 / 1048576.0;
    let dirty = bytes(w.dirty_pages_per_s);
    if let Some((rounds, t)) = precopy(i, &w) {
        return Plan {
            precopy_rounds: Some(rounds),
            predicted_total_s: t,
            why: format!(
                "pre-copy converges: the guest writes {:.1} MiB/s over a {:.1} MiB working set, \
                 the link sends {:.1} MiB/s; {rounds} round(s) to fit {} ms",
                mib_s(dirty),
                mib_s(bytes(w.wss_pages)),
                mib_s(bw),
                i.downtime_limit_ms
            ),
            ..base
        };
    }
    let hot = w.wss_pages as f64 * PAGE as f64 / i.ram_bytes.max(1) as f64;
    let first_pass = i.ram_bytes as f64 / bw as f64;
    let fetch = bytes(w.wss_pages) as f64 / bw as f64;
    let (choice, total, how) = if hot >= HOT_SHARE_FOR_POSTCOPY {
        (
            Choice::Postcopy,
            first_pass,
            format!(
                "{:.0}% of memory is hot, so post-copy from the start",
                hot * 100.0
            ),
        )
    } else if !i.options.precopy_then_postcopy {
        (
            Choice::Postcopy,
            first_pass,
            "post-copy from the start (pre-copy then post-copy is off: \
             [planner] precopy_then_postcopy)"
                .to_string(),
        )
    } else {
        (
            Choice::PrecopyThenPostcopy,
            first_pass + fetch,
            format!(
                "one pre-copy pass moves the cold {:.0}%, post-copy the rest",
                (1.0 - hot) * 100.0
            ),
        )
    };
    Plan {
        choice,
        predicted_total_s: total,
        why: format!(
            "pre-copy would not converge in {MAX_ROUNDS} rounds: the guest writes {:.1} MiB/s, \
             the link sends {:.1} MiB/s; {how}",
            mib_s(dirty),
            mib_s(bw)
        ),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn input(wss_mib: u64, dirty_mib_s: u64) -> Input {
        Input {
            ram_bytes: 1024 * MIB,
            workload: Some(Workload {
                interval_ms: 1000,
                wss_pages: wss_mib * MIB / PAGE,
                dirty_pages_per_s: dirty_mib_s * MIB / PAGE,
                pfn_limit: 1024 * MIB / PAGE,
            }),
            bandwidth: 100 * MIB,
            downtime_limit_ms: 300,
            options: Options {
                precopy_then_postcopy: true,
                ..Options::default()
            },
        }
    }

    #[test]
    fn without_hints_it_keeps_qemus_default() {
        let p = plan(&Input {
            workload: None,
            ..input(0, 0)
        });
        assert_eq!(p.choice, Choice::Precopy);
        assert!(p.why.contains("no hints"));
    }

    #[test]
    fn an_idle_guest_precopies_in_one_round_plus_nothing() {
        let p = plan(&input(10, 0));
        assert_eq!(p.choice, Choice::Precopy);
        assert_eq!(p.precopy_rounds, Some(1));
        // 1 GiB at 100 MiB/s.
        assert!((p.predicted_total_s - 10.24).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_read_mostly_guest_keeps_precopy() {
        // 10 MiB/s of writes: round 2 sends ~102 MiB, round 3 ~10 MiB < 30 MiB.
        let p = plan(&input(200, 10));
        assert_eq!(p.choice, Choice::Precopy);
        assert_eq!(p.precopy_rounds, Some(2), "{p:?}");
    }

    #[test]
    fn writing_faster_than_the_link_switches_to_postcopy() {
        let p = plan(&input(256, 150));
        assert_eq!(p.choice, Choice::PrecopyThenPostcopy, "{p:?}");
        assert_eq!(p.precopy_rounds, None);
        assert!(p.why.contains("would not converge"));
        let p = plan(&input(800, 150));
        assert_eq!(p.choice, Choice::Postcopy, "{p:?}");
        // Unless allowed, never switch in the middle of pre-copy.
        let p = plan(&Input {
            options: Options::default(),
            ..input(256, 150)
        });
        assert_eq!(p.choice, Choice::Postcopy, "{p:?}");
        assert!(p.why.contains("precopy_then_postcopy"), "{p:?}");
    }

    /// A guest-supplied rate whose byte count overflows u64 is an enormous
    /// rate, not (wrapped to 0) an idle guest.
    #[test]
    fn an_overflowing_dirty_rate_never_looks_idle() {
        let mut i = input(256, 0);
        if let Some(w) = i.workload.as_mut() {
            w.dirty_pages_per_s = 1 << 52;
        }
        let p = plan(&i);
        assert_ne!(p.choice, Choice::Precopy, "{p:?}");
        assert!(p.why.contains("would not converge"), "{p:?}");
    }

    #[test]
    fn a_small_hot_set_converges_even_when_written_fast() {
        // 20 MiB written over and over: each round resends at most 20 MiB,
        // which fits 300 ms at 100 MiB/s.
        let p = plan(&input(20, 500));
        assert_eq!(p.choice, Choice::Precopy, "{p:?}");
    }
}
