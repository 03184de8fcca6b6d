// SPDX-License-Identifier: GPL-2.0

//! Copy-on-write checkpointing: pause briefly, write-protect all memory,
//! resume, and send the snapshot in the background; a write to a page not
//! yet sent is served first, so the snapshot stays consistent and every
//! page crosses the link exactly once. Two ways of serving it:
//!
//! - [`CowStyle::Qemu`], QEMU's `background-snapshot` (what the project
//!   runs, and what `migsim validate` checks against real checkpoints):
//!   the writer blocks while its page goes onto the link ahead of the
//!   rest, and the background scan goes on *from that page*, coming round
//!   again from the start for the pages it skipped (QEMU's
//!   `get_queued_page`/`poll_fault_page` set the search position to the
//!   faulting page). A writer sweeping its memory is thus followed by the
//!   scan, and faults again only where it outruns the link.
//! - [`CowStyle::CopyAside`], the paper's (Blessy & Nicholas, Xen): the
//!   page is copied aside locally (a fault costs `fault_cost`), and the
//!   scan keeps its address order; every page a writer touches ahead of
//!   the scan is one fault.
//!
//! As in post-copy, an interval's writes are spread evenly over it in
//! address order and the scan (in address order) runs until each.

use crate::bitset::PageSet;
use crate::model::{secs_to_ps, SchemeResult, Sim, SimError};

/// How a write to a page not yet saved is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CowStyle {
    /// QEMU: the page goes onto the link first (the writer blocks until
    /// it is there, and at least `fault_cost`), and the scan goes on from
    /// it.
    #[default]
    Qemu,
    /// The paper's: copied aside locally in `fault_cost`; the scan keeps
    /// its address order.
    CopyAside,
}

/// CoW checkpoint parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct CowConfig {
    /// Pause to write-protect memory and save the CPU state, seconds.
    pub pause: f64,
    /// How long a write to a page not yet saved blocks, seconds. QEMU: at
    /// least this (and until the page is on the link), from the fault to
    /// the un-protect that wakes the writer; QEMU looks for faults only
    /// between two pages of its image, and writing one blocks while the
    /// link's buffer is full, so it is milliseconds where the page's own
    /// link time is a tenth of one. Copy-aside: the trap plus a local page
    /// copy.
    pub fault_cost: f64,
    /// How a fault is served.
    pub style: CowStyle,
}

impl Default for CowConfig {
    fn default() -> Self {
        CowConfig {
            pause: 1e-3,
            // QEMU's wait, measured on real checkpoints of the recorded
            // workloads (`make sim-report`): means of 0.4 to 3.7 ms, medians
            // of 0.01 to 0.03 ms (most faults are served at once; those that
            // arrive while QEMU writes into a full link wait long).
            fault_cost: 0.5e-3,
            style: CowStyle::Qemu,
        }
    }
}

/// Runs a CoW checkpoint: total time is until the last page has arrived.
pub fn cow<S: PageSet>(sim: Sim<'_>, zero: S, cfg: &CowConfig) -> Result<SchemeResult, SimError> {
    let pause = secs_to_ps(cfg.pause, "CoW pause")?;
    let fault_cost = secs_to_ps(cfg.fault_cost, "CoW fault cost")?;
    match cfg.style {
        CowStyle::Qemu => write_through(sim, zero, pause, fault_cost),
        CowStyle::CopyAside => copy_aside(sim, zero, pause, fault_cost),
    }
}

/// The background scan of QEMU's snapshot: from `cursor` up, then round
/// again from the start for the pages a jump skipped.
struct Scan<S> {
    /// Pages in the image (sent by the scan, or first on a fault).
    done: S,
    cursor: u64,
    left: u64,
    /// When the link is free.
    link: u64,
}

impl<S: PageSet> Scan<S> {
    /// Sends what the link has time for until `t`.
    fn run(&mut self, t: u64, zero: &S, sim: &mut Sim<'_>) {
        let costs = sim.costs();
        while self.left > 0 && t > self.link {
            let m = self
                .done
                .fill_costed(self.cursor, sim.pages, t - self.link, zero, costs);
            self.link += m.spent;
            self.left -= m.pages();
            sim.pages_sent += m.pages();
            sim.zero_sent += m.cheap;
            self.cursor = m.pos;
            if !m.done || (m.pages() == 0 && self.cursor == 0) {
                return;
            }
            // At the end with link time left: round again.
            self.cursor = 0;
        }
    }

    /// A write to page `q`, not in the image yet, just after the scan ran
    /// until then: the writer blocks (a fault) and `q` goes onto the link
    /// next, in place of the page the link has begun (the scan's leftover
    /// budget, less than a page, is that page under way); the scan goes on
    /// after `q`. (Whether QEMU read the fault and jumped, or its scan was
    /// saving `q` anyway and the un-protect woke the writer, the write
    /// blocked: a fault either way.)
    fn write(&mut self, q: u64, zero: &S, sim: &mut Sim<'_>) {
        sim.faults += 1;
        self.done.insert(q);
        self.left -= 1;
        let costs = sim.costs();
        let cost = if zero.contains(q) {
            sim.zero_sent += 1;
            costs.cheap
        } else {
            costs.normal
        };
        sim.pages_sent += 1;
        self.link = self.link.saturating_add(cost);
        self.cursor = q + 1;
    }
}

/// QEMU's background snapshot ([`CowStyle::Qemu`]).
fn write_through<S: PageSet>(
    mut sim: Sim<'_>,
    zero: S,
    pause: u64,
    fault_cost: u64,
) -> Result<SchemeResult, SimError> {
    let pages = sim.pages;
    let mut scan = Scan {
        done: S::empty(pages),
        cursor: 0,
        left: pages,
        link: pause,
    };
    let mut wall = pause;
    let mut stall = 0u64;
    while scan.left > 0 {
        let (dt, s, _) = sim.replay.next_sample();
        let written = s.dirtied_pages();
        sim.replay.pages_replayed += written;
        let mut before = 0u64;
        let mut st = 0u64;
        for r in &s.dirtied {
            // When the writer reaches page `q` of `r` (after the stalls so far).
            let at = |q: u64, st: u64| {
                wall.saturating_add(st).saturating_add(
                    ((u128::from(dt) * u128::from(before + q - r.start)) / u128::from(written))
                        as u64,
                )
            };
            let mut p = r.start;
            while let Some(q) = scan.done.next_absent(p, r.end()) {
                let t = at(q, st);
                scan.run(t, &zero, &mut sim);
                if !scan.done.contains(q) {
                    scan.write(q, &zero, &mut sim);
                    // The writer runs again once its page is on the link,
                    // and not before QEMU came round to it: the scan goes
                    // on meanwhile.
                    let resume = scan.link.max(t.saturating_add(fault_cost));
                    st = st.saturating_add(resume - t);
                }
                p = q + 1;
            }
            before += r.pages;
        }
        stall = stall.saturating_add(st);
        let wall_end = wall.saturating_add(dt).saturating_add(st);
        scan.run(wall_end, &zero, &mut sim);
        wall = wall_end;
        sim.record(if scan.left > 0 { wall } else { scan.link });
    }
    let total = scan.link + sim.latency;
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

/// The paper's copy-aside checkpoint ([`CowStyle::CopyAside`]).
fn copy_aside<S: PageSet>(
    mut sim: Sim<'_>,
    zero: S,
    pause: u64,
    fault_cost: u64,
) -> Result<SchemeResult, SimError> {
    let pages = sim.pages;
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
