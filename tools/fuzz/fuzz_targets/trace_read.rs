// SPDX-License-Identifier: GPL-2.0

//! Random bytes into the trace reader: no panic, no unbounded allocation,
//! and every trace it accepts writes back to bytes that parse the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use miglock_trace::Trace;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Trace::parse(data) else {
        return;
    };
    let mut out = Vec::new();
    t.write(&mut out).expect("an accepted trace writes back");
    let again = Trace::parse(&out).expect("a written trace parses");
    // Writing always ends the trace, so only `complete` may differ.
    assert_eq!(again.header, t.header);
    assert_eq!(again.samples, t.samples);
    assert!(again.complete);
});
