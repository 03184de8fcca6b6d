// SPDX-License-Identifier: GPL-2.0

//! `set_migration_flag(2)`: the paper's system call, through the hook the
//! test kernel's patch adds (patches/0001). Built only against such a kernel.

use crate::bindings as mb;
use crate::mld::Shared;
use core::{
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    error::to_result,
    ffi::{c_int, c_long},
    prelude::*,
    sync::Arc,
};

#[repr(transparent)]
struct Ops(mb::miglock_syscall_ops);

// SAFETY: only read, by the kernel's hook.
unsafe impl Sync for Ops {}

static OPS: Ops = Ops(mb::miglock_syscall_ops {
    owner: crate::param::this_module(),
    set_migration_flag: Some(hook),
});

/// The state the hook acts on; set while registered.
static TARGET: AtomicPtr<Shared> = AtomicPtr::new(ptr::null_mut());

/// The registered hook; unregistered when dropped.
pub(crate) struct Syscall {
    _shared: Arc<Shared>,
}

impl Syscall {
    /// Makes `set_migration_flag(2)` act on `shared`.
    pub(crate) fn register(shared: Arc<Shared>) -> Result<Self> {
        TARGET.store(
            ptr::from_ref::<Shared>(&shared).cast_mut(),
            Ordering::Release,
        );
        // SAFETY: `OPS` is static; the hook only uses `TARGET`, valid until
        // `drop` unregisters.
        if let Err(e) = to_result(unsafe { mb::miglock_register_syscall(&OPS.0) }) {
            TARGET.store(ptr::null_mut(), Ordering::Release);
            return Err(e);
        }
        Ok(Syscall { _shared: shared })
    }
}

impl Drop for Syscall {
    fn drop(&mut self) {
        // SAFETY: registered in `register`. Afterwards no new call reaches
        // the hook; a call in progress holds a reference on this module, so
        // the module (and this drop) cannot be unloading during it.
        unsafe { mb::miglock_unregister_syscall(&OPS.0) };
        TARGET.store(ptr::null_mut(), Ordering::Release);
    }
}

/// # Safety
///
/// Called by the kernel's `set_migration_flag(2)` with a reference on this
/// module held.
unsafe extern "C" fn hook(flag: c_int) -> c_long {
    let target = TARGET.load(Ordering::Acquire);
    if target.is_null() {
        return -(kernel::bindings::ENOSYS as c_long);
    }
    // SAFETY: `TARGET` points into the `Arc` that `Syscall` holds until it
    // unregisters, which cannot happen during a call (see `Drop`).
    match unsafe { &*target }.set_flag_detached(flag) {
        Ok(may_migrate) => c_long::from(may_migrate),
        Err(e) => e.to_errno() as c_long,
    }
}
