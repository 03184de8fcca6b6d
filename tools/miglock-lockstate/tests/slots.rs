// SPDX-License-Identifier: GPL-2.0

//! Property test: any interleaving of claims, sends, answers (right,
//! stale and duplicated), takes and releases hands every request its own
//! answer and nothing else, and never more than `N` requests are in flight.

use miglock_lockstate::slots::{Slots, Ticket};
use proptest::prelude::*;

const N: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Claim,
    /// Send (or resend) the request of the i-th live ticket.
    Send(usize),
    /// The host answers the request sent with the k-th sequence number
    /// ever used (late, duplicated or current).
    Answer(usize),
    Take(usize),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Claim),
        (0usize..8).prop_map(Op::Send),
        (0usize..64).prop_map(Op::Answer),
        (0usize..8).prop_map(Op::Take),
        (0usize..8).prop_map(Op::Release),
    ]
}

struct Live {
    ticket: Ticket,
    /// The sequence number its request was last sent as.
    seq: Option<u32>,
    /// The answer filed for it and not yet taken.
    answer: Option<u32>,
    /// Every sequence number it was sent as.
    all: Vec<u32>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    #[test]
    fn every_request_gets_its_own_answer(ops in proptest::collection::vec(op(), 1..300)) {
        let mut s: Slots<u32, N> = Slots::new();
        let mut live: Vec<Live> = Vec::new();
        let mut sent: Vec<u32> = Vec::new(); // every sequence number used
        let mut next = 1u32;
        for op in ops {
            match op {
                Op::Claim => match s.claim() {
                    Some(ticket) => {
                        prop_assert!(live.len() < N);
                        live.push(Live { ticket, seq: None, answer: None, all: Vec::new() });
                    }
                    None => prop_assert_eq!(live.len(), N),
                },
                Op::Send(i) if i < live.len() => {
                    let seq = next;
                    next += 1;
                    sent.push(seq);
                    s.sent(&live[i].ticket, seq);
                    live[i].seq = Some(seq);
                    live[i].all.push(seq);
                }
                Op::Answer(k) if k < sent.len() => {
                    let seq = sent[k];
                    // The host's answer names the request: its value is the seq.
                    let filed = s.answer(seq, seq);
                    let owner = live.iter_mut().find(|l| l.seq == Some(seq) && l.answer.is_none());
                    prop_assert_eq!(filed, owner.is_some(), "answer to {} filed={}", seq, filed);
                    if let Some(l) = owner {
                        l.answer = Some(seq);
                    }
                }
                Op::Take(i) if i < live.len() => {
                    let got = s.take(&live[i].ticket);
                    prop_assert_eq!(got, live[i].answer.take());
                    if let Some(a) = got {
                        // Its own answer (to this or an earlier attempt), and
                        // the request now waits for nothing.
                        prop_assert!(live[i].all.contains(&a));
                        live[i].seq = None;
                    }
                }
                Op::Release(i) if i < live.len() => {
                    let l = live.swap_remove(i);
                    s.release(l.ticket);
                }
                _ => {}
            }
            prop_assert_eq!(s.in_use(), live.len());
            prop_assert!(s.in_use() <= N);
        }
    }
}
