// SPDX-License-Identifier: GPL-2.0

//! Each scheme on tiny traces whose results are worked out by hand.

#[path = "support/common.rs"]
mod common;

use common::{config, ms, trace, PAGE};
use migsim::cow::CowStyle;
use migsim::postcopy::{PostcopyStyle, TouchOrder};
use migsim::{simulate, Hints, Scheme};

/// `cfg` with Hines et al.'s post-copy (a steady push, a fault costs a
/// round trip and the page): the hand-worked post-copy cases below.
fn hines(mut cfg: migsim::Config) -> migsim::Config {
    cfg.postcopy.style = PostcopyStyle::Hines;
    cfg
}

fn idle(pages: u64, samples: usize) -> miglock_trace::Trace {
    trace(pages, 100, vec![(vec![], vec![]); samples])
}

#[test]
fn idle_vm_precopy_sends_memory_once() {
    // 1000 pages at 1 ms each, 0.5 ms latency: one round of 1000 ms, an
    // empty stop-and-copy, downtime = latency.
    let t = idle(1000, 20);
    let mut cfg = config(1.0, 0.5);
    cfg.clark.min_rate = cfg.link.bandwidth;
    for scheme in [Scheme::PrecopyQemu, Scheme::PrecopyClark] {
        let r = simulate(&t, scheme, &cfg).unwrap();
        assert!(r.converged, "{scheme:?}");
        assert_eq!(r.rounds, 1, "{scheme:?}");
        assert_eq!(r.pages_sent, 1000, "{scheme:?}");
        assert_eq!(r.bytes_sent, 1000 * PAGE, "{scheme:?}");
        assert_eq!(r.total_ps, ms(1000.5), "{scheme:?}");
        assert_eq!(r.downtime_ps, ms(0.5), "{scheme:?}");
        assert_eq!(r.remote_faults + r.cow_faults, 0);
    }
}

#[test]
fn idle_vm_postcopy_and_cow() {
    let t = idle(1000, 20);
    let mut cfg = hines(config(1.0, 0.5));
    cfg.cow.pause = 0.002;
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!((r.pages_sent, r.remote_faults, r.stall_ps), (1000, 0, 0));
    // push starts at the switch, VM resumes after one latency
    assert_eq!(r.total_ps, ms(1000.5));
    assert_eq!(r.downtime_ps, ms(0.5));
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!((r.pages_sent, r.cow_faults), (1000, 0));
    assert_eq!(r.total_ps, ms(2.0 + 1000.0 + 0.5));
    assert_eq!(r.downtime_ps, ms(2.0));
}

#[test]
fn qemu_precopy_stops_when_rest_fits_downtime_limit() {
    // 1000 pages at 1 ms; every 100 ms sample dirties 20 pages [0, 20).
    // Round 1 (1000 ms) ends with those 20 dirty: 20 ms <= 300 ms.
    let t = trace(1000, 100, vec![(vec![(0, 20)], vec![(0, 20)]); 30]);
    let r = simulate(&t, Scheme::PrecopyQemu, &config(1.0, 0.0)).unwrap();
    assert!(r.converged);
    assert_eq!(r.rounds, 1);
    // The VM stops at 1000 ms, inside sample 11, whose 20 pages it adds
    // to the same 20: stop-and-copy of 20 pages.
    assert_eq!(r.pages_sent, 1020);
    assert_eq!(r.downtime_ps, ms(20.0));
    assert_eq!(r.total_ps, ms(1020.0));
}

#[test]
fn vm_dirtying_faster_than_link_does_not_converge_but_postcopy_completes() {
    // Every 100 ms the guest rewrites all 1000 pages; the link needs 1 s
    // for them.
    let t = trace(1000, 100, vec![(vec![(0, 1000)], vec![(0, 1000)]); 10]);
    let mut cfg = hines(config(1.0, 0.1));
    cfg.qemu.max_iterations = 5;
    let r = simulate(&t, Scheme::PrecopyQemu, &cfg).unwrap();
    assert!(!r.converged);
    assert_eq!(r.rounds, 5);
    assert_eq!(
        r.pages_sent, 6000,
        "five full rounds and a forced stop-and-copy"
    );
    assert!(r.status.contains("did not converge"));
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert!(r.converged);
    assert_eq!(r.pages_sent, 1000, "post-copy sends each page once");
    assert_eq!(r.remote_faults, 1000, "the first sample touches every page");
}

#[test]
fn clark_stops_when_a_round_does_not_shrink() {
    let t = trace(1000, 100, vec![(vec![(0, 1000)], vec![(0, 1000)]); 10]);
    let mut cfg = config(1.0, 0.0);
    cfg.clark.min_rate = cfg.link.bandwidth;
    let r = simulate(&t, Scheme::PrecopyClark, &cfg).unwrap();
    assert!(r.converged, "Clark always ends in a stop-and-copy");
    // Round 1 sends what was not re-dirtied before its turn: pages are
    // skipped once dirtied this round, and all are dirtied at 100 ms, so
    // only the first 100 go; the rest is the stop-and-copy.
    assert_eq!(r.rounds, 1);
    assert_eq!(r.pages_sent, 100 + 1000);
    assert_eq!(r.downtime_ps, ms(1000.0));
}

/// A scan: sample i touches pages [50 i, 50 i + 50) of 10000.
fn scan() -> miglock_trace::Trace {
    let s = (0..200).map(|i| (vec![(50 * i, 50)], vec![])).collect();
    trace(10_000, 100, s)
}

#[test]
fn prepaging_beats_address_order_on_a_scan() {
    // Start at 5 s (page 2500), 0.5 ms per page, no latency: the first
    // interval faults its 50 pages; the bubble around them then pushes
    // 100 pages forward per 100 ms, twice the scan's speed, so it never
    // faults again. Address order starts at page 0 and needs many
    // intervals to overtake the scan.
    let mut cfg = hines(config(0.5, 0.0));
    cfg.start_at = Some(5.0);
    let pre = simulate(&scan(), Scheme::PostcopyPrepaging, &cfg).unwrap();
    let plain = simulate(&scan(), Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(pre.remote_faults, 50);
    assert!(plain.remote_faults > 500, "{}", plain.remote_faults);
    assert_eq!(pre.pages_sent, 10_000);
    assert_eq!(plain.pages_sent, 10_000);
}

/// A stable hot set of 20 ranges of 10 pages high in memory, touched in
/// every sample.
fn hot() -> miglock_trace::Trace {
    let hot: Vec<(u64, u64)> = (0..20).map(|k| (5000 + 200 * k, 10)).collect();
    trace(10_000, 100, vec![(hot, vec![]); 40])
}

#[test]
fn lazy_with_good_hints_faults_less_than_postcopy() {
    // 0.25 ms per page (faster than the 2 pages/ms the guest touches), 1
    // ms latency: a fault costs 2.25 ms. The VM resumes at 1 ms; touches
    // are spread over the interval, range k at 5 k ms plus earlier stalls.
    // Post-copy pushes from page 0 and faults on all 200 hot pages. With
    // the hot set ranked first, the push has sent 4 pages of range 0 when
    // it is touched (6 faults, 13.5 ms stall); from then on it sends 20
    // pages per 5 ms against the guest's 10 and stays ahead.
    let mut cfg = hines(config(0.25, 1.0));
    cfg.start_at = Some(2.0);
    let plain = simulate(&hot(), Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(plain.remote_faults, 200);
    assert_eq!(plain.stall_ps, ms(450.0));
    for hints in [Hints::Oracle, Hints::History { window: 10 }] {
        cfg.hints = hints.clone();
        let lazy = simulate(&hot(), Scheme::Lazy, &cfg).unwrap();
        assert_eq!(lazy.remote_faults, 6, "{hints:?}");
        assert_eq!(lazy.stall_ps, ms(13.5), "{hints:?}");
    }
    // Without history (start at 0) the causal hints know nothing.
    cfg.start_at = Some(0.0);
    cfg.hints = Hints::History { window: 10 };
    let blind = simulate(&hot(), Scheme::Lazy, &cfg).unwrap();
    assert_eq!(blind.remote_faults, 200);
}

#[test]
fn copy_aside_cow_faults_are_distinct_pages_written_before_being_copied() {
    // 1000 pages at 1 ms, push in address order from t = 0 (no pause, free
    // faults so the clock is the trace's): at 0 ms [500,510) is ahead of
    // the push: 10 faults; at 100 ms [50,60) is already sent: 0; at 200 ms
    // [500,520): 10 new; at 300 ms everything: [300,1000) minus the 20
    // saved = 680. Total 700.
    let t = trace(
        1000,
        100,
        vec![
            (vec![(500, 10)], vec![(500, 10)]),
            (vec![(50, 10)], vec![(50, 10)]),
            (vec![(500, 20)], vec![(500, 20)]),
            (vec![(0, 1000)], vec![(0, 1000)]),
            (vec![], vec![]),
        ],
    );
    let mut cfg = config(1.0, 0.0);
    cfg.cow.style = CowStyle::CopyAside;
    cfg.cow.pause = 0.0;
    cfg.cow.fault_cost = 0.0;
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!(r.cow_faults, 700);
    assert_eq!(r.pages_sent, 1000);
    assert_eq!(r.total_ps, ms(1000.0));
    // With a cost per fault the count stays and the stall is count x cost.
    cfg.cow.fault_cost = 1e-6;
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!(r.cow_faults, 700);
    assert_eq!(r.stall_ps, 700 * ms(1e-3));
}

#[test]
fn qemu_cow_scan_goes_on_from_the_faulting_page() {
    // 1000 pages at 1 ms, no pause, a blocked write waits only for its
    // page. Sample 0 writes [500,510) at 0, 10, .., 90 ms: 500 faults and
    // goes first (0-1 ms), the writer resumes at 1 ms, and the scan goes on
    // from 501, ahead of the writer (10 pages by 11 ms, when it writes 501):
    // 1 fault, where copying aside in address order costs 10.
    let t = trace(
        1000,
        100,
        vec![(vec![(500, 10)], vec![(500, 10)]), (vec![], vec![])],
    );
    let mut cfg = config(1.0, 0.0);
    cfg.cow.pause = 0.0;
    cfg.cow.fault_cost = 0.0;
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!((r.cow_faults, r.pages_sent), (1, 1000));
    assert_eq!(r.total_ps, ms(1000.0));
    assert_eq!(r.stall_ps, ms(1.0));
    cfg.cow.style = CowStyle::CopyAside;
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!(r.cow_faults, 10);
}

#[test]
fn qemu_cow_comes_round_again_for_the_pages_a_jump_skipped() {
    // A write to 900 at 0 ms: it goes first, the scan goes on from 901 and
    // reaches the end at 100 ms, then starts again from 0. Sample 1's
    // write to 100 (at 101 ms, after the 1 ms stall) is ahead of it: a
    // fault, the scan jumps to 101; sample 2's write to 50 (at 202 ms) is
    // behind the scan but not saved: a fault. Every page crosses once and
    // the link never idles: 1000 ms.
    let t = trace(
        1000,
        100,
        vec![
            (vec![(900, 1)], vec![(900, 1)]),
            (vec![(100, 1)], vec![(100, 1)]),
            (vec![(50, 1)], vec![(50, 1)]),
            (vec![], vec![]),
        ],
    );
    let mut cfg = config(1.0, 0.0);
    cfg.cow.pause = 0.0;
    cfg.cow.fault_cost = 0.0;
    let r = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!((r.cow_faults, r.pages_sent), (3, 1000));
    assert_eq!(r.total_ps, ms(1000.0));
}

#[test]
fn qemu_cow_a_longer_wait_lets_the_scan_run_ahead_of_a_fast_writer() {
    // Sample 0 writes [500,700) at 0.5 ms a page, twice the link's pace.
    // A blocked write waiting only for its own page keeps the writer at
    // the scan's heels: every page faults and the writer runs at the
    // link's pace (stall 1 ms, then 0.5 ms a page). A longer wait (as
    // QEMU's, which serves faults between pages of its image) lets the
    // scan run ahead meanwhile: far fewer faults. The link never idles.
    let t = trace(
        1000,
        100,
        vec![(vec![(500, 200)], vec![(500, 200)]), (vec![], vec![])],
    );
    let mut cfg = config(1.0, 0.0);
    cfg.cow.pause = 0.0;
    cfg.cow.fault_cost = 0.0;
    let tight = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert_eq!(tight.cow_faults, 200);
    assert_eq!(tight.stall_ps, ms(1.0 + 199.0 * 0.5));
    assert_eq!(tight.total_ps, ms(1000.0));
    cfg.cow.fault_cost = 0.003;
    let slow = simulate(&t, Scheme::Cow, &cfg).unwrap();
    assert!(slow.cow_faults < 100, "{}", slow.cow_faults);
    assert_eq!(slow.total_ps, ms(1000.0));
}

#[test]
fn hybrid_postcopy_refetches_pages_dirtied_during_the_precopy_pass() {
    // 100 pages at 1 ms: the pass takes 100 ms = sample 1, which dirties
    // [0, 10); those 10 go again after the switch.
    let t = trace(100, 100, vec![(vec![(0, 10)], vec![(0, 10)]); 5]);
    let mut cfg = config(1.0, 0.0);
    cfg.postcopy.precopy_first = true;
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(r.rounds, 2);
    assert_eq!(r.pages_sent, 110);
}

#[test]
fn replay_loops_when_the_migration_outlasts_the_trace() {
    let t = idle(1000, 3);
    let r = simulate(&t, Scheme::PrecopyQemu, &config(1.0, 0.0)).unwrap();
    assert!(r.trace_loops >= 3, "{}", r.trace_loops);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let t = idle(1000, 3);
    let mut cfg = config(1.0, 0.0);
    cfg.start_at = Some(10.0);
    let e = simulate(&t, Scheme::Postcopy, &cfg).unwrap_err();
    assert!(e.to_string().contains("--start-at"), "{e}");
    let empty = trace(1000, 100, vec![]);
    assert!(simulate(&empty, Scheme::Cow, &config(1.0, 0.0)).is_err());
    let mut slow = config(1.0, 0.0);
    slow.link.bandwidth = 0.0;
    assert!(simulate(&t, Scheme::PrecopyQemu, &slow).is_err());
    let mut nan = config(1.0, 0.0);
    nan.link.latency = f64::NAN;
    assert!(simulate(&t, Scheme::Postcopy, &nan).is_err());
    // A rate window too short for one page would never send the rest.
    let mut short = config(1.0, 0.0);
    short.postcopy.rate_window = 0.5e-3;
    let e = simulate(&t, Scheme::Postcopy, &short).unwrap_err();
    assert!(e.to_string().contains("rate window"), "{e}");
}

/// A config with QEMU's wire format (8-byte header, zero page 9 bytes)
/// whose link sends one normal page (4104 bytes) per millisecond exactly.
fn qemu_wire(zero_pages: u64, latency_ms: f64) -> migsim::Config {
    let mut cfg = config(1.0, latency_ms);
    cfg.link.bandwidth = 4104.0 * 1e3;
    cfg.wire.page_header = 8;
    cfg.wire.zero_pages = zero_pages;
    cfg
}

/// One zero page (9 bytes) at 4104 bytes/ms, in picoseconds.
const TPZ: u64 = 2_192_982; // 9e12 / 4.104e6 = 2192982.46, rounded

#[test]
fn zero_pages_cost_a_header_in_precopy_and_postcopy() {
    // Idle VM of 100 pages, 60 of them zero (frames 40..99): one round
    // sends 40 x (4096 + 8) + 60 x 9 bytes in 40 ms + 60 zero-page times.
    let t = idle(100, 20);
    let cfg = hines(qemu_wire(60, 0.5));
    for scheme in [
        Scheme::PrecopyQemu,
        Scheme::PrecopyClark,
        Scheme::Postcopy,
        Scheme::PostcopyPrepaging,
        Scheme::Lazy,
        Scheme::Cow,
    ] {
        let mut cfg = cfg.clone();
        cfg.clark.min_rate = cfg.link.bandwidth;
        let r = simulate(&t, scheme, &cfg).unwrap();
        assert_eq!(r.pages_sent, 100, "{scheme:?}");
        assert_eq!(r.zero_pages_sent, 60, "{scheme:?}");
        assert_eq!(r.bytes_sent, 40 * 4104 + 60 * 9, "{scheme:?}");
        let pause = if scheme == Scheme::Cow { ms(1.0) } else { 0 };
        assert_eq!(
            r.total_ps,
            pause + ms(40.0) + 60 * TPZ + ms(0.5),
            "{scheme:?}"
        );
    }
    // without zero pages every page carries its header
    let r = simulate(&t, Scheme::PrecopyQemu, &qemu_wire(0, 0.5)).unwrap();
    assert_eq!(r.bytes_sent, 100 * 4104);
    assert_eq!(r.total_ps, ms(100.5));
}

#[test]
fn zero_pages_are_the_highest_untouched_frames() {
    // 100 frames; the trace reads 0..9 and writes 90..94: 85 untouched,
    // the highest 30 of them are 95..99 and 65..89.
    let t = trace(100, 100, vec![(vec![(0, 10)], vec![(90, 5)]); 30]);
    let z: migsim::bitset::Bitset = migsim::zero_frames(&t, 30);
    let r: Vec<_> = z.ranges().iter().map(|r| (r.start, r.pages)).collect();
    assert_eq!(r, [(65, 25), (95, 5)]);
    let z: migsim::bitset::Bitset = migsim::zero_frames(&t, 1000);
    let r: Vec<_> = z.ranges().iter().map(|r| (r.start, r.pages)).collect();
    assert_eq!(r, [(10, 80), (95, 5)], "at most the 85 untouched");
    // QEMU pre-copy with 30 zero pages: round 1 sends 70 normal and 30
    // zero pages; 90..94 stay dirty (5 ms <= 300 ms): stop-and-copy of 5.
    let r = simulate(&t, Scheme::PrecopyQemu, &qemu_wire(30, 0.0)).unwrap();
    assert!(r.converged);
    assert_eq!(r.rounds, 1);
    assert_eq!((r.pages_sent, r.zero_pages_sent), (105, 30));
    assert_eq!(r.bytes_sent, 75 * 4104 + 30 * 9);
    assert_eq!(r.downtime_ps, ms(5.0));
    assert_eq!(r.total_ps, ms(75.0) + 30 * TPZ);
}

#[test]
fn qemu_postcopy_sends_the_caps_share_per_window() {
    // 1000 pages at 1 ms, windows of 100 ms: 100 pages at the start of
    // each, the last window starts at 900 ms; the pages are there a
    // latency later.
    let t = idle(1000, 20);
    let cfg = config(1.0, 0.5);
    assert_eq!(cfg.postcopy.style, PostcopyStyle::Qemu);
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!((r.pages_sent, r.remote_faults, r.stall_ps), (1000, 0, 0));
    assert_eq!(r.total_ps, ms(900.5));
    assert_eq!(r.downtime_ps, ms(0.5));
    // Zero pages are cheap in a window's share too: 40 normal pages and
    // 60 zero pages fit the first window (40 ms and 60 x 2.2 us).
    let t = idle(100, 20);
    let r = simulate(&t, Scheme::Postcopy, &qemu_wire(60, 0.5)).unwrap();
    assert_eq!((r.pages_sent, r.zero_pages_sent), (100, 60));
    assert_eq!(r.total_ps, ms(0.5));
}

#[test]
fn qemu_postcopy_serves_a_request_first_in_the_next_window_and_sweeps_on_from_it() {
    // 1000 pages at 1 ms (100 a window), no latency. The one-second
    // interval touches page 500 at 0 ms (the first window sent 0..99):
    // a fault, served first in the window at 100 ms, the vCPU blocked
    // until then; that window goes on with 501..599. The touch of 550 at
    // 600 ms (half the interval, plus the stall) finds it. The sweep goes
    // on: 600..999 by 500 ms, then round from the start for 100..499 (600
    // to 900 ms).
    let t = trace(1000, 1000, vec![(vec![(500, 1), (550, 1)], vec![]); 3]);
    let mut cfg = config(1.0, 0.0);
    cfg.postcopy.touch_order = TouchOrder::Address;
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(r.remote_faults, 1);
    assert_eq!(r.stall_ps, ms(100.0));
    assert_eq!(r.pages_sent, 1000);
    assert_eq!(r.total_ps, ms(900.0));
    // Hines et al.: the fault costs the page (1 ms), and the push keeps
    // its address order, which reaches 550 at 550 ms, before the touch
    // at 501 ms: two faults.
    let r = simulate(&t, Scheme::Postcopy, &hines(cfg.clone())).unwrap();
    assert_eq!(r.remote_faults, 2);
    assert_eq!(r.stall_ps, ms(2.0));
}

#[test]
fn qemu_postcopy_request_waits_for_its_latency_and_a_page_sent_meanwhile_still_counts() {
    // 1000 pages at 1 ms, 150 ms latency: the VM resumes at 150 ms (the
    // windows at 0 and 100 ms sent 0..199), touches 150 (here) and 950 at
    // 150 ms: the request reaches the source at 300 ms, first in that
    // window, and is here at 450 ms: 300 ms of stall.
    let t = trace(1000, 1000, vec![(vec![(950, 1)], vec![]); 3]);
    let cfg = config(1.0, 150.0);
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(r.remote_faults, 1);
    assert_eq!(r.stall_ps, ms(300.0));
    // A touch of 250 at 150 ms: missing, but the window at 200 ms sends
    // it before the request gets there (300 ms). QEMU counts the request
    // anyway; the vCPU waits until 350 ms.
    let t = trace(1000, 1000, vec![(vec![(250, 1)], vec![]); 3]);
    let r = simulate(&t, Scheme::Postcopy, &cfg).unwrap();
    assert_eq!(r.remote_faults, 1);
    assert_eq!(r.stall_ps, ms(200.0));
    assert_eq!(r.pages_sent, 1000);
}
