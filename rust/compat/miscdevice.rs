// SPDX-License-Identifier: GPL-2.0

//! Misc character devices (`struct miscdevice`).
//!
//! A driver implements [`MiscDevice`] with safe code; this file owns the
//! `file_operations` callbacks and the per-file pointer in `private_data`.
//! As upstream, the vtable is built at compile time from what the type
//! implements (`#[vtable]`), and a device with `ioctl` gets
//! `compat_ptr_ioctl` for 32-bit callers (its structures are compat-clean).
//!
//! Stands in for upstream's `kernel::miscdevice` (which hands `open` the
//! registration rather than a context, and has no `poll`); remove when the
//! kernel crate has it.

use super::bindings as mb;
use super::poll::PollTable;
use core::{marker::PhantomPinned, mem::MaybeUninit, pin::Pin};
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_int, c_long, c_uint, c_ulong},
    prelude::*,
    str::CStr,
    types::{ForeignOwnable, Opaque},
};

/// What a misc device does when its node is opened and used.
#[vtable]
pub(crate) trait MiscDevice: Sized {
    /// Shared by the registration and handed to [`MiscDevice::open`].
    type Ctx: Sync;
    /// What each open file owns; dropped at close.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called for each `open()`.
    fn open(ctx: &Self::Ctx) -> Result<Self::Ptr>;

    /// Called at the last `close()` of a file; drops what `open` made.
    fn release(device: Self::Ptr) {
        drop(device);
    }

    /// Called for each `ioctl()` (and, with `CONFIG_COMPAT`, for 32-bit
    /// callers through `compat_ptr_ioctl`); the return value is the
    /// syscall's.
    fn ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called for `poll()`/`select()`/`epoll`: registers what signals
    /// readiness on `table` and returns the ready `EPOLL*` mask.
    fn poll(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _table: &PollTable<'_>) -> u32 {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// `EPOLLIN`: readable.
pub(crate) const EPOLLIN: u32 = 0x0001;
/// `EPOLLRDNORM`: normal data readable.
pub(crate) const EPOLLRDNORM: u32 = 0x0040;

/// The `file_operations` of a [`MiscDevice`], built at compile time.
struct VTable<T>(core::marker::PhantomData<T>);

impl<T: MiscDevice> VTable<T> {
    const VTABLE: bindings::file_operations = bindings::file_operations {
        // The module cannot unload while one of its files is open.
        owner: super::this_module(),
        open: Some(open_callback::<T>),
        release: Some(release_callback::<T>),
        unlocked_ioctl: if T::HAS_IOCTL {
            Some(ioctl_callback::<T>)
        } else {
            None
        },
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: if T::HAS_IOCTL {
            Some(bindings::compat_ptr_ioctl)
        } else {
            None
        },
        poll: if T::HAS_POLL {
            Some(poll_callback::<T>)
        } else {
            None
        },
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (no callbacks).
        ..unsafe { MaybeUninit::zeroed().assume_init() }
    };
}

/// Where and how the node appears.
pub(crate) struct MiscDeviceOptions {
    /// `/dev/<name>`.
    pub(crate) name: &'static CStr,
    /// Permission bits of the node.
    pub(crate) mode: u16,
}

/// A registered misc device; deregistered when dropped.
pub(crate) struct MiscDeviceRegistration<T: MiscDevice> {
    misc: Opaque<mb::miscdevice>,
    fops: Opaque<bindings::file_operations>,
    ctx: T::Ctx,
    registered: bool,
    _pin: PhantomPinned,
}

// SAFETY: after registration the C side only reads `misc` and `fops`, under
// its own locking; `ctx` is `Sync`.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}
// SAFETY: the registration may be dropped from any thread; `misc_deregister`
// has no thread affinity.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> where T::Ctx: Send {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers the node `opts` describes; each `open` gets `ctx`.
    pub(crate) fn register(opts: MiscDeviceOptions, ctx: T::Ctx) -> Result<Pin<KBox<Self>>> {
        let mut reg = KBox::pin(
            Self {
                misc: Opaque::uninit(),
                fops: Opaque::uninit(),
                ctx,
                registered: false,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: nothing is moved out of the pinned allocation below.
        let this = unsafe { reg.as_mut().get_unchecked_mut() };
        // SAFETY: `fops` is valid for writes and not yet shared.
        unsafe { this.fops.get().write(VTable::<T>::VTABLE) };

        // SAFETY: all-zero is a valid `miscdevice` (null pointers, empty list).
        let mut misc: mb::miscdevice = unsafe { MaybeUninit::zeroed().assume_init() };
        misc.minor = mb::MISC_DYNAMIC_MINOR as c_int;
        misc.name = opts.name.as_char_ptr();
        misc.fops = this.fops.get();
        misc.mode = opts.mode;
        // SAFETY: `misc` is valid for writes and not yet shared.
        unsafe { this.misc.get().write(misc) };

        // SAFETY: `misc` is initialised and pinned for as long as it is
        // registered: `Drop` deregisters it before the memory goes away.
        to_result(unsafe { mb::misc_register(this.misc.get()) })?;
        this.registered = true;
        Ok(reg)
    }
}

impl<T: MiscDevice> Drop for MiscDeviceRegistration<T> {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: registered in `register` and not deregistered since.
            unsafe { mb::misc_deregister(self.misc.get()) };
        }
    }
}

/// # Safety
///
/// Called by the VFS with a valid `file` whose `private_data` is the
/// `miscdevice` of a live [`MiscDeviceRegistration<T>`] (set by `misc_open`).
unsafe extern "C" fn open_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: per the function's contract `file` is valid.
    let misc = unsafe { (*file).private_data }.cast::<mb::miscdevice>();
    // SAFETY: `misc` is the `misc` field of a `MiscDeviceRegistration<T>`,
    // which stays registered (and so alive) while one of its files is
    // being opened.
    let reg = unsafe { &*kernel::container_of!(misc, MiscDeviceRegistration<T>, misc) };
    match T::open(&reg.ctx) {
        Ok(ptr) => {
            // SAFETY: `file` is valid; the pointer is taken back in release.
            unsafe { (*file).private_data = ptr.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the VFS once per file opened by [`open_callback`].
unsafe extern "C" fn release_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` came from `into_foreign` in open and this is the
    // last use of it, so ownership is taken back exactly once.
    T::release(unsafe { T::Ptr::from_foreign((*file).private_data) });
    0
}

/// # Safety
///
/// Called by the VFS with a file opened by [`open_callback`] and not released.
unsafe extern "C" fn ioctl_callback<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: the file is open, so `private_data` is the pointer from open;
    // the borrow ends before release can run.
    let data = unsafe { T::Ptr::borrow((*file).private_data) };
    match T::ioctl(data, cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Called by the VFS with a file opened by [`open_callback`] and not released.
unsafe extern "C" fn poll_callback<T: MiscDevice>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: as in `ioctl_callback`.
    let data = unsafe { T::Ptr::borrow((*file).private_data) };
    // SAFETY: `file` and `table` are this call's arguments, and the table
    // lives on this frame only.
    let table = unsafe { PollTable::from_raw(file, table) };
    T::poll(data, &table)
}
