// SPDX-License-Identifier: GPL-2.0

//! Property test: random operation sequences against a plain reference model.

use miglock_lockstate::table::{Error, Owner, Table, Transition, LABEL_LEN, MAX_HOLDERS};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Lock(u8, u32),
    Unlock(u8),
    Renew(u8, u32),
    Release(u8),
    Expire,
    Advance(u32),
}

fn owner(n: u8) -> Owner {
    // 0 stands for the detached hold; a small id space makes collisions common.
    if n == 0 {
        Owner::Detached
    } else {
        Owner::File(u64::from(n))
    }
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..80; // more ids than MAX_HOLDERS, to reach Full
    let lease = 0u32..50;
    prop_oneof![
        (id.clone(), lease.clone()).prop_map(|(i, l)| Op::Lock(i, l)),
        id.clone().prop_map(Op::Unlock),
        (id.clone(), lease).prop_map(|(i, l)| Op::Renew(i, l)),
        id.prop_map(Op::Release),
        Just(Op::Expire),
        (0u32..30).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..400)) {
        let mut t = Table::default();
        // owner -> expiry (ns)
        let mut model: BTreeMap<u8, u64> = BTreeMap::new();
        let mut now: u64 = 0;
        let ms = 1_000_000u64;
        for op in ops {
            let before = t.clone();
            let was_locked = !model.is_empty();
            let mut op_result: Option<Result<(), Error>> = None;
            match op {
                Op::Lock(i, l) => {
                    let r = t.lock(owner(i), 1, [0; LABEL_LEN], l, now);
                    op_result = Some(r.map(drop));
                    if l == 0 {
                        prop_assert_eq!(r, Err(Error::ZeroLease));
                    } else if !model.contains_key(&i) && model.len() == MAX_HOLDERS {
                        prop_assert_eq!(r, Err(Error::Full));
                    } else {
                        model.insert(i, now + u64::from(l) * ms);
                        prop_assert!(r.is_ok());
                    }
                }
                Op::Unlock(i) => {
                    let r = t.unlock(owner(i));
                    op_result = Some(r.map(drop));
                    prop_assert_eq!(r.is_ok(), model.remove(&i).is_some());
                }
                Op::Renew(i, l) => {
                    let r = t.renew(owner(i), l, now);
                    op_result = Some(r.map(drop));
                    match model.get_mut(&i) {
                        _ if l == 0 => prop_assert_eq!(r, Err(Error::ZeroLease)),
                        Some(e) => { *e = now + u64::from(l) * ms; prop_assert_eq!(r, Ok(*e)); }
                        None => prop_assert_eq!(r, Err(Error::NotHeld)),
                    }
                }
                Op::Release(i) => {
                    t.release(owner(i));
                    model.remove(&i);
                }
                Op::Expire => {
                    let mut n = 0;
                    let tr = t.expire(now, |_| n += 1);
                    let before_len = model.len();
                    model.retain(|_, e| *e > now);
                    prop_assert_eq!(n, before_len - model.len());
                    let expect = if was_locked && model.is_empty() { Transition::Unlocked } else { Transition::None };
                    prop_assert_eq!(tr, expect);
                }
                Op::Advance(d) => now += u64::from(d) * ms,
            }
            // Invariants after every step.
            prop_assert_eq!(t.holders(), model.len());
            prop_assert_eq!(t.locked(), !model.is_empty());
            prop_assert_eq!(t.earliest_expiry(), model.values().min().copied());
            // A refused operation changes nothing at all.
            if matches!(&op_result, Some(Err(_))) {
                prop_assert_eq!(&t, &before);
            }
        }
    }
}
