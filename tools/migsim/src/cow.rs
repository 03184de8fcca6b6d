// SPDX-License-Identifier: GPL-2.0

//! Copy-on-write checkpointing (Blessy & Nicholas, Xen): pause briefly,
//! write-protect all memory, resume, and send the snapshot in the
//! background; a write to a page not yet sent first copies it aside (a CoW
//! fault, a local copy that stalls the writer), so the snapshot stays
//! consistent and every page crosses the link exactly once.
//!
//! As in post-copy, an interval's writes are spread evenly over it in
//! address order and the push (in address order) runs until each.

use crate::bitset::PageSet;
use crate::model::{secs_to_ps, SchemeResult, Sim, SimError};

/// CoW checkpoint parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct CowConfig {
    /// Pause to write-protect memory and save the CPU state, seconds.
    pub pause: f64,
    /// Cost of one CoW fault: trap plus a local page copy, seconds.
    pub fault_cost: f64,
}

impl Default for CowConfig {
    fn default() -> Self {
        CowConfig {
            pause: 1e-3,
            fault_cost: 2e-6,
        }
    }
}

/// Runs a CoW checkpoint: total time is until the last page has arrived.
pub fn cow<S: PageSet>(
    mut sim: Sim<'_>,
    zero: S,
    cfg: &CowConfig,
) -> Result<SchemeResult, SimError> {
    let pages = sim.pages;
    let pause = secs_to_ps(cfg.pause, "CoW pause")?;
    let fault_cost = secs_to_ps(cfg.fault_cost, "CoW fault cost")?;
    let costs = sim.costs();
    // Frames below `sent`, as a set: the costed fill over it advances `sent`
    // with zero pages cheap.
    let mut sent_set = S::empty(pages);
    let mut send = |t: u64, link: &mut u64, sent: &mut u64, sim: &mut Sim<'_>| {
        let m = sent_set.fill_costed(*sent, pages, t.saturating_sub(*link), &zero, costs);
        *sent = m.pos.max(*sent);
        *link += m.spent;
        sim.pages_sent += m.pages();
        sim.zero_sent += m.cheap;
    };
    // Pages below `sent` are on their way; `saved` holds those above it
    // already copied aside by a CoW fault.
    let mut saved = S::empty(pages);
    let mut sent = 0u64;
    let mut link = pause;
    let mut wall = pause;
    let mut stall = 0u64;
    while sent < pages {
        let (dt, s, _) = sim.replay.next_sample();
        let written = s.dirtied_pages();
        sim.replay.pages_replayed += written;
        let mut before = 0u64;
        let mut st = 0u64;
        for r in &s.dirtied {
            let at = wall.saturating_add(st).saturating_add(
                ((u128::from(dt) * u128::from(before)) / u128::from(written)) as u64,
            );
            before += r.pages;
            send(at, &mut link, &mut sent, &mut sim);
            if r.end() > sent {
                let start = r.start.max(sent);
                let nf = saved.insert_range(start, r.end() - start).new;
                sim.faults += nf;
                st = st.saturating_add(nf.saturating_mul(fault_cost));
            }
        }
        stall = stall.saturating_add(st);
        let wall_end = wall.saturating_add(dt).saturating_add(st);
        send(wall_end, &mut link, &mut sent, &mut sim);
        wall = wall_end;
        sim.record(if sent < pages { wall } else { link });
    }
    let total = link + sim.latency;
    Ok(sim.finish(
        "cow",
        true,
        "checkpoint complete".to_string(),
        total,
        pause,
        1,
        stall,
        true,
    ))
}
