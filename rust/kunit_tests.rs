// SPDX-License-Identifier: GPL-2.0

//! The module's KUnit suite: runs in the guest at `insmod`.

use crate::{
    abi::{ioctl as abi, types},
    kunit::{kunit_expect, kunit_expect_eq, kunit_suite, Test},
    lockstate::table::{Error as TableError, Owner, Table, Transition, LABEL_LEN, MAX_HOLDERS},
};
use kernel::{ioctl, prelude::*};

/// The ABI crate's encoding agrees with the kernel's own `_IO*` macros.
fn ioctl_encoding_matches_kernel(test: &mut Test) {
    let ty = u32::from(abi::MLD_IOC_MAGIC);
    kunit_expect_eq!(test, abi::SET_MIGRATION_FLAG, ioctl::_IOW::<i32>(ty, 0));
    for nr in [0u8, 1, 0x7f, 0xff] {
        let n = u32::from(nr);
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_NONE, abi::MLD_IOC_MAGIC, nr, 0),
            ioctl::_IO(ty, n)
        );
        kunit_expect_eq!(test, abi::iow::<u64>(nr), ioctl::_IOW::<u64>(ty, n));
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_READ, abi::MLD_IOC_MAGIC, nr, 24),
            ioctl::_IOR::<[u8; 24]>(ty, n)
        );
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_READ | abi::IOC_WRITE, abi::MLD_IOC_MAGIC, nr, 40),
            ioctl::_IOWR::<[u8; 40]>(ty, n)
        );
    }
}

/// The ioctl size field round-trips through the kernel's `_IOC_SIZE`.
fn ioctl_size_field_round_trips(test: &mut Test) {
    kunit_expect_eq!(test, ioctl::_IOC_SIZE(abi::SET_MIGRATION_FLAG), 4);
    kunit_expect_eq!(test, ioctl::_IOC_TYPE(abi::SET_MIGRATION_FLAG), 0xB9);
    kunit_expect!(test, ioctl::_IOC_NR(abi::SET_MIGRATION_FLAG) == 0);
}

const MS: u64 = 1_000_000;
const NO_LABEL: [u8; LABEL_LEN] = [0; LABEL_LEN];

/// The VM is locked while any holder holds; closing releases.
fn lock_table_holders(test: &mut Test) {
    let Ok(mut t) = KBox::new(Table::new(false), GFP_KERNEL) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    kunit_expect_eq!(
        test,
        t.lock(Owner::File(1), 1, NO_LABEL, 100, 0),
        Ok(Transition::Locked)
    );
    kunit_expect_eq!(
        test,
        t.lock(Owner::File(2), 2, NO_LABEL, 100, 0),
        Ok(Transition::None)
    );
    kunit_expect_eq!(test, t.holders(), 2);
    kunit_expect_eq!(test, t.release(Owner::File(1)), Transition::None);
    kunit_expect_eq!(test, t.unlock(Owner::File(1)), Err(TableError::NotHeld));
    kunit_expect_eq!(test, t.unlock(Owner::File(2)), Ok(Transition::Unlocked));
    kunit_expect!(test, !t.locked());
}

/// Leases end at their time, not before; renew moves the end.
fn lock_table_leases(test: &mut Test) {
    let Ok(mut t) = KBox::new(Table::new(false), GFP_KERNEL) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let _ = t.lock(Owner::File(1), 1, NO_LABEL, 10, 0);
    kunit_expect_eq!(test, t.renew(Owner::File(1), 20, 5 * MS), Ok(25 * MS));
    let mut expired = 0;
    kunit_expect_eq!(
        test,
        t.expire(25 * MS - 1, |_| expired += 1),
        Transition::None
    );
    kunit_expect_eq!(
        test,
        t.expire(25 * MS, |_| expired += 1),
        Transition::Unlocked
    );
    kunit_expect_eq!(test, expired, 1);
    kunit_expect_eq!(
        test,
        t.lock(Owner::Detached, 1, NO_LABEL, 0, 0),
        Err(TableError::ZeroLease)
    );
}

/// A full table refuses a new holder and changes nothing.
fn lock_table_full(test: &mut Test) {
    let Ok(mut t) = KBox::new(Table::new(true), GFP_KERNEL) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    for i in 0..MAX_HOLDERS as u64 {
        let _ = t.lock(Owner::File(i), 1, NO_LABEL, 1, 0);
    }
    kunit_expect_eq!(
        test,
        t.lock(Owner::File(u64::MAX), 1, NO_LABEL, 1, 0),
        Err(TableError::Full)
    );
    kunit_expect_eq!(test, t.holders(), MAX_HOLDERS);
    kunit_expect_eq!(test, t.clear(), MAX_HOLDERS + 1);
}

/// Labels must be printable, terminated and zero-padded.
fn label_validation(test: &mut Test) {
    let ok = types::make_label("db commit");
    kunit_expect!(test, ok.is_some());
    let mut bad = [b'a'; types::MLD_LABEL_LEN];
    kunit_expect!(test, types::check_label(&bad).is_err());
    bad[4] = 0;
    kunit_expect!(test, types::check_label(&bad).is_err());
    bad[5..].fill(0);
    kunit_expect!(test, types::check_label(&bad).is_ok());
    bad[0] = 0x1b;
    kunit_expect!(test, types::check_label(&bad).is_err());
}

/// The wire protocol as compiled into the module: CRC check value, a frame
/// round trip, and a flipped bit caught.
fn wire_round_trip(test: &mut Test) {
    use crate::abi::wire::{crc32c, decode, encode, Header, Message, MAX_FRAME};
    kunit_expect_eq!(test, crc32c(b"123456789"), 0xE306_9283u32);
    let Ok(mut out) = KBox::new([0u8; MAX_FRAME], GFP_KERNEL) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let msg = Message::Renew {
        hold: 3,
        lease_ms: 1500,
    };
    let hdr = Header {
        seq: 41,
        reply_to: 0,
    };
    let n = encode(&msg, hdr, &mut out[..]).unwrap_or(0);
    kunit_expect_eq!(test, n, 28);
    kunit_expect!(test, decode(&out[..n]) == Ok((hdr, msg)));
    out[17] ^= 0x10;
    kunit_expect!(test, decode(&out[..n]).is_err());
}

/// The vmcall backend's signature check reads EBX, ECX, EDX in order, and
/// stock hypervisors' signatures are not ours.
fn vmcall_signature(test: &mut Test) {
    use crate::vmcall::{signature, SIGNATURE};
    // "KVMKVMKVM\0\0\0" as KVM returns it.
    let kvm = signature(0x4b4d_564b, 0x564b_4d56, 0x0000_004d);
    kunit_expect!(test, &kvm[..9] == b"KVMKVMKVM");
    kunit_expect!(test, kvm != SIGNATURE);
    let ours = signature(
        u32::from_le_bytes([b'M', b'i', b'g', b'L']),
        u32::from_le_bytes([b'o', b'c', b'k', b'H']),
        u32::from_le_bytes([b'V', b'c', b'a', b'l']),
    );
    kunit_expect!(test, ours == SIGNATURE);
}

/// Hint batches: ranges must be non-empty and below `pfn_limit`, the
/// reserved field zero, the count honest.
fn hint_batch_checks(test: &mut Test) {
    use crate::hints::{check, frames_for};
    let range = |start: u64, pages: u32| {
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&start.to_le_bytes());
        r[8..12].copy_from_slice(&pages.to_le_bytes());
        r
    };
    let req = |count: u32| types::MldHints {
        count,
        pfn_limit: 100,
        interval_ms: 1000,
        ..Default::default()
    };
    kunit_expect!(test, check(&req(1), &range(10, 5)).is_ok());
    kunit_expect!(test, check(&req(1), &range(98, 2)).is_ok());
    kunit_expect!(test, check(&req(1), &range(98, 3)).is_err());
    kunit_expect!(test, check(&req(1), &range(10, 0)).is_err());
    kunit_expect!(test, check(&req(1), &range(u64::MAX, 2)).is_err());
    kunit_expect!(test, check(&req(2), &range(10, 5)).is_err());
    let reserved = types::MldHints {
        reserved: 1,
        ..req(0)
    };
    kunit_expect!(test, check(&reserved, &[]).is_err());
    kunit_expect!(test, check(&req(types::MLD_MAX_HINTS + 1), &[]).is_err());
    // A Workload frame, then 63 ranges a frame.
    kunit_expect_eq!(test, frames_for(0), 2);
    kunit_expect_eq!(test, frames_for(63), 2);
    kunit_expect_eq!(test, frames_for(64), 3);
    kunit_expect_eq!(test, frames_for(1024), 18);
}

/// The hint rate: a full bucket, refusal when empty, refill with time.
fn hint_rate_limit(test: &mut Test) {
    use crate::hints::Limiter;
    const SEC: u64 = 1_000_000_000;
    let mut l = Limiter::new(20);
    // The bucket holds at least one full batch (18 frames) and a second's worth.
    kunit_expect!(test, l.admit(18, SEC).is_ok());
    kunit_expect!(test, l.admit(2, SEC).is_ok());
    kunit_expect_eq!(test, l.admit(1, SEC), Err(EAGAIN));
    // 20 frames a second: 100 ms later, two frames' worth.
    kunit_expect!(test, l.admit(2, SEC + SEC / 10).is_ok());
    kunit_expect_eq!(test, l.admit(1, SEC + SEC / 10), Err(EAGAIN));
    kunit_expect!(test, Limiter::new(0).admit(1, SEC).is_err());
}

/// Proves the harness notices a failing case; only in the selftest build.
#[cfg(miglock_selftest = "kunit_fail")]
fn selftest_deliberate_failure(test: &mut Test) {
    kunit_expect!(
        test,
        1 + 1 == 3,
        "deliberate failure (MIGLOCK_SELFTEST=kunit_fail)"
    );
}

kunit_suite!(
    "miglock",
    [
        ioctl_encoding_matches_kernel,
        ioctl_size_field_round_trips,
        lock_table_holders,
        lock_table_leases,
        lock_table_full,
        label_validation,
        wire_round_trip,
        vmcall_signature,
        hint_batch_checks,
        hint_rate_limit,
        #[cfg(miglock_selftest = "kunit_fail")]
        selftest_deliberate_failure,
    ]
);
