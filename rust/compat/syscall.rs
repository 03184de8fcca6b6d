// SPDX-License-Identifier: GPL-2.0

//! `set_migration_flag(2)`: the paper's system call, through the hook the
//! test kernel's patch adds (patches/0001). Built only against such a kernel.
//!
//! Not a stand-in for an upstream abstraction: a loadable module cannot add
//! a system call, so this is the glue to the one the test kernel forwards.

use super::bindings as mb;
use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{error::to_result, ffi::c_int, ffi::c_long, prelude::*, sync::Arc};

/// What the system call does.
pub(crate) trait SetMigrationFlag: Send + Sync {
    /// `flag` 0 locks, 1 unlocks; returns whether the VM may migrate
    /// afterwards.
    fn set_migration_flag(&self, flag: i32) -> Result<bool>;
}

#[repr(transparent)]
struct Ops(mb::miglock_syscall_ops);

// SAFETY: only read, by the kernel's hook.
unsafe impl Sync for Ops {}
// SAFETY: as above; the raw module pointer is only read, by the kernel.
unsafe impl Send for Ops {}

/// The handler the hook calls; set while registered. The kernel takes one
/// registration at a time, so there is one handler at a time.
static TARGET: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// The registered hook; unregistered when dropped.
pub(crate) struct Registration<T: SetMigrationFlag> {
    ops: KBox<Ops>,
    _handler: Arc<T>,
}

impl<T: SetMigrationFlag> Registration<T> {
    /// Makes `set_migration_flag(2)` call `handler`.
    pub(crate) fn register(handler: Arc<T>) -> Result<Self> {
        let ops = KBox::new(
            Ops(mb::miglock_syscall_ops {
                owner: super::this_module(),
                set_migration_flag: Some(hook::<T>),
            }),
            GFP_KERNEL,
        )?;
        let p = ptr::from_ref::<T>(&handler).cast_mut().cast::<c_void>();
        if TARGET
            .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        // SAFETY: `ops` lives until `drop` unregisters it; the hook only
        // uses `TARGET`, which points into `handler`, held as long.
        if let Err(e) = to_result(unsafe { mb::miglock_register_syscall(&ops.0) }) {
            TARGET.store(ptr::null_mut(), Ordering::Release);
            return Err(e);
        }
        Ok(Registration {
            ops,
            _handler: handler,
        })
    }
}

impl<T: SetMigrationFlag> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `register`. Afterwards no new call reaches
        // the hook; a call in progress holds a reference on this module, so
        // the module (and this drop) cannot be unloading during it.
        unsafe { mb::miglock_unregister_syscall(&self.ops.0) };
        TARGET.store(ptr::null_mut(), Ordering::Release);
    }
}

/// # Safety
///
/// Called by the kernel's `set_migration_flag(2)` with a reference on this
/// module held, and only while a `Registration<T>` is registered (it is
/// the only one that installs `hook::<T>`).
unsafe extern "C" fn hook<T: SetMigrationFlag>(flag: c_int) -> c_long {
    let target = TARGET.load(Ordering::Acquire);
    if target.is_null() {
        return -(kernel::bindings::ENOSYS as c_long);
    }
    // SAFETY: `TARGET` points to the `T` the registration holds until it
    // unregisters, which cannot happen during a call (see `Drop`).
    match unsafe { &*target.cast::<T>() }.set_migration_flag(flag) {
        Ok(may_migrate) => c_long::from(may_migrate),
        Err(e) => e.to_errno() as c_long,
    }
}
