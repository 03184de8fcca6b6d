// SPDX-License-Identifier: GPL-2.0

//! Who the calling task is allowed to be.
//!
//! Remove when the kernel crate has `capable()` and group membership
//! (`kernel::cred`).

use kernel::bindings;

/// Whether the current task has `CAP_SYS_ADMIN` (in the initial namespace).
pub(crate) fn is_admin() -> bool {
    // SAFETY: `capable` only reads the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
}

/// Whether the current task is a member of group `gid` (in the initial user
/// namespace, where module parameters live and kgid equals gid).
pub(crate) fn in_group(gid: u32) -> bool {
    let kgid = bindings::kgid_t { val: gid };
    // SAFETY: `in_group_p` only reads the current task's credentials.
    unsafe { bindings::in_group_p(kgid) != 0 }
}
