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
//! push runs until each range is touched. One vCPU: a touch of a missing
//! page blocks it until the page is here, so the interval lasts its traced
//! length plus those stalls. How long a fault blocks and where the push
//! goes after it is the [`PostcopyStyle`]:
//!
//! - [`PostcopyStyle::Qemu`] (the default), QEMU's post-copy as it runs
//!   with a bandwidth cap (`max-postcopy-bandwidth`; QEMU 10.0's
//!   `migration/ram.c`, `migration.c`, `savevm.c`). The cap is kept per
//!   window of 100 ms (`BUFFER_DELAY`): at the start of a window the
//!   migration thread sends that window's share as fast as it can (here:
//!   at once) and then sleeps. The destination asks for a page when a
//!   vCPU faults on it, once (`migrate_send_rp_req_pages`: not for a page
//!   received); a request wakes the migration thread, but
//!   `qemu_savevm_state_iterate` sends nothing while the window's share is
//!   spent, so the page goes first in the *next* window
//!   (`get_queued_page`), and the background sweep, in guest-physical
//!   order, goes on from the page after it (`pss->page` is set to the
//!   requested page "since the guest is likely to want other pages near
//!   to the page it just requested"), coming round from the start for the
//!   pages it skipped. A fault thus blocks for the rest of the window plus
//!   a round trip: tens of milliseconds, not a page's transfer time.
//! - [`PostcopyStyle::Hines`]: the paper's, a fault costs a round trip
//!   plus the page's transfer time, the push keeps the link busy in a
//!   steady stream and keeps its own order.

use crate::bitset::{Costs, Moved, PageSet};
use crate::model::{secs_to_ps, SchemeResult, Sim, SimError};
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
    /// How faults are served and the push paced.
    pub style: PostcopyStyle,
    /// [`PostcopyStyle::Qemu`]: the rate limiter's window, seconds (the
    /// bandwidth's share of one goes out at its start).
    pub rate_window: f64,
    /// [`PostcopyStyle::Qemu`]: the order of an interval's touches.
    pub touch_order: TouchOrder,
}

/// In which order the simulated vCPU makes an interval's touches (the
/// trace records only which pages an interval touched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TouchOrder {
    /// A fixed pseudo-random order of the interval's pages: neither helps
    /// nor hinders a sweep that goes on after each fault.
    #[default]
    Shuffled,
    /// Address order, range by range: a workload that walks guest-physical
    /// memory upwards, which QEMU's sweep (on after each requested page)
    /// serves best.
    Address,
}

impl Default for PostcopyConfig {
    fn default() -> Self {
        PostcopyConfig {
            precopy_first: false,
            window: 4096,
            max_pivots: 64,
            style: PostcopyStyle::Qemu,
            // QEMU's BUFFER_DELAY.
            rate_window: 0.1,
            touch_order: TouchOrder::Shuffled,
        }
    }
}

/// How a remote fault is served (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PostcopyStyle {
    /// QEMU: the link's share per rate window goes out at the window's
    /// start; a requested page goes first in the next window and the sweep
    /// goes on from it.
    #[default]
    Qemu,
    /// Hines et al.: a steady stream; a fault costs a round trip plus the
    /// page, and the push keeps its order.
    Hines,
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
    /// QEMU's sweep: it goes on after each requested page and comes round
    /// from the start for the pages it skipped.
    wrap: bool,
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
            if self.wrap && m.done && budget - done.spent >= c.normal {
                let m = recv.fill_costed(0, self.pages, budget - done.spent, zero, c);
                self.cursor = m.pos;
                add(&mut done, &m);
            }
        }
        done
    }

    /// QEMU's sweep after a requested page `q`: on from the next one.
    fn requested(&mut self, q: u64) {
        if self.wrap {
            self.cursor = q + 1;
        }
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
    let (sim, recv, zero, switch, rounds) = if cfg.precopy_first {
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
    let prepaging = push == Push::Prepaging;
    let pusher = Pusher {
        push,
        pages,
        cursor: 0,
        wrap: cfg.style == PostcopyStyle::Qemu,
        window: cfg.window,
        max_pivots: cfg.max_pivots.max(1),
        pivots: VecDeque::new(),
        rank_idx: 0,
        rank_pos: 0,
    };
    let status = if cfg.precopy_first {
        "completed (switched after one pre-copy pass)".to_string()
    } else {
        "completed".to_string()
    };
    let run = Run {
        name,
        status,
        switch,
        rounds,
        prepaging,
        order: cfg.touch_order,
    };
    match cfg.style {
        PostcopyStyle::Hines => Ok(hines(sim, recv, zero, pusher, run)),
        PostcopyStyle::Qemu => {
            let window = secs_to_ps(cfg.rate_window, "post-copy rate window")?;
            // A window's share must hold a page, or the sweep never moves.
            if window < sim.tpp {
                return Err(SimError::Param(format!(
                    "post-copy rate window {} s is shorter than one page at the link rate",
                    cfg.rate_window
                )));
            }
            Ok(qemu(sim, recv, zero, pusher, run, window))
        }
    }
}

/// What both styles carry from the setup.
struct Run<'n> {
    name: &'n str,
    status: String,
    /// When the VM stopped at the source.
    switch: u64,
    rounds: u32,
    prepaging: bool,
    order: TouchOrder,
}

/// Hines et al.'s post-copy: a steady push, a fault costs a round trip and
/// the page.
fn hines<S: PageSet>(
    mut sim: Sim<'_>,
    mut recv: S,
    zero: S,
    mut pusher: Pusher,
    run: Run<'_>,
) -> SchemeResult {
    let pages = sim.pages;
    let (switch, prepaging) = (run.switch, run.prepaging);
    let (lat, tpp, costs) = (sim.latency, sim.tpp, sim.costs());
    let fault_cost = 2 * lat + tpp;
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
    sim.finish(
        run.name, true, run.status, total, downtime, run.rounds, stall, false,
    )
}

/// QEMU's post-copy with a bandwidth cap (module documentation): windows
/// of `window` picoseconds from the switch; the link's share of a window
/// (`window` of link time) goes out at its start, a request first.
fn qemu<S: PageSet>(
    mut sim: Sim<'_>,
    mut recv: S,
    zero: S,
    mut pusher: Pusher,
    run: Run<'_>,
    window: u64,
) -> SchemeResult {
    let pages = sim.pages;
    let (lat, costs) = (sim.latency, sim.costs());
    let mut w = Windows {
        next: run.switch,
        window,
        last_sent: run.switch,
        received: recv.count(),
    };
    let mut wall = run.switch + lat;
    let mut stall = 0u64;
    // The missing pages an interval touches, each with its place among
    // the interval's touches.
    let mut missing: Vec<(u64, u64)> = Vec::new();
    while w.received < pages {
        let (dt, s, idx) = sim.replay.next_sample();
        let touched = s.accessed_pages();
        sim.replay.pages_replayed += touched + s.dirtied_pages();
        let mut st = 0u64;
        // Only pages missing now can fault (pages never leave); the vCPU
        // reaches the one at place `k` of `touched` at k / touched of the
        // interval (plus the stalls so far).
        missing.clear();
        let mut before = 0u64;
        for r in &s.accessed {
            let mut p = r.start;
            while let Some(q) = recv.next_absent(p, r.end()) {
                let k = match run.order {
                    TouchOrder::Address => before + q - r.start,
                    TouchOrder::Shuffled => mix(q, idx as u64) % touched,
                };
                missing.push((k, q));
                p = q + 1;
            }
            before += r.pages;
        }
        if run.order == TouchOrder::Shuffled {
            missing.sort_unstable();
        }
        for &(k, q) in &missing {
            let t = wall
                .saturating_add(st)
                .saturating_add(((u128::from(dt) * u128::from(k)) / u128::from(touched)) as u64);
            w.until(t, &mut sim, &mut recv, &zero, &mut pusher, costs);
            if !recv.contains(q) {
                let back = w.fault(q, t, lat, &mut sim, &mut recv, &zero, &mut pusher, costs);
                if run.prepaging {
                    pusher.add_pivots(&[(q, q)]);
                }
                st = st.saturating_add(back - t);
            }
        }
        // Writes need the page too; any not yet here fault at the end.
        for r in &s.dirtied {
            let mut p = r.start;
            while let Some(q) = recv.next_absent(p, r.end()) {
                let t = wall.saturating_add(dt).saturating_add(st);
                w.until(t, &mut sim, &mut recv, &zero, &mut pusher, costs);
                if !recv.contains(q) {
                    let back = w.fault(q, t, lat, &mut sim, &mut recv, &zero, &mut pusher, costs);
                    st = st.saturating_add(back - t);
                }
                p = q + 1;
            }
        }
        stall = stall.saturating_add(st);
        let wall_end = wall.saturating_add(dt).saturating_add(st);
        w.until(wall_end, &mut sim, &mut recv, &zero, &mut pusher, costs);
        wall = wall_end;
        sim.record(if w.received < pages {
            wall
        } else {
            w.last_sent
        });
    }
    let total = w.last_sent + lat;
    sim.finish(
        run.name, true, run.status, total, lat, run.rounds, stall, false,
    )
}

/// A fixed pseudo-random number for page `q` in interval `i`
/// (SplitMix64's finaliser).
fn mix(q: u64, i: u64) -> u64 {
    let mut z = q ^ i.rotate_left(40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// QEMU's rate-limit windows: the share of a window (`window` of link time
/// at the capped rate) goes into the stream at the window's start. (Out of
/// the source at once, as over a local socket; how fast the machine then
/// moves it is not modelled: the link is taken to be the cap.)
struct Windows {
    /// Start of the next window not yet sent.
    next: u64,
    window: u64,
    /// Start of the last window that sent something.
    last_sent: u64,
    /// Pages at the destination (or on their way).
    received: u64,
}

impl Windows {
    /// Sends the window starting at `self.next`: `req` first, then the
    /// push, within the window's share.
    fn send<S: PageSet>(
        &mut self,
        req: Option<u64>,
        sim: &mut Sim<'_>,
        recv: &mut S,
        zero: &S,
        pusher: &mut Pusher,
        costs: Costs,
    ) {
        let mut budget = self.window;
        if let Some(q) = req {
            if recv.insert(q) {
                let cost = if zero.contains(q) {
                    sim.zero_sent += 1;
                    costs.cheap
                } else {
                    costs.normal
                };
                budget = budget.saturating_sub(cost);
                sim.pages_sent += 1;
                self.received += 1;
            }
            pusher.requested(q);
        }
        if self.received < sim.pages {
            let m = pusher.push(recv, budget, zero, costs);
            sim.pages_sent += m.pages();
            sim.zero_sent += m.cheap;
            self.received += m.pages();
        }
        self.last_sent = self.next;
        self.next = self.next.saturating_add(self.window);
    }

    /// Sends every window that starts by `t`.
    fn until<S: PageSet>(
        &mut self,
        t: u64,
        sim: &mut Sim<'_>,
        recv: &mut S,
        zero: &S,
        pusher: &mut Pusher,
        costs: Costs,
    ) {
        while self.next <= t && self.received < sim.pages {
            self.send(None, sim, recv, zero, pusher, costs);
        }
    }

    /// The vCPU faults on missing page `q` at `t` (every window up to `t`
    /// sent): its request reaches the source a latency later and goes
    /// first in the next window that starts then or after (the current
    /// one's share is spent: it only has some left once everything was
    /// sent), and the sweep goes on after it. Returns when the page is
    /// here and the vCPU runs again.
    #[allow(clippy::too_many_arguments)]
    fn fault<S: PageSet>(
        &mut self,
        q: u64,
        t: u64,
        lat: u64,
        sim: &mut Sim<'_>,
        recv: &mut S,
        zero: &S,
        pusher: &mut Pusher,
        costs: Costs,
    ) -> u64 {
        sim.faults += 1;
        let asked = t.saturating_add(lat);
        // Windows that start before the request is there go without it.
        while self.next < asked && !recv.contains(q) {
            self.send(None, sim, recv, zero, pusher, costs);
        }
        if recv.contains(q) {
            // Sent meanwhile (the sweep got there first; QEMU still counts
            // the request): here a latency after its window.
            return (self.last_sent + lat).max(t);
        }
        self.send(Some(q), sim, recv, zero, pusher, costs);
        self.last_sent + lat
    }
}
