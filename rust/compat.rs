// SPDX-License-Identifier: GPL-2.0

//! Stand-ins for what Linux 6.12's `kernel` crate does not have yet.
//!
//! Every file here is the thin `unsafe` layer for one kernel object, shaped
//! like the upstream abstraction it stands in for and saying when it can
//! go; the rest of the module uses only their safe interfaces, so moving
//! to a newer kernel deletes files here instead of editing logic. Nothing
//! outside this directory contains `unsafe`.

pub(crate) mod bindings;
pub(crate) mod cred;
pub(crate) mod delayed_work;
pub(crate) mod errno;
pub(crate) mod ioport;
pub(crate) mod irq;
pub(crate) mod kunit;
pub(crate) mod miscdevice;
pub(crate) mod param;
pub(crate) mod poll;
pub(crate) mod random;
#[cfg(miglock_syscall)]
pub(crate) mod syscall;
pub(crate) mod sysfs;
pub(crate) mod timer;
pub(crate) mod uapi;
pub(crate) mod x86;

use kernel::bindings as kb;

extern "C" {
    /// This module's `struct module`, defined by modpost. Declared as a byte
    /// because only its address is ever used (`struct module` itself is not
    /// FFI-safe in 6.12's bindings).
    static __this_module: u8;
}

/// `THIS_MODULE` as a constant pointer, for statics and vtables (6.12's
/// `ThisModule` is only handed to `init`).
pub(crate) const fn this_module() -> *mut kb::module {
    // (Older compilers require `unsafe` here, newer warn.)
    #[allow(unused_unsafe)]
    // SAFETY: only the address is taken; modpost defines `__this_module`.
    unsafe {
        core::ptr::addr_of!(__this_module).cast_mut().cast()
    }
}
