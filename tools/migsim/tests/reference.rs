// SPDX-License-Identifier: GPL-2.0

//! The fast bitset against the naive one-bool-per-page reference: same
//! operations, same answers; and every scheme on random small traces gives
//! identical results with either.

#[path = "support/common.rs"]
mod common;

use migsim::bitset::{Bitset, Costs, PageSet};
use migsim::model::Link;
use migsim::reference::NaiveSet;
use migsim::{simulate_with, Config, Hints, Scheme};

fn random_ranges(rng: &mut fastrand::Rng, pages: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < pages && out.len() < 8 {
        let start = p + rng.u64(0..pages / 4 + 1);
        if start >= pages {
            break;
        }
        let max = if rng.bool() { 3 } else { 150 };
        let len = rng.u64(1..=(pages - start).min(max));
        out.push((start, len));
        p = start + len + 1;
    }
    out
}

#[test]
fn bitset_ops_match_naive() {
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let len = rng.u64(1..400);
        let (mut a, mut b) = (Bitset::empty(len), NaiveSet::empty(len));
        let (mut ka, mut kb) = (Bitset::empty(len), NaiveSet::empty(len));
        let (mut za, mut zb) = (Bitset::empty(len), NaiveSet::empty(len));
        for _ in 0..rng.u64(0..8) {
            let (x, y) = (rng.u64(0..len), rng.u64(0..90));
            assert_eq!(za.insert_range(x, y), zb.insert_range(x, y));
        }
        let normal = rng.u64(1..50);
        let c = Costs {
            normal,
            cheap: rng.u64(1..=normal),
        };
        for _ in 0..60 {
            let x = rng.u64(0..len + 5);
            let y = rng.u64(0..len + 70);
            let n = rng.u64(0..100);
            let budget = rng.u64(0..3000);
            match rng.u8(0..11) {
                8 => assert_eq!(
                    a.take_costed(x, budget, None, &za, c),
                    b.take_costed(x, budget, None, &zb, c),
                    "seed {seed}"
                ),
                9 => assert_eq!(
                    a.take_costed(x, budget, Some(&ka), &za, c),
                    b.take_costed(x, budget, Some(&kb), &zb, c),
                    "seed {seed}"
                ),
                10 => assert_eq!(
                    a.fill_costed(x, y, budget, &za, c),
                    b.fill_costed(x, y, budget, &zb, c),
                    "seed {seed}"
                ),
                0 => assert_eq!(a.insert_range(x, y), b.insert_range(x, y)),
                1 => assert_eq!(a.take(x, n, None), b.take(x, n, None)),
                2 => assert_eq!(a.take(x, n, Some(&ka)), b.take(x, n, Some(&kb))),
                3 => assert_eq!(a.fill(x, y, n), b.fill(x, y, n)),
                4 => assert_eq!(a.next_absent(x, y), b.next_absent(x, y)),
                5 => assert_eq!(a.prev_absent(x, y), b.prev_absent(x, y)),
                6 => assert_eq!(ka.insert_range(x, y % 20), kb.insert_range(x, y % 20)),
                _ => {
                    a.invert();
                    b.invert();
                }
            }
            assert_eq!(a.count(), b.count(), "seed {seed}");
            let p = rng.u64(0..len + 2);
            assert_eq!(a.contains(p), b.contains(p), "seed {seed}");
        }
    }
}

#[test]
fn every_scheme_matches_the_naive_reference() {
    for seed in 0..120 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let pages = rng.u64(1..600);
        let n = rng.usize(1..25);
        let samples = (0..n)
            .map(|_| {
                let acc = random_ranges(&mut rng, pages);
                let dirty = if rng.bool() {
                    let keep: Vec<bool> = acc.iter().map(|_| rng.bool()).collect();
                    acc.iter().zip(keep).filter(|x| x.1).map(|x| *x.0).collect()
                } else {
                    random_ranges(&mut rng, pages)
                };
                (acc, dirty)
            })
            .collect();
        let t = common::trace(pages, rng.u64(1..200), samples);
        let mut cfg = Config {
            link: Link {
                bandwidth: rng.f64() * 4e7 + 1e5,
                latency: rng.f64() * 2e-3,
            },
            start_at: Some(rng.f64() * t.samples.last().unwrap().t_us as f64 / 1e6 * 0.9),
            hints: match rng.u8(0..3) {
                0 => Hints::Oracle,
                1 => Hints::History {
                    window: rng.usize(1..10),
                },
                _ => Hints::List(vec![miglock_trace::Range {
                    start: rng.u64(0..pages),
                    pages: rng.u64(1..50),
                }]),
            },
            ..Default::default()
        };
        cfg.wire.page_header = rng.u32(0..64);
        cfg.wire.zero_pages = if rng.bool() {
            rng.u64(0..pages + 10)
        } else {
            0
        };
        cfg.clark.min_rate = cfg.link.bandwidth * rng.f64();
        cfg.clark.wws_threshold = rng.u64(0..100) * 4096;
        cfg.qemu.downtime_limit = rng.f64() * 0.05;
        cfg.qemu.max_iterations = rng.u32(1..10);
        cfg.postcopy.precopy_first = rng.bool();
        cfg.postcopy.window = rng.u64(0..40);
        cfg.postcopy.max_pivots = rng.usize(1..5);
        cfg.postcopy.style = if rng.bool() {
            migsim::postcopy::PostcopyStyle::Qemu
        } else {
            migsim::postcopy::PostcopyStyle::Hines
        };
        cfg.postcopy.touch_order = if rng.bool() {
            migsim::postcopy::TouchOrder::Shuffled
        } else {
            migsim::postcopy::TouchOrder::Address
        };
        // At least one page's time (with the largest header) per window.
        let page_s = (4096.0 + 64.0) / cfg.link.bandwidth;
        cfg.postcopy.rate_window = page_s * (1.0 + rng.f64() * 20.0);
        cfg.cow.pause = rng.f64() * 1e-3;
        cfg.cow.fault_cost = rng.f64() * 1e-4;
        cfg.cow.style = if rng.bool() {
            migsim::cow::CowStyle::Qemu
        } else {
            migsim::cow::CowStyle::CopyAside
        };
        for s in Scheme::ALL {
            let fast = simulate_with::<Bitset>(&t, s, &cfg).unwrap();
            let naive = simulate_with::<NaiveSet>(&t, s, &cfg).unwrap();
            assert_eq!(fast, naive, "seed {seed} scheme {s:?}");
            assert!(fast.zero_pages_sent <= fast.pages_sent);
            if cfg.wire.zero_pages == 0 {
                assert_eq!(fast.zero_pages_sent, 0);
            }
            assert!(
                fast.pages_sent >= pages,
                "seed {seed} {s:?}: every page crosses"
            );
            if matches!(
                s,
                Scheme::Postcopy | Scheme::PostcopyPrepaging | Scheme::Lazy
            ) && !cfg.postcopy.precopy_first
            {
                assert_eq!(fast.pages_sent, pages, "post-copy sends each page once");
            }
        }
    }
}
