// SPDX-License-Identifier: GPL-2.0

//! The checks every `/dev/mld` request passes before anything changes.
//!
//! The module's ioctl adapter copies a request in and hands it here; what
//! comes back is either a request the rest of the module can act on without
//! looking at raw fields again, or why it is invalid (always `EINVAL` for
//! the caller). The `lock_request` fuzz target runs these functions on
//! random bytes.

use super::table::LABEL_LEN;
use crate::abi::types::{
    check_label, make_label, MldLock, MldRenew, Reason, MLD_LOCK_DETACHED, MLD_LOCK_FLAGS,
};

/// Why a request is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not a reason code.
    Reason,
    /// An unknown flag bit.
    Flags,
    /// A reserved field is not zero.
    Reserved,
    /// The label is not printable, terminated ASCII padded with zeros.
    Label,
    /// A lease longer than the maximum.
    Lease,
    /// `SET_MIGRATION_FLAG` with a flag other than 0 or 1.
    Flag,
}

/// Whose hold a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The hold of the file the request came through.
    ThisFile,
    /// The detached hold (and, for an unlock, the static lock).
    Detached,
}

/// A lock request that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRequest {
    /// Whose hold.
    pub target: Target,
    /// Why.
    pub reason: Reason,
    /// The lease, 1 ms to the maximum.
    pub lease_ms: u32,
    /// Checked label.
    pub label: [u8; LABEL_LEN],
}

/// A renewal that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// Whose hold.
    pub target: Target,
    /// The new lease from now, 1 ms to the maximum.
    pub lease_ms: u32,
}

/// What `SET_MIGRATION_FLAG` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRequest {
    /// 0: lock (the paper's "migration = no").
    Lock,
    /// 1: may migrate; the caller's hold ends.
    Unlock,
}

/// The label the paper's interfaces lock with.
pub const FLAG_LABEL: &str = "set_migration_flag";

/// The lease a request gets: 0 asks for the maximum, more than `max_ms` is
/// invalid.
pub fn lease(asked_ms: u32, max_ms: u32) -> Result<u32, Invalid> {
    match asked_ms {
        0 => Ok(max_ms),
        ms if ms <= max_ms => Ok(ms),
        _ => Err(Invalid::Lease),
    }
}

fn target(flags: u32) -> Target {
    if flags & MLD_LOCK_DETACHED != 0 {
        Target::Detached
    } else {
        Target::ThisFile
    }
}

/// Checks `MLD_IOC_LOCK`'s argument against the module's maximum lease.
pub fn check_lock(req: &MldLock, max_lease_ms: u32) -> Result<LockRequest, Invalid> {
    let reason = Reason::from_u32(req.reason).ok_or(Invalid::Reason)?;
    if req.flags & !MLD_LOCK_FLAGS != 0 {
        return Err(Invalid::Flags);
    }
    if req.reserved != 0 {
        return Err(Invalid::Reserved);
    }
    check_label(&req.label).map_err(|_| Invalid::Label)?;
    Ok(LockRequest {
        target: target(req.flags),
        reason,
        lease_ms: lease(req.lease_ms, max_lease_ms)?,
        label: req.label,
    })
}

/// Checks `MLD_IOC_RENEW`'s argument.
pub fn check_renew(req: &MldRenew, max_lease_ms: u32) -> Result<Renewal, Invalid> {
    if req.flags & !MLD_LOCK_DETACHED != 0 {
        return Err(Invalid::Flags);
    }
    Ok(Renewal {
        target: target(req.flags),
        lease_ms: lease(req.lease_ms, max_lease_ms)?,
    })
}

/// Checks `MLD_IOC_UNLOCK`'s flags.
pub fn check_unlock(flags: u32) -> Result<Target, Invalid> {
    if flags & !MLD_LOCK_DETACHED != 0 {
        return Err(Invalid::Flags);
    }
    Ok(target(flags))
}

/// Checks `SET_MIGRATION_FLAG`'s (and the system call's) flag.
pub fn check_flag(flag: i32) -> Result<FlagRequest, Invalid> {
    match flag {
        0 => Ok(FlagRequest::Lock),
        1 => Ok(FlagRequest::Unlock),
        _ => Err(Invalid::Flag),
    }
}

/// The lock `SET_MIGRATION_FLAG 0` takes for `target`: reason "other",
/// the maximum lease, as in the paper.
pub fn flag_lock(target: Target, max_lease_ms: u32) -> LockRequest {
    LockRequest {
        target,
        reason: Reason::Other,
        lease_ms: max_lease_ms,
        // A constant label that is always valid.
        label: make_label(FLAG_LABEL).unwrap_or([0; LABEL_LEN]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> MldLock {
        MldLock {
            reason: 1,
            flags: 0,
            lease_ms: 1000,
            reserved: 0,
            label: make_label("db commit").unwrap(),
        }
    }

    #[test]
    fn a_good_request_passes_unchanged() {
        let r = check_lock(&good(), 5000).unwrap();
        assert_eq!(r.target, Target::ThisFile);
        assert_eq!(r.reason, Reason::CriticalCode);
        assert_eq!(r.lease_ms, 1000);
        assert_eq!(r.label, good().label);
        let d = check_lock(
            &MldLock {
                flags: MLD_LOCK_DETACHED,
                ..good()
            },
            5000,
        )
        .unwrap();
        assert_eq!(d.target, Target::Detached);
    }

    #[test]
    fn every_bad_field_is_named() {
        let max = 5000;
        let bad = [
            (
                MldLock {
                    reason: 0,
                    ..good()
                },
                Invalid::Reason,
            ),
            (
                MldLock {
                    reason: 7,
                    ..good()
                },
                Invalid::Reason,
            ),
            (MldLock { flags: 2, ..good() }, Invalid::Flags),
            (
                MldLock {
                    reserved: 1,
                    ..good()
                },
                Invalid::Reserved,
            ),
            (
                MldLock {
                    lease_ms: max + 1,
                    ..good()
                },
                Invalid::Lease,
            ),
            (
                MldLock {
                    label: [b'a'; LABEL_LEN],
                    ..good()
                },
                Invalid::Label,
            ),
        ];
        for (req, why) in bad {
            assert_eq!(check_lock(&req, max), Err(why), "{req:?}");
        }
    }

    #[test]
    fn lease_zero_is_the_maximum() {
        assert_eq!(lease(0, 300), Ok(300));
        assert_eq!(lease(300, 300), Ok(300));
        assert_eq!(lease(301, 300), Err(Invalid::Lease));
        assert_eq!(
            check_renew(
                &MldRenew {
                    lease_ms: 0,
                    flags: 0
                },
                9
            ),
            Ok(Renewal {
                target: Target::ThisFile,
                lease_ms: 9
            })
        );
    }

    #[test]
    fn unlock_renew_and_flag_checks() {
        assert_eq!(check_unlock(0), Ok(Target::ThisFile));
        assert_eq!(check_unlock(MLD_LOCK_DETACHED), Ok(Target::Detached));
        assert_eq!(check_unlock(0x10), Err(Invalid::Flags));
        assert_eq!(
            check_renew(
                &MldRenew {
                    lease_ms: 1,
                    flags: 2
                },
                9
            ),
            Err(Invalid::Flags)
        );
        assert_eq!(check_flag(0), Ok(FlagRequest::Lock));
        assert_eq!(check_flag(1), Ok(FlagRequest::Unlock));
        for f in [-1, 2, i32::MAX] {
            assert_eq!(check_flag(f), Err(Invalid::Flag));
        }
        let l = flag_lock(Target::Detached, 77);
        assert_eq!((l.reason, l.lease_ms), (Reason::Other, 77));
        assert_eq!(check_label(&l.label), Ok(FLAG_LABEL.as_bytes()));
    }
}
