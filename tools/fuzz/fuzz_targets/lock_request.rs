// SPDX-License-Identifier: GPL-2.0

//! Random `MLD_IOC_LOCK`, `MLD_IOC_RENEW`, `MLD_IOC_UNLOCK` and
//! `SET_MIGRATION_FLAG` arguments through the very checks the module runs
//! (`miglock_lockstate::request`), then into the lock table: no panic; an
//! accepted request has a known reason, a lease of 1 ms to the maximum and
//! a printable, terminated label; a rejected one changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use miglock_abi::types::{check_label, MldLock, MldRenew, Reason, MLD_LABEL_LEN};
use miglock_lockstate::request::{check_flag, check_lock, check_renew, check_unlock, Target};
use miglock_lockstate::table::{Owner, Table};

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 20 + MLD_LABEL_LEN {
        return;
    }
    // The module refuses to load with a maximum lease of 0.
    let max = u32_at(data, 0).max(1);
    let mut label = [0u8; MLD_LABEL_LEN];
    label.copy_from_slice(&data[20..20 + MLD_LABEL_LEN]);
    let req = MldLock {
        reason: u32_at(data, 4),
        flags: u32_at(data, 8),
        lease_ms: u32_at(data, 12),
        reserved: u32_at(data, 16),
        label,
    };
    let mut table = Table::default();
    let before = table.clone();
    match check_lock(&req, max) {
        Ok(r) => {
            assert_eq!(Reason::from_u32(req.reason), Some(r.reason));
            assert!(r.lease_ms >= 1 && r.lease_ms <= max);
            assert!(req.lease_ms == 0 || r.lease_ms == req.lease_ms);
            let text = check_label(&r.label).expect("an accepted label checks");
            assert!(text.iter().all(|b| (0x20..0x7f).contains(b)));
            let owner = match r.target {
                Target::ThisFile => Owner::File(1),
                Target::Detached => Owner::Detached,
            };
            table
                .lock(owner, r.reason as u32, r.label, r.lease_ms, 0)
                .expect("an accepted request fits an empty table");
            assert!(table.locked());
        }
        Err(_) => assert_eq!(table, before),
    }
    let renew = MldRenew {
        lease_ms: req.lease_ms,
        flags: req.flags,
    };
    if let Ok(r) = check_renew(&renew, max) {
        assert!(r.lease_ms >= 1 && r.lease_ms <= max);
    }
    let _ = check_unlock(req.flags);
    let _ = check_flag(req.reserved as i32);
});
