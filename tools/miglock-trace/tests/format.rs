// SPDX-License-Identifier: GPL-2.0

//! The trace format: golden bytes, round trips, and hostile input.

use miglock_trace::{ranges_from_pfns, Header, Range, Sample, Trace, TraceError, Writer};

const H: Header = Header {
    page_size: 4096,
    pfn_limit: 1000,
    interval_us: 1_000_000,
};

fn r(start: u64, pages: u64) -> Range {
    Range { start, pages }
}

/// The documented encoding, byte for byte: changing it breaks old traces.
#[test]
fn golden_bytes() {
    let mut w = Writer::new(Vec::new(), H).unwrap();
    w.write(&Sample {
        t_us: 300,
        accessed: vec![r(2, 3), r(200, 1)],
        dirtied: vec![r(3, 1)],
    })
    .unwrap();
    let b = w.finish().unwrap();
    let mut want = b"MLTRACE1".to_vec();
    want.extend(1u32.to_le_bytes());
    want.extend(4096u32.to_le_bytes());
    want.extend(1000u64.to_le_bytes());
    want.extend(1_000_000u64.to_le_bytes());
    // 'S', dt 300 = 0xac 0x02, 2 ranges: gap 2 len-1 2; gap 195 (0xc3 0x01) len-1 0;
    // 1 range: gap 3, len-1 0; then 'E' 1.
    want.extend([b'S', 0xac, 0x02, 2, 2, 2, 0xc3, 0x01, 0, 1, 3, 0, b'E', 1]);
    assert_eq!(b, want);
}

fn random_trace(seed: u64) -> Trace {
    let mut rng = fastrand::Rng::with_seed(seed);
    let header = Header {
        page_size: 4096,
        pfn_limit: rng.u64(1..100_000),
        interval_us: rng.u64(1..10_000_000),
    };
    let mut t = 0;
    let samples = (0..rng.usize(0..20))
        .map(|_| {
            t += rng.u64(0..5_000_000);
            let set = |rng: &mut fastrand::Rng, n: usize| {
                let mut pfns: Vec<u64> = (0..n).map(|_| rng.u64(0..header.pfn_limit)).collect();
                pfns.sort_unstable();
                pfns.dedup();
                ranges_from_pfns(pfns)
            };
            let (a, d) = (rng.usize(0..500), rng.usize(0..100));
            Sample {
                t_us: t,
                accessed: set(&mut rng, a),
                dirtied: set(&mut rng, d),
            }
        })
        .collect();
    Trace {
        header,
        samples,
        complete: true,
    }
}

#[test]
fn round_trips() {
    for seed in 0..200 {
        let t = random_trace(seed);
        let mut b = Vec::new();
        t.write(&mut b).unwrap();
        assert_eq!(Trace::parse(&b).unwrap(), t, "seed {seed}");
    }
}

#[test]
fn a_cut_trace_reads_as_incomplete_or_errors_never_panics() {
    let t = random_trace(7);
    let mut b = Vec::new();
    t.write(&mut b).unwrap();
    for cut in 0..b.len() {
        match Trace::parse(&b[..cut]) {
            Ok(p) => {
                assert!(!p.complete);
                assert!(p.samples.len() <= t.samples.len());
                assert_eq!(p.samples[..], t.samples[..p.samples.len()]);
            }
            Err(e) => assert!(
                matches!(e, TraceError::BadMagic | TraceError::Corrupt { .. }),
                "{e}"
            ),
        }
    }
}

#[test]
fn rejects_what_is_not_a_trace() {
    assert!(matches!(Trace::parse(b"hello"), Err(TraceError::BadMagic)));
    let mut b = Vec::new();
    random_trace(1).write(&mut b).unwrap();
    let mut v = b.clone();
    v[8] = 9;
    assert!(matches!(Trace::parse(&v), Err(TraceError::Version(9))));
    let mut v = b.clone();
    v[12..16].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(Trace::parse(&v), Err(TraceError::BadHeader(_))));
    let mut v = b;
    v.extend(b"junk");
    assert!(Trace::parse(&v).is_err());
}

#[test]
fn ranges_beyond_the_limit_are_corrupt() {
    let mut b = Vec::new();
    Writer::new(&mut b, H).unwrap().finish().unwrap();
    b.truncate(32);
    // One accessed range at 999 of 2 pages: past pfn_limit 1000.
    b.extend([b'S', 0, 1, 0xe7, 0x07, 1, 0]);
    let e = Trace::parse(&b).unwrap_err();
    assert!(e.to_string().contains("beyond pfn_limit"), "{e}");
    assert!(e.to_string().contains("byte 35"), "{e}");
}

#[test]
fn the_writer_refuses_bad_samples() {
    let mut w = Writer::new(Vec::new(), H).unwrap();
    let bad = [
        vec![r(5, 2), r(6, 1)],
        vec![r(5, 0)],
        vec![r(999, 2)],
        vec![r(10, 1), r(2, 1)],
    ];
    for a in bad {
        let s = Sample {
            t_us: 0,
            accessed: a.clone(),
            dirtied: vec![],
        };
        assert!(w.write(&s).is_err(), "{a:?}");
    }
    w.write(&Sample {
        t_us: 10,
        ..Sample::default()
    })
    .unwrap();
    assert!(w.write(&Sample::default()).is_err(), "time went backwards");
    assert!(Writer::new(Vec::new(), Header { page_size: 3, ..H }).is_err());
}
