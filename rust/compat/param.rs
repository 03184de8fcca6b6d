// SPDX-License-Identifier: GPL-2.0

//! Read-only module parameters (`insmod miglock.ko locked=1`).
//!
//! Linux 6.12's `module!` macro has no parameters. Like C's `module_param`,
//! [`module_param!`] places a `struct kernel_param` in the `__param` section,
//! where the module loader finds it and parses the command line into the
//! variable before `init` runs. Parameters are read-only (0444) so the value
//! cannot change after `init` read it.
//!
//! Remove when the kernel's `module!` macro takes `params`.

use core::cell::UnsafeCell;
use kernel::{bindings, ffi::c_void};

/// A parameter's storage, written only by the module loader before `init`.
#[repr(transparent)]
pub(crate) struct Param<T: Copy>(UnsafeCell<T>);

// SAFETY: the loader writes the value before `init` and before any other
// code of the module runs; afterwards it is only read (the sysfs file is
// read-only, so no `set` callback can run).
unsafe impl<T: Copy + Sync> Sync for Param<T> {}

impl<T: Copy> Param<T> {
    /// A parameter with default `v`.
    pub(crate) const fn new(v: T) -> Self {
        Param(UnsafeCell::new(v))
    }

    /// The value (as given at load, or the default).
    pub(crate) fn get(&self) -> T {
        // SAFETY: see the `Sync` impl: no write happens after `init` starts.
        unsafe { *self.0.get() }
    }

    /// The pointer the loader writes through.
    pub(crate) const fn as_arg(&'static self) -> *mut c_void {
        self.0.get().cast()
    }
}

/// A `struct kernel_param` in the `__param` section.
#[repr(transparent)]
pub(crate) struct KernelParam(pub(crate) bindings::kernel_param);

// SAFETY: only read, by the module loader and sysfs, under their locking.
unsafe impl Sync for KernelParam {}

/// A string in the `.modinfo` section, NUL-terminated, as `[u8; N]`.
pub(crate) const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() + 1 == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// `module_param!(VAR, "name", type = default, param_ops_X, "description")`
/// declares `static VAR: Param<type>` as the read-only parameter `name`.
macro_rules! module_param {
    ($var:ident, $name:literal, $ty:ty = $default:expr, $ops:ident, $desc:literal) => {
        pub(crate) static $var: $crate::compat::param::Param<$ty> =
            $crate::compat::param::Param::new($default);

        const _: () = {
            #[used(compiler)]
            #[link_section = "__param"]
            static PARAM: $crate::compat::param::KernelParam =
                $crate::compat::param::KernelParam(kernel::bindings::kernel_param {
                    name: kernel::c_str!($name).as_char_ptr(),
                    mod_: $crate::compat::this_module(),
                    // SAFETY: only the address of the kernel's ops is taken.
                    #[allow(unused_unsafe)]
                    ops: unsafe { core::ptr::addr_of!(kernel::bindings::$ops) },
                    perm: 0o444,
                    level: -1,
                    flags: 0,
                    __bindgen_anon_1: kernel::bindings::kernel_param__bindgen_ty_1 {
                        arg: $var.as_arg(),
                    },
                });

            const DESC: &str = concat!("parm=", $name, ":", $desc);
            #[used(compiler)]
            #[link_section = ".modinfo"]
            static MODINFO: [u8; DESC.len() + 1] = $crate::compat::param::modinfo(DESC);
        };
    };
}
pub(crate) use module_param;
