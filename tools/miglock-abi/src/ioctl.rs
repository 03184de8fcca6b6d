// SPDX-License-Identifier: GPL-2.0

//! ioctl numbers of `/dev/mld`.
//!
//! Encoded exactly like the kernel's `_IOC()` on x86 and the other
//! asm-generic architectures: `dir << 30 | size << 16 | type << 8 | nr`.

use super::types::{MldHints, MldLock, MldRenew, MldStatus};

/// ioctl type byte of `/dev/mld`; 0xB9 is unassigned in
/// `Documentation/userspace-api/ioctl/ioctl-number.rst`.
pub const MLD_IOC_MAGIC: u8 = 0xB9;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// No data transfer.
pub const IOC_NONE: u32 = 0;
/// Userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// The kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

/// The kernel's `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    // A size that does not fit the 14-bit field is a bug in this crate:
    // fail the build rather than emit a wrong number.
    assert!(size < (1 << IOC_SIZEBITS));
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// The kernel's `_IOW(type, nr, T)` for `/dev/mld`.
pub const fn iow<T>(nr: u8) -> u32 {
    ioc(IOC_WRITE, MLD_IOC_MAGIC, nr, core::mem::size_of::<T>())
}

/// The kernel's `_IOR(type, nr, T)` for `/dev/mld`.
pub const fn ior<T>(nr: u8) -> u32 {
    ioc(IOC_READ, MLD_IOC_MAGIC, nr, core::mem::size_of::<T>())
}

/// `SET_MIGRATION_FLAG`: `ioctl(fd, SET_MIGRATION_FLAG, &flag)` with an `int`
/// flag, 1 = the VM may migrate, 0 = locked (the paper's interface). The
/// lock belongs to the open file, with reason "other" and the maximum lease.
pub const SET_MIGRATION_FLAG: u32 = iow::<i32>(0x00);

/// `MLD_IOC_LOCK`: take or update a lock ([`MldLock`]).
pub const MLD_IOC_LOCK: u32 = iow::<MldLock>(0x01);

/// `MLD_IOC_UNLOCK`: drop the file's hold, or with `MLD_LOCK_DETACHED` in the
/// `__u32` argument the detached hold and the static lock.
pub const MLD_IOC_UNLOCK: u32 = iow::<u32>(0x02);

/// `MLD_IOC_RENEW`: restart a hold's lease ([`MldRenew`]).
pub const MLD_IOC_RENEW: u32 = iow::<MldRenew>(0x03);

/// `MLD_IOC_STATUS`: read the lock state ([`MldStatus`]).
pub const MLD_IOC_STATUS: u32 = ior::<MldStatus>(0x04);

/// `MLD_IOC_HINTS`: hand the host a hint batch ([`MldHints`]). Rate limited:
/// `EAGAIN` over the rate (the batch is dropped; send the next one later).
pub const MLD_IOC_HINTS: u32 = iow::<MldHints>(0x05);

/// x86_64 number of `set_migration_flag(int flag, int *result)`, the
/// paper's system call, added by the test kernel's patch (not upstream).
pub const NR_SET_MIGRATION_FLAG: i64 = 499;

/// Every `/dev/mld` ioctl with its C name, for golden tests and tools.
pub const ALL: [(&str, u32); 6] = [
    ("SET_MIGRATION_FLAG", SET_MIGRATION_FLAG),
    ("MLD_IOC_LOCK", MLD_IOC_LOCK),
    ("MLD_IOC_UNLOCK", MLD_IOC_UNLOCK),
    ("MLD_IOC_RENEW", MLD_IOC_RENEW),
    ("MLD_IOC_STATUS", MLD_IOC_STATUS),
    ("MLD_IOC_HINTS", MLD_IOC_HINTS),
];

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values: these numbers are ABI and must never change.
    #[test]
    fn ioctl_numbers_are_stable() {
        assert_eq!(SET_MIGRATION_FLAG, 0x4004_b900);
        assert_eq!(MLD_IOC_LOCK, 0x4030_b901);
        assert_eq!(MLD_IOC_UNLOCK, 0x4004_b902);
        assert_eq!(MLD_IOC_RENEW, 0x4008_b903);
        assert_eq!(MLD_IOC_STATUS, 0x8040_b904);
    }

    #[test]
    fn ioc_matches_kernel_layout() {
        assert_eq!(ioc(IOC_READ | IOC_WRITE, 0xB9, 0x12, 0x40), 0xc040_b912);
        assert_eq!(ioc(IOC_NONE, 0xB9, 0x01, 0), 0x0000_b901);
    }
}
