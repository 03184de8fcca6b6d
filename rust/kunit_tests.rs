// SPDX-License-Identifier: GPL-2.0

//! The module's KUnit suite: runs in the guest at `insmod`.

use crate::channel::{Decision, HostChannel, Report, Stats};
use crate::service::Service;
use crate::{
    abi::{ioctl as abi, types},
    compat::kunit::{kunit_expect, kunit_expect_eq, kunit_suite, Test},
    lockstate::table::{Error as TableError, Owner, Table, Transition, LABEL_LEN, MAX_HOLDERS},
};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{ioctl, prelude::*, sync::Arc};

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
    use crate::compat::x86::signature;
    use crate::vmcall::SIGNATURE;
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

/// The status layout the C header and the ABI crate promise, as this
/// kernel's compiler lays it out.
fn status_layout(test: &mut Test) {
    use core::mem::{offset_of, size_of};
    use types::MldStatus;
    kunit_expect_eq!(test, size_of::<MldStatus>(), 64);
    kunit_expect_eq!(test, ioctl::_IOC_SIZE(abi::MLD_IOC_STATUS), 64);
    kunit_expect_eq!(test, offset_of!(MldStatus, postcopy_gen), 36);
    kunit_expect_eq!(test, offset_of!(MldStatus, pending_deadline_ms), 40);
    kunit_expect_eq!(test, offset_of!(MldStatus, migration_gen), 44);
    kunit_expect_eq!(test, offset_of!(MldStatus, reserved), 48);
}

/// The request checks the ioctls run: a good request passes unchanged,
/// each bad field is refused, a lease of 0 is the maximum.
fn request_checks(test: &mut Test) {
    use crate::lockstate::request::{check_flag, check_lock, check_unlock, lease, Invalid, Target};
    let Some(label) = types::make_label("ok") else {
        kunit_expect!(test, false, "label");
        return;
    };
    let good = types::MldLock {
        reason: 2,
        flags: 0,
        lease_ms: 0,
        reserved: 0,
        label,
    };
    let r = check_lock(&good, 900);
    kunit_expect!(
        test,
        r.is_ok_and(|r| r.lease_ms == 900 && r.target == Target::ThisFile)
    );
    let bad = types::MldLock {
        reserved: 1,
        ..good
    };
    kunit_expect_eq!(test, check_lock(&bad, 900).err(), Some(Invalid::Reserved));
    kunit_expect_eq!(test, lease(901, 900), Err(Invalid::Lease));
    kunit_expect_eq!(
        test,
        check_unlock(types::MLD_LOCK_DETACHED),
        Ok(Target::Detached)
    );
    kunit_expect!(test, check_flag(2).is_err());
}

/// Request slots: an answer reaches only the request it names, never more
/// requests wait than there are slots, a given-up request's answer is stale.
fn request_slots(test: &mut Test) {
    use crate::lockstate::slots::Slots;
    let Ok(mut s) = KBox::new(Slots::<u32, 2>::new(), GFP_KERNEL) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let (Some(a), Some(b)) = (s.claim(), s.claim()) else {
        kunit_expect!(test, false, "two free slots");
        return;
    };
    kunit_expect!(test, s.claim().is_none());
    s.sent(&a, 7);
    s.sent(&b, 8);
    kunit_expect!(test, s.answer(8, 80));
    kunit_expect_eq!(test, s.take(&a), None);
    kunit_expect_eq!(test, s.take(&b), Some(80));
    s.release(a);
    kunit_expect!(test, !s.answer(7, 70));
    kunit_expect_eq!(test, s.in_use(), 1);
    s.release(b);
    kunit_expect_eq!(test, s.in_use(), 0);
}

/// A host channel that answers as told and records what it is told.
struct Fake {
    /// 0: grant, 1: the caller is interrupted, 2: no answer, 3: refuse.
    mode: AtomicU32,
    requests: AtomicU32,
    released: AtomicU32,
    last_released: AtomicU32,
    /// Takes `Held` frames (and counts them) when non-zero.
    takes_held: AtomicU32,
    held: AtomicU32,
}

impl Fake {
    fn answer(&self, lease_ms: u32) -> Result<Decision> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.mode.load(Ordering::Relaxed) {
            0 => Ok(Decision::Granted { lease_ms }),
            1 => Err(ERESTARTSYS),
            2 => Err(crate::compat::errno::etimedout()),
            _ => Ok(Decision::Refused { reason: 2 }),
        }
    }
}

impl HostChannel for Fake {
    fn present(&self) -> bool {
        true
    }
    fn connected(&self) -> bool {
        true
    }
    fn start(&self) -> bool {
        true
    }
    fn stop(&self) {}
    fn request_lock(&self, _: u32, _: types::Reason, lease_ms: u32, _: &[u8]) -> Result<Decision> {
        self.answer(lease_ms)
    }
    fn request_renew(&self, _: u32, lease_ms: u32) -> Result<Decision> {
        self.answer(lease_ms)
    }
    fn released(&self, hold: u32) {
        self.released.fetch_add(1, Ordering::Relaxed);
        self.last_released.store(hold, Ordering::Relaxed);
    }
    fn takes_held(&self) -> bool {
        self.takes_held.load(Ordering::Relaxed) != 0
    }
    fn held(&self, _: u32, _: u32, _: u32, _: &[u8; crate::abi::wire::LABEL_LEN]) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }
    fn report(&self, _: Report) {}
    fn send_hints(&self, _: &crate::abi::wire::Message<'_>, _: u32, _: &[u8]) -> Result {
        Ok(())
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
}

/// A service over a [`Fake`] host (host_required as given).
fn fake_service(host_required: bool) -> Option<(Arc<Fake>, crate::service::Running)> {
    fake_service_lingering(host_required, 0)
}

/// As [`fake_service`], with grants lingering `linger_ms`.
fn fake_service_lingering(
    host_required: bool,
    linger_ms: u32,
) -> Option<(Arc<Fake>, crate::service::Running)> {
    let fake = Arc::new(
        Fake {
            mode: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            released: AtomicU32::new(0),
            last_released: AtomicU32::new(u32::MAX),
            takes_held: AtomicU32::new(0),
            held: AtomicU32::new(0),
        },
        GFP_KERNEL,
    )
    .ok()?;
    let config = crate::service::Config {
        max_lease_ms: 10_000,
        lock_gid: None,
        host_required,
        hint_rate: 0,
        linger_ms,
    };
    let svc = Service::start(config, false, fake.clone()).ok()?;
    Some((fake, svc))
}

fn lock_req(target: crate::lockstate::request::Target) -> crate::lockstate::request::LockRequest {
    crate::lockstate::request::flag_lock(target, 5000)
}

/// Every way a hold ends goes through one release path, which tells the
/// host: close, unlock, `SET_MIGRATION_FLAG 1` (with another holder left,
/// where the VM stays locked and no state report would tell the host), and
/// the detached hold.
fn release_path(test: &mut Test) {
    use crate::lockstate::request::{FlagRequest, Target};
    let Some((fake, svc)) = fake_service(false) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let (a, b) = (Owner::File(11), Owner::File(12));
    kunit_expect_eq!(test, svc.lock(a, &lock_req(Target::ThisFile)), Ok(false));
    kunit_expect_eq!(test, svc.lock(b, &lock_req(Target::ThisFile)), Ok(false));
    kunit_expect_eq!(test, svc.set_flag(a, FlagRequest::Unlock), Ok(false));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 1);
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 11);
    kunit_expect!(test, svc.with_table(|t, _| t.locked() && t.holders() == 1));
    // Nothing to release: no error for the flag, none sent.
    kunit_expect_eq!(test, svc.set_flag(a, FlagRequest::Unlock), Ok(false));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 1);
    kunit_expect!(test, svc.release(b, false), "close releases");
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 12);
    kunit_expect_eq!(test, svc.lock(a, &lock_req(Target::ThisFile)), Ok(false));
    kunit_expect_eq!(test, svc.unlock(a), Ok(()));
    kunit_expect_eq!(test, svc.unlock(a), Err(crate::compat::errno::enolck()));
    kunit_expect_eq!(
        test,
        svc.lock(Owner::Detached, &lock_req(Target::Detached)),
        Ok(false)
    );
    kunit_expect_eq!(test, svc.unlock(Owner::Detached), Ok(()));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 4);
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 0);
    kunit_expect!(test, svc.with_table(|t, _| !t.locked()));
}

/// A request the host may have seen but did not answer leaves no hold the
/// caller did not have, and the host is told to let go; no answer in time
/// is a local decision the caller can tell (or ETIMEDOUT with
/// host_required); a refusal changes nothing.
fn unanswered_requests(test: &mut Test) {
    use crate::lockstate::request::Target;
    let Some((fake, svc)) = fake_service(false) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let me = Owner::File(21);
    fake.mode.store(1, Ordering::Relaxed);
    kunit_expect_eq!(
        test,
        svc.lock(me, &lock_req(Target::ThisFile)),
        Err(ERESTARTSYS)
    );
    kunit_expect!(test, svc.with_table(|t, _| t.hold(me).is_none()));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 1);
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 21);
    // An owner that held keeps its hold, and the host keeps its own.
    fake.mode.store(0, Ordering::Relaxed);
    kunit_expect_eq!(test, svc.lock(me, &lock_req(Target::ThisFile)), Ok(false));
    fake.mode.store(1, Ordering::Relaxed);
    kunit_expect_eq!(
        test,
        svc.lock(me, &lock_req(Target::ThisFile)),
        Err(ERESTARTSYS)
    );
    kunit_expect_eq!(test, svc.renew(me, 100), Err(ERESTARTSYS));
    kunit_expect!(test, svc.with_table(|t, _| t.hold(me).is_some()));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 1);
    svc.release(me, false);
    // No answer: decided locally, and said so.
    fake.mode.store(2, Ordering::Relaxed);
    kunit_expect_eq!(test, svc.lock(me, &lock_req(Target::ThisFile)), Ok(true));
    svc.release(me, false);
    // Refused: nothing held.
    fake.mode.store(3, Ordering::Relaxed);
    kunit_expect_eq!(test, svc.lock(me, &lock_req(Target::ThisFile)), Err(EACCES));
    kunit_expect!(test, svc.with_table(|t, _| !t.locked()));
    let Some((fake, svc)) = fake_service(true) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    fake.mode.store(2, Ordering::Relaxed);
    let released = fake.released.load(Ordering::Relaxed);
    kunit_expect_eq!(
        test,
        svc.lock(me, &lock_req(Target::ThisFile)),
        Err(crate::compat::errno::etimedout())
    );
    kunit_expect!(test, svc.with_table(|t, _| !t.locked()));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), released + 1);
}

/// Host notices reach every open file, locked or not, once each, with the
/// deadline the host gave.
fn notices_reach_every_file(test: &mut Test) {
    use crate::abi::wire::Notice;
    use crate::channel::{HostEvent, HostEvents};
    use crate::lockstate::request::Target;
    let Some((_fake, svc)) = fake_service(false) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let (locked, idle) = (Owner::File(31), Owner::File(32));
    let (_, mut seen_locked) = svc.open_file();
    let (_, mut seen_idle) = svc.open_file();
    kunit_expect_eq!(
        test,
        svc.lock(locked, &lock_req(Target::ThisFile)),
        Ok(false)
    );
    seen_locked.expect_hold = true;
    svc.host_event(HostEvent::Notice(Notice::MigrationPending {
        deadline_ms: 60_000,
    }));
    for (owner, seen) in [(locked, &mut seen_locked), (idle, &mut seen_idle)] {
        kunit_expect!(test, svc.has_event(owner, seen));
        let st = svc.status(owner, seen);
        kunit_expect!(test, st.flags & types::MLD_ST_MIGRATION_PENDING != 0);
        kunit_expect!(
            test,
            st.pending_deadline_ms > 50_000 && st.pending_deadline_ms <= 60_000
        );
        kunit_expect!(test, !svc.has_event(owner, seen));
    }
    svc.host_event(HostEvent::Notice(Notice::MigrationCancelled));
    svc.host_event(HostEvent::Notice(Notice::Migrated));
    for (owner, seen) in [(locked, &mut seen_locked), (idle, &mut seen_idle)] {
        let st = svc.status(owner, seen);
        let want = types::MLD_ST_MIGRATION_CANCELLED | types::MLD_ST_MIGRATED;
        kunit_expect_eq!(
            test,
            st.flags & (want | types::MLD_ST_MIGRATION_PENDING),
            want
        );
        kunit_expect_eq!(test, st.migration_gen, 1);
    }
    svc.release(locked, false);
}

/// A grant lingers after its owner unlocks and is taken back without
/// asking; a second holder inside a held grant is taken without asking and
/// the host hears of it before any later frame; a pending migration ends
/// the linger at once.
fn grants_save_round_trips(test: &mut Test) {
    use crate::abi::wire::Notice;
    use crate::channel::{HostEvent, HostEvents};
    use crate::lockstate::request::Target;
    let Some((fake, svc)) = fake_service_lingering(false, 60_000) else {
        kunit_expect!(test, false, "allocation failed");
        return;
    };
    let (a, b) = (Owner::File(41), Owner::File(42));
    let req = lock_req(Target::ThisFile);
    kunit_expect_eq!(test, svc.lock(a, &req), Ok(false));
    kunit_expect_eq!(test, svc.unlock(a), Ok(()));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), 0);
    kunit_expect_eq!(test, svc.lock(a, &req), Ok(false));
    kunit_expect_eq!(test, fake.requests.load(Ordering::Relaxed), 1);
    // Without the host's consent, a second holder asks.
    kunit_expect_eq!(test, svc.lock(b, &req), Ok(false));
    kunit_expect_eq!(test, fake.requests.load(Ordering::Relaxed), 2);
    kunit_expect!(test, svc.release(b, false));
    fake.takes_held.store(1, Ordering::Relaxed);
    kunit_expect_eq!(test, svc.lock(b, &req), Ok(false));
    kunit_expect_eq!(test, fake.requests.load(Ordering::Relaxed), 2);
    kunit_expect!(test, svc.with_table(|t, _| t.holders() == 2));
    // The release goes out after the `Held` it ends.
    kunit_expect!(test, svc.release(b, false));
    kunit_expect_eq!(test, fake.held.load(Ordering::Relaxed), 1);
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 42);
    // Another label is another decision.
    kunit_expect_eq!(test, svc.unlock(a), Ok(()));
    let mut other = lock_req(Target::ThisFile);
    other.label[0] = b'x';
    kunit_expect_eq!(test, svc.lock(a, &other), Ok(false));
    kunit_expect_eq!(test, fake.requests.load(Ordering::Relaxed), 3);
    // A pending migration releases a lingering grant at once.
    kunit_expect_eq!(test, svc.unlock(a), Ok(()));
    let released = fake.released.load(Ordering::Relaxed);
    svc.host_event(HostEvent::Notice(Notice::MigrationPending {
        deadline_ms: 1000,
    }));
    kunit_expect_eq!(test, fake.released.load(Ordering::Relaxed), released + 1);
    kunit_expect_eq!(test, fake.last_released.load(Ordering::Relaxed), 41);
    kunit_expect_eq!(test, svc.lock(a, &req), Ok(false));
    kunit_expect_eq!(test, fake.requests.load(Ordering::Relaxed), 4);
    svc.release(a, false);
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
        status_layout,
        request_checks,
        request_slots,
        release_path,
        unanswered_requests,
        notices_reach_every_file,
        grants_save_round_trips,
        #[cfg(miglock_selftest = "kunit_fail")]
        selftest_deliberate_failure,
    ]
);
