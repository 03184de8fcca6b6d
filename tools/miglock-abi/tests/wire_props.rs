// SPDX-License-Identifier: GPL-2.0

//! Property tests of the wire protocol: every message round-trips; random
//! bytes never decode to garbage or panic; the stream decoder recovers every
//! intact frame from a stream with noise between frames.

use miglock_abi::wire::*;
use proptest::prelude::*;

fn label() -> impl Strategy<Value = [u8; LABEL_LEN]> {
    proptest::array::uniform32(any::<u8>())
}

fn short_label() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..LABEL_LEN)
}

fn notice() -> impl Strategy<Value = Notice> {
    prop_oneof![
        any::<u32>().prop_map(|d| Notice::MigrationPending { deadline_ms: d }),
        any::<u32>().prop_map(|r| Notice::ForcedRelease { reason: r }),
        any::<u32>().prop_map(|m| Notice::PolicyChange { max_lease_ms: m }),
        Just(Notice::PostcopyStarted),
        Just(Notice::MigrationCancelled),
        Just(Notice::Migrated),
        Just(Notice::CheckpointStarted),
        any::<bool>().prop_map(|saved| Notice::CheckpointDone { saved }),
        Just(Notice::Restored),
    ]
}

/// Every message except hints (which borrow; tested separately).
fn message() -> impl Strategy<Value = Message<'static>> {
    prop_oneof![
        (any::<u64>(), any::<u32>()).prop_map(|(b, f)| Message::Hello {
            boot_id: b,
            features: f
        }),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(e, f, m)| Message::Welcome {
            epoch: e,
            features: f,
            max_lease_ms: m
        }),
        (any::<u32>(), any::<u32>(), any::<u32>(), label()).prop_map(|(h, r, l, label)| {
            Message::Lock {
                hold: h,
                reason: r,
                lease_ms: l,
                label,
            }
        }),
        (any::<u32>(), any::<u32>(), any::<u32>(), label()).prop_map(|(h, r, l, label)| {
            Message::Held {
                hold: h,
                reason: r,
                lease_ms: l,
                label,
            }
        }),
        (any::<u32>(), any::<u32>(), any::<u32>(), short_label()).prop_map(|(h, r, l, label)| {
            Message::LockShort {
                hold: h,
                reason: r,
                lease_ms: l,
                label: Box::leak(label.into_boxed_slice()),
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(l, r)| Message::Verdict {
            lease_ms: l,
            refusal: r
        }),
        any::<u32>().prop_map(|h| Message::Unlock { hold: h }),
        (any::<u32>(), any::<u32>()).prop_map(|(h, l)| Message::Renew {
            hold: h,
            lease_ms: l
        }),
        (any::<u32>(), any::<bool>(), any::<u32>()).prop_map(|(h, s, e)| Message::State {
            holders: h,
            static_lock: s,
            earliest_expiry_ms: e
        }),
        (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(g, l, r)| Message::Decision {
            granted: g,
            lease_ms: l,
            reason: r
        }),
        notice().prop_map(Message::Notice),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(b, i, w, d, p)| Message::Workload {
                batch: b,
                interval_ms: i,
                wss_pages: w,
                dirty_pages_per_s: d,
                pfn_limit: p
            }),
        Just(Message::Ping),
        Just(Message::Pong),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u32>(), any::<u32>()).prop_map(|(s, r)| Header {
        seq: s,
        reply_to: r,
    })
}

fn hint_ranges() -> impl Strategy<Value = Vec<HintRange>> {
    proptest::collection::vec(
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(s, p, c)| HintRange {
            start_pfn: s,
            pages: p,
            score: c,
        }),
        0..=MAX_HINTS,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn messages_round_trip(msg in message(), hdr in header()) {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(&msg, hdr, &mut out).unwrap();
        prop_assert_eq!(decode(&out[..n]), Ok((hdr, msg)));
    }

    #[test]
    fn hints_round_trip(ranges in hint_ranges(), batch in any::<u32>(), hdr in header()) {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_hints(batch, &ranges, hdr, &mut out).unwrap();
        let (h, msg) = decode(&out[..n]).unwrap();
        prop_assert_eq!(h, hdr);
        match msg {
            Message::Hints { batch: b, ranges: r } => {
                prop_assert_eq!(b, batch);
                prop_assert_eq!(r.iter().collect::<Vec<_>>(), ranges);
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..MAX_FRAME + 8)) {
        let _ = decode(&bytes);
        let mut d = Decoder::new();
        for b in bytes {
            if d.push(b) == Event::Frame {
                prop_assert!(decode(d.frame()).is_ok());
            }
        }
    }

    #[test]
    fn stream_recovers_frames_between_noise(
        msgs in proptest::collection::vec((message(), header()), 1..20),
        noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 20),
    ) {
        let mut stream = Vec::new();
        for (i, (m, h)) in msgs.iter().enumerate() {
            // Noise must not itself contain a frame start, or a valid-looking
            // prefix could swallow the next frame's bytes; drop 'M'.
            stream.extend(noise[i].iter().copied().filter(|&b| b != b'M'));
            let mut out = [0u8; MAX_FRAME];
            let n = encode(m, *h, &mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in stream {
            if d.push(b) == Event::Frame {
                // Messages borrow the decoder's buffer: compare their text.
                got.push(format!("{:?}", decode(d.frame()).unwrap()));
            }
        }
        let want: Vec<_> = msgs.iter().map(|(m, h)| format!("{:?}", (*h, *m))).collect();
        prop_assert_eq!(got, want);
    }
}
