// SPDX-License-Identifier: GPL-2.0

//! Random bytes into the wire decoder, whole and as a stream: no panic, and
//! every frame it accepts re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use miglock_abi::wire::{decode, encode, encode_hints, Decoder, Event, Message, MAX_FRAME};

fn check_reencodes(frame: &[u8]) {
    let Ok((hdr, msg)) = decode(frame) else {
        return;
    };
    let mut out = [0u8; MAX_FRAME];
    let n = match msg {
        Message::Hints { batch, ranges } => {
            let v: Vec<_> = ranges.iter().collect();
            encode_hints(batch, &v, hdr, &mut out)
        }
        m => encode(&m, hdr, &mut out),
    }
    .expect("an accepted frame re-encodes");
    assert_eq!(&out[..n], frame, "decode/encode is not the identity");
}

fuzz_target!(|data: &[u8]| {
    check_reencodes(data);
    let mut d = Decoder::new();
    for &b in data {
        if d.push(b) == Event::Frame {
            check_reencodes(d.frame());
        }
    }
});
