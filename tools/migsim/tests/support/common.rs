// SPDX-License-Identifier: GPL-2.0

//! Tiny hand-made traces for the tests.

#![allow(dead_code)]

use miglock_trace::{Header, Range, Sample, Trace};
use migsim::model::{Link, Wire};
use migsim::Config;

/// Page size of every test trace.
pub const PAGE: u64 = 4096;

/// One sample: (accessed, dirtied), each a list of (start, pages).
pub type Touches = (Vec<(u64, u64)>, Vec<(u64, u64)>);

/// A trace of `pages` frames with one sample per `interval_ms`, each
/// sample (accessed, dirtied) as (start, pages) lists.
pub fn trace(pages: u64, interval_ms: u64, samples: Vec<Touches>) -> Trace {
    let rs = |v: Vec<(u64, u64)>| {
        v.into_iter()
            .map(|(start, pages)| Range { start, pages })
            .collect()
    };
    let samples = samples
        .into_iter()
        .enumerate()
        .map(|(i, (a, d))| Sample {
            t_us: (i as u64 + 1) * interval_ms * 1000,
            accessed: rs(a),
            dirtied: rs(d),
        })
        .collect();
    Trace {
        header: Header {
            page_size: PAGE as u32,
            pfn_limit: pages,
            interval_us: interval_ms * 1000,
        },
        samples,
        complete: true,
    }
}

/// A config whose link sends one page per `page_ms` milliseconds exactly
/// (no per-page header, no zero pages), starting the migration at the
/// trace's start.
pub fn config(page_ms: f64, latency_ms: f64) -> Config {
    Config {
        link: Link {
            bandwidth: PAGE as f64 / (page_ms / 1e3),
            latency: latency_ms / 1e3,
        },
        wire: Wire {
            page_header: 0,
            zero_pages: 0,
        },
        start_at: Some(0.0),
        ..Default::default()
    }
}

/// Milliseconds to picoseconds.
pub fn ms(v: f64) -> u64 {
    (v * 1e9).round() as u64
}
