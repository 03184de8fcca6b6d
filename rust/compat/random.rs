// SPDX-License-Identifier: GPL-2.0

//! Random numbers from the kernel's CRNG (`get_random_u64()`).
//!
//! Remove when the kernel crate wraps `get_random_*`.

/// A random `u64`.
pub(crate) fn u64() -> u64 {
    // SAFETY: `get_random_u64` has no preconditions and may be called from
    // any context.
    unsafe { kernel::bindings::get_random_u64() }
}
