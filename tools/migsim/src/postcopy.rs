// SPDX-License-Identifier: GPL-2.0

//! Post-copy: move the CPU state first, run at the destination, and fetch
//! memory by demand paging plus a background push (Hines et al., VEE'09).
//!
//! The push order is the only difference between plain post-copy (address
//! order), pre-paging (bubbles around each fault, Hines et al.) and
//! lazy-copy (the guest's predicted next accesses first, see `lazy.rs`).
//!
//! Model: a trace interval's touches are spread evenly over it, range by
//! range in address order (the trace does not record their order), and the
//! push runs until each range is touched. Each first touch of a missing
//! page blocks the vCPU for a round trip plus the page's transfer (faults
//! are serviced one at a time, as with a single vCPU), so the interval
//! lasts its traced length plus those stalls; the push keeps the link busy
//! meanwhile except for the faulted pages' own transfer time.

use crate::bitset::{Costs, Moved, PageSet};
use crate::model::{SchemeResult, Sim, SimError};
use crate::precopy::PreEngine;
use miglock_trace::Range;
use std::collections::VecDeque;

/// Post-copy parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PostcopyConfig {
    /// Do one full pre-copy pass at link rate before switching (hybrid
    /// migration); pages dirtied during it are fetched again.
    pub precopy_first: bool,
    /// Pre-paging bubble: pages pushed each way around a fault. It bounds
    /// the work per fault; a new fault takes priority anyway.
    pub window: u64,
    /// Pre-paging pivots remembered (newest first).
    pub max_pivots: usize,
}

impl Default for PostcopyConfig {
    fn default() -> Self {
        PostcopyConfig {
            precopy_first: false,
            window: 4096,
            max_pivots: 64,
        }
    }
}

/// The background push order.
#[derive(Clone, Debug, PartialEq)]
pub enum Push {
    /// Lowest frame first.
    Address,
    /// Around the most recent faults first (Hines' bubbling with multiple
    /// pivots), then address order.
    Prepaging,
    /// These ranges in this order, then address order.
    Ranked(Vec<Range>),
}

/// A pre-paging bubble growing both ways from a fault cluster.
struct Pivot {
    fwd: u64,
    fwd_end: u64,
    back: u64,
    back_start: u64,
    fwd_turn: bool,
}

struct Pusher {
    push: Push,
    pages: u64,
    cursor: u64,
    window: u64,
    max_pivots: usize,
    pivots: VecDeque<Pivot>,
    rank_idx: usize,
    rank_pos: u64,
}

impl Pusher {
    fn add_pivots(&mut self, clusters: &[(u64, u64)]) {
        for &(first, last) in clusters.iter().rev() {
            self.pivots.push_front(Pivot {
                fwd: last + 1,
                fwd_end: (last + 1).saturating_add(self.window).min(self.pages),
                back: first,
                back_start: first.saturating_sub(self.window),
                fwd_turn: true,
            });
        }
        self.pivots.truncate(self.max_pivots);
    }

    /// Pushes missing pages into `recv` while `budget` (link time) has at
    /// least one normal page's cost left; zero pages (in `zero`) are cheap.
    fn push<S: PageSet>(&mut self, recv: &mut S, budget: u64, zero: &S, c: Costs) -> Moved {
        let mut done = Moved {
            normal: 0,
            cheap: 0,
            spent: 0,
            pos: 0,
            done: false,
        };
        let add = |done: &mut Moved, m: &Moved| {
            done.normal += m.normal;
            done.cheap += m.cheap;
            done.spent += m.spent;
        };
        while budget - done.spent >= c.normal {
            let Some(pv) = self.pivots.front_mut() else {
                break;
            };
            let fwd_ok = pv.fwd < pv.fwd_end;
            let back_ok = pv.back > pv.back_start;
            if !fwd_ok && !back_ok {
                self.pivots.pop_front();
                continue;
            }
            let go_fwd = fwd_ok && (pv.fwd_turn || !back_ok);
            pv.fwd_turn = !go_fwd;
            let p = if go_fwd {
                let p = recv.next_absent(pv.fwd, pv.fwd_end);
                pv.fwd = p.map_or(pv.fwd_end, |p| p + 1);
                p
            } else {
                let p = recv.prev_absent(pv.back_start, pv.back);
                pv.back = p.unwrap_or(pv.back_start);
                p
            };
            if let Some(p) = p {
                recv.insert(p);
                if zero.contains(p) {
                    done.cheap += 1;
                    done.spent += c.cheap;
                } else {
                    done.normal += 1;
                    done.spent += c.normal;
                }
            }
        }
        if let Push::Ranked(ranges) = &self.push {
            while budget - done.spent >= c.normal && self.rank_idx < ranges.len() {
                let r = ranges[self.rank_idx];
                let m = recv.fill_costed(
                    r.start.max(self.rank_pos),
                    r.end(),
                    budget - done.spent,
                    zero,
                    c,
                );
                add(&mut done, &m);
                if m.done {
                    self.rank_idx += 1;
                    self.rank_pos = 0;
                } else {
                    self.rank_pos = m.pos;
                }
            }
        }
        if budget - done.spent >= c.normal {
            let m = recv.fill_costed(self.cursor, self.pages, budget - done.spent, zero, c);
            self.cursor = m.pos;
            add(&mut done, &m);
        }
        done
    }
}

/// Runs post-copy with the given push order.
pub fn postcopy<S: PageSet>(
    sim: Sim<'_>,
    zero: S,
    name: &str,
    cfg: &PostcopyConfig,
    push: Push,
) -> Result<SchemeResult, SimError> {
    let pages = sim.pages;
    let (mut sim, mut recv, zero, switch, rounds) = if cfg.precopy_first {
        let mut e = PreEngine::<S>::new(sim, zero);
        let mut all = S::full(pages);
        let c = e.sim.costs();
        e.send_round(&mut all, c, false);
        let mut stale = std::mem::replace(&mut e.dirty, S::empty(0));
        e.stop_into(&mut stale);
        stale.invert();
        let now = e.now;
        (e.sim, stale, e.zero, now, 2)
    } else {
        (sim, S::empty(pages), zero, 0, 1)
    };
    let (lat, tpp, costs) = (sim.latency, sim.tpp, sim.costs());
    let fault_cost = 2 * lat + tpp;
    let prepaging = push == Push::Prepaging;
    let mut pusher = Pusher {
        push,
        pages,
        cursor: 0,
        window: cfg.window,
        max_pivots: cfg.max_pivots.max(1),
        pivots: VecDeque::new(),
        rank_idx: 0,
        rank_pos: 0,
    };
    let mut received = recv.count();
    // The VM resumes once its CPU state has crossed the link.
    let downtime = lat;
    let mut link = switch;
    let mut wall = switch + lat;
    let mut stall = 0u64;
    // Pushes what the link can send by time `t`: (pages, zero pages).
    let push_until =
        |t: u64, link: &mut u64, recv: &mut S, pusher: &mut Pusher, received: &mut u64| {
            if *received >= pages {
                return (0, 0);
            }
            let m = pusher.push(recv, t.saturating_sub(*link), &zero, costs);
            *link += m.spent;
            *received += m.pages();
            (m.pages(), m.cheap)
        };
    while received < pages {
        let (dt, s, _) = sim.replay.next_sample();
        let touched = s.accessed_pages();
        sim.replay.pages_replayed += touched + s.dirtied_pages();
        let mut before = 0u64;
        let mut st = 0u64;
        // Touches spread evenly over the interval in address order (the
        // trace does not say when within it); the push races them.
        for r in &s.accessed {
            let at = wall.saturating_add(st).saturating_add(
                ((u128::from(dt) * u128::from(before)) / u128::from(touched)) as u64,
            );
            before += r.pages;
            let (k, z) = push_until(at, &mut link, &mut recv, &mut pusher, &mut received);
            sim.pages_sent += k;
            sim.zero_sent += z;
            let ins = recv.insert_range(r.start, r.pages);
            if ins.new > 0 {
                sim.faults += ins.new;
                sim.pages_sent += ins.new;
                received += ins.new;
                link = link.max(at) + ins.new * tpp;
                st = st.saturating_add(ins.new.saturating_mul(fault_cost));
                if prepaging {
                    pusher.add_pivots(&[(ins.first, ins.last)]);
                }
            }
        }
        let wall_end = wall.saturating_add(dt).saturating_add(st);
        // Writes need the page too; any not yet here fault at the end.
        for r in &s.dirtied {
            let ins = recv.insert_range(r.start, r.pages);
            if ins.new > 0 {
                sim.faults += ins.new;
                sim.pages_sent += ins.new;
                received += ins.new;
                link = link.max(wall_end) + ins.new * tpp;
                st = st.saturating_add(ins.new.saturating_mul(fault_cost));
            }
        }
        let wall_end = wall.saturating_add(dt).saturating_add(st);
        stall = stall.saturating_add(st);
        let (k, z) = push_until(wall_end, &mut link, &mut recv, &mut pusher, &mut received);
        sim.pages_sent += k;
        sim.zero_sent += z;
        wall = wall_end;
        sim.record(if received < pages { wall } else { link });
    }
    let total = link + lat;
    let status = if cfg.precopy_first {
        "completed (switched after one pre-copy pass)".to_string()
    } else {
        "completed".to_string()
    };
    Ok(sim.finish(name, true, status, total, downtime, rounds, stall, false))
}
