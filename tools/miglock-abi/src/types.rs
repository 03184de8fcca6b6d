// SPDX-License-Identifier: GPL-2.0

//! Request and status structures of `/dev/mld`, and their codes.
//!
//! `#[repr(C)]` with explicit padding fields, so the layout is the same in
//! Rust and C (`include/uapi/linux/miglock.h`) and no byte is undefined.

/// Why an application locks (the paper's four reasons, plus two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// Running critical code that migration would disturb.
    CriticalCode = 1,
    /// In a critical operation that migration would fail.
    CriticalOperation = 2,
    /// Co-located with other VMs on purpose (e.g. shared-memory peers).
    CoLocation = 3,
    /// Depends on special hardware of this host.
    SpecialHardware = 4,
    /// Holding confidential data that must not leave this host now.
    Confidential = 5,
    /// Anything else; say what in the label.
    Other = 6,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 6] = [
        Reason::CriticalCode,
        Reason::CriticalOperation,
        Reason::CoLocation,
        Reason::SpecialHardware,
        Reason::Confidential,
        Reason::Other,
    ];

    /// The reason with code `v`, if any.
    pub const fn from_u32(v: u32) -> Option<Reason> {
        match v {
            1 => Some(Reason::CriticalCode),
            2 => Some(Reason::CriticalOperation),
            3 => Some(Reason::CoLocation),
            4 => Some(Reason::SpecialHardware),
            5 => Some(Reason::Confidential),
            6 => Some(Reason::Other),
            _ => None,
        }
    }

    /// Short name used by tools and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::CriticalCode => "critical-code",
            Reason::CriticalOperation => "critical-operation",
            Reason::CoLocation => "co-location",
            Reason::SpecialHardware => "special-hardware",
            Reason::Confidential => "confidential",
            Reason::Other => "other",
        }
    }
}

/// Bytes of a label, including its terminating NUL.
pub const MLD_LABEL_LEN: usize = 32;

/// Lock flag: the hold is not owned by the file; it lasts until unlocked
/// (by any privileged caller) or until its lease ends. For CLIs that exit.
pub const MLD_LOCK_DETACHED: u32 = 1 << 0;
/// Lock flags the kernel accepts.
pub const MLD_LOCK_FLAGS: u32 = MLD_LOCK_DETACHED;

/// `MLD_IOC_LOCK` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MldLock {
    /// A [`Reason`] code.
    pub reason: u32,
    /// `MLD_LOCK_*` flags.
    pub flags: u32,
    /// Lease asked for in milliseconds; 0 means the maximum lease.
    pub lease_ms: u32,
    /// Must be zero.
    pub reserved: u32,
    /// Printable ASCII, NUL-terminated, zero-padded.
    pub label: [u8; MLD_LABEL_LEN],
}

/// `MLD_IOC_RENEW` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MldRenew {
    /// New lease from now, in milliseconds; 0 means the maximum lease.
    pub lease_ms: u32,
    /// `MLD_LOCK_DETACHED` to renew the detached hold instead of the file's.
    pub flags: u32,
}

/// Status flag: the VM is locked.
pub const MLD_ST_LOCKED: u32 = 1 << 0;
/// Status flag: the static lock (module parameter `locked=1`) is set.
pub const MLD_ST_STATIC: u32 = 1 << 1;
/// Status flag: this open file holds a lock.
pub const MLD_ST_HELD_BY_ME: u32 = 1 << 2;
/// Status flag: the detached hold exists.
pub const MLD_ST_DETACHED: u32 = 1 << 3;
/// Status flag: a host channel is connected (otherwise state is local only).
pub const MLD_ST_CHANNEL: u32 = 1 << 4;
/// Status flag: the host announced a pending migration.
pub const MLD_ST_MIGRATION_PENDING: u32 = 1 << 5;
/// Status flag: the host force-released the lock.
pub const MLD_ST_FORCED_RELEASE: u32 = 1 << 6;
/// Status flag: this file's lease ended since its last status call.
pub const MLD_ST_LEASE_EXPIRED: u32 = 1 << 7;
/// Status flag: the host said post-copy is running (this VM now runs on the
/// destination and fetches pages it has not received yet on demand).
/// `postcopy_gen` counts these announcements.
pub const MLD_ST_POSTCOPY: u32 = 1 << 8;
/// Status flag: the host cancelled the pending migration (or gave it up)
/// since this file's last status call.
pub const MLD_ST_MIGRATION_CANCELLED: u32 = 1 << 9;
/// Status flag: the VM arrived on this host by live migration since this
/// file's last status call (hardware it was pinned to may be gone);
/// `migration_gen` counts the arrivals.
pub const MLD_ST_MIGRATED: u32 = 1 << 10;
/// Status flag: this file's last successful lock or renewal was decided in
/// the guest alone, because no host answered. The host does not enforce
/// such a hold until the guest resyncs with it.
pub const MLD_ST_LOCAL_DECISION: u32 = 1 << 11;
/// Status flag: the host is taking a live checkpoint of the VM now (the
/// image is memory as of its start; the VM keeps running and does not move).
pub const MLD_ST_CHECKPOINT: u32 = 1 << 12;
/// Status flag: a checkpoint ended since this file's last status call.
pub const MLD_ST_CHECKPOINT_DONE: u32 = 1 << 13;
/// Status flag: the VM was restored from a checkpoint since this file's
/// last status call (it went back to the moment the checkpoint began).
pub const MLD_ST_RESTORED: u32 = 1 << 14;

/// Host decision: none yet.
pub const MLD_DECISION_NONE: u32 = 0;
/// Host decision: the lock was granted.
pub const MLD_DECISION_GRANTED: u32 = 1;
/// Host decision: the lock was refused.
pub const MLD_DECISION_REFUSED: u32 = 2;
/// No host channel: the lock was recorded locally only.
pub const MLD_DECISION_LOCAL: u32 = 3;

/// `MLD_IOC_STATUS` result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MldStatus {
    /// `MLD_ST_*` flags.
    pub flags: u32,
    /// Number of holds (the static lock is not one).
    pub holders: u32,
    /// Milliseconds until the earliest lease ends; 0 if none.
    pub earliest_expiry_ms: u64,
    /// Milliseconds until this file's lease ends; 0 if it holds none.
    pub own_expiry_ms: u64,
    /// The last `MLD_DECISION_*`.
    pub last_decision: u32,
    /// The host's refusal reason with the last decision, 0 if none.
    pub last_refusal: u32,
    /// The maximum lease in milliseconds.
    pub max_lease_ms: u32,
    /// How many times the host announced post-copy since the module loaded.
    pub postcopy_gen: u32,
    /// Milliseconds until the pending migration's deadline (the grace the
    /// host gave); 0 if none is pending or the deadline passed.
    pub pending_deadline_ms: u32,
    /// How many times the VM arrived here by live migration since the
    /// module loaded (`MLD_ST_MIGRATED`).
    pub migration_gen: u32,
    /// Zero.
    pub reserved: [u32; 4],
}

/// Most ranges in one `MLD_IOC_HINTS` call.
pub const MLD_MAX_HINTS: u32 = 1024;

/// One ranked guest-physical range of a hint batch (same layout as a wire
/// hint range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MldHintRange {
    /// First page frame number.
    pub start_pfn: u64,
    /// Number of pages, at least one.
    pub pages: u32,
    /// Higher is hotter; ranges come hottest first. `miglock-tracer`'s
    /// score is a frame's age register in bits 8-15 (bit 15: accessed in
    /// the last sample, bit 14: in the one before, ...) over its access
    /// frequency in bits 0-7, a range's the mean of its frames'.
    pub score: u32,
}

/// The least score of a range the guest accessed in one of its last two
/// samples (its working set now, by `miglock-tracer`'s score): what a
/// run-ahead reads.
pub const MLD_HINT_SCORE_RECENT: u32 = 0x40 << 8;

/// `MLD_IOC_HINTS` argument: a hint batch and the workload figures the host
/// planner uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MldHints {
    /// Batch number; each batch must number higher than the last.
    pub batch: u32,
    /// Ranges at `ranges`, at most [`MLD_MAX_HINTS`].
    pub count: u32,
    /// User address of `count` [`MldHintRange`]s.
    pub ranges: u64,
    /// Pages the workload touched recently (its working set).
    pub wss_pages: u64,
    /// Pages written per second.
    pub dirty_pages_per_s: u64,
    /// Every frame number is below this.
    pub pfn_limit: u64,
    /// The tracer's sampling interval in milliseconds.
    pub interval_ms: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// Why a label is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelError {
    /// No NUL within [`MLD_LABEL_LEN`] bytes.
    Unterminated,
    /// A byte that is not printable ASCII.
    NotPrintable,
    /// A non-zero byte after the terminating NUL.
    GarbageAfterNul,
}

/// Checks a label: printable ASCII, NUL-terminated, zero-padded.
pub fn check_label(label: &[u8; MLD_LABEL_LEN]) -> Result<&[u8], LabelError> {
    let len = label
        .iter()
        .position(|&b| b == 0)
        .ok_or(LabelError::Unterminated)?;
    if !label[..len].iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(LabelError::NotPrintable);
    }
    if label[len..].iter().any(|&b| b != 0) {
        return Err(LabelError::GarbageAfterNul);
    }
    Ok(&label[..len])
}

/// A label from `text`, or `None` if it is too long or not printable ASCII.
pub fn make_label(text: &str) -> Option<[u8; MLD_LABEL_LEN]> {
    let b = text.as_bytes();
    if b.len() >= MLD_LABEL_LEN {
        return None;
    }
    let mut label = [0u8; MLD_LABEL_LEN];
    label[..b.len()].copy_from_slice(b);
    check_label(&label).ok()?;
    Some(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    // Golden layout: ABI, must never change.
    #[test]
    fn layouts() {
        assert_eq!(size_of::<MldLock>(), 48);
        assert_eq!(offset_of!(MldLock, label), 16);
        assert_eq!(size_of::<MldRenew>(), 8);
        assert_eq!(size_of::<MldStatus>(), 64);
        assert_eq!(offset_of!(MldStatus, earliest_expiry_ms), 8);
        assert_eq!(offset_of!(MldStatus, last_decision), 24);
        assert_eq!(offset_of!(MldStatus, max_lease_ms), 32);
        assert_eq!(offset_of!(MldStatus, postcopy_gen), 36);
        assert_eq!(offset_of!(MldStatus, pending_deadline_ms), 40);
        assert_eq!(offset_of!(MldStatus, migration_gen), 44);
        assert_eq!(offset_of!(MldStatus, reserved), 48);
        assert_eq!(size_of::<MldHintRange>(), 16);
        assert_eq!(size_of::<MldHints>(), 48);
        assert_eq!(offset_of!(MldHints, ranges), 8);
        assert_eq!(offset_of!(MldHints, interval_ms), 40);
    }

    // Golden status flags: ABI, must never change.
    #[test]
    fn status_flags() {
        assert_eq!(MLD_ST_MIGRATED, 0x400);
        assert_eq!(MLD_ST_LOCAL_DECISION, 0x800);
        assert_eq!(MLD_ST_CHECKPOINT, 0x1000);
        assert_eq!(MLD_ST_CHECKPOINT_DONE, 0x2000);
        assert_eq!(MLD_ST_RESTORED, 0x4000);
    }

    #[test]
    fn reason_codes() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32 + 1);
            assert_eq!(Reason::from_u32(*r as u32), Some(*r));
        }
        assert_eq!(Reason::from_u32(0), None);
        assert_eq!(Reason::from_u32(7), None);
    }

    #[test]
    fn labels() {
        let l = make_label("db commit").unwrap();
        assert_eq!(check_label(&l), Ok(&b"db commit"[..]));
        assert!(make_label(&"x".repeat(31)).is_some());
        assert!(make_label(&"x".repeat(32)).is_none());
        assert!(make_label("tab\there").is_none());
        let mut bad = [b'a'; MLD_LABEL_LEN];
        assert_eq!(check_label(&bad), Err(LabelError::Unterminated));
        bad[3] = 0;
        assert_eq!(check_label(&bad), Err(LabelError::GarbageAfterNul));
    }
}
