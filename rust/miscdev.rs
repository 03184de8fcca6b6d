// SPDX-License-Identifier: GPL-2.0

//! Misc character devices (`struct miscdevice`).
//!
//! Linux 6.12's kernel crate has no misc-device abstraction; this is the thin
//! unsafe layer for one, modelled on the one later kernels gained. A driver
//! implements [`MiscDevice`] with safe code; this file owns the
//! `file_operations` callbacks and the per-file pointer in `private_data`.

use crate::bindings as mb;
use crate::waitqueue::WaitQueue;
use core::{marker::PhantomPinned, mem::MaybeUninit, pin::Pin};
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_int, c_long, c_uint, c_ulong},
    prelude::*,
    str::CStr,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// What a misc device does when its node is opened and used.
pub(crate) trait MiscDevice: Sized {
    /// Shared by the registration and handed to [`MiscDevice::open`].
    type Ctx: Sync;
    /// What each open file owns; dropped at close.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called for each `open()`.
    fn open(ctx: &Self::Ctx) -> Result<Self::Ptr>;

    /// Called for each `ioctl()`; the return value is the syscall's.
    fn ioctl(
        file: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;

    /// Called for `poll()`/`select()`/`epoll`: registers the wait queues
    /// that signal readiness on `table` and returns the ready `EPOLL*` mask.
    fn poll(file: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, table: &PollTable) -> u32;
}

/// `EPOLLIN`: readable.
pub(crate) const EPOLLIN: u32 = 0x0001;
/// `EPOLLRDNORM`: normal data readable.
pub(crate) const EPOLLRDNORM: u32 = 0x0040;

/// The `poll_table` of one `poll()` call.
pub(crate) struct PollTable {
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
}

impl PollTable {
    /// Registers `wq` so that waking it wakes this poller (`poll_wait()`).
    ///
    /// `wq` must outlive the file: the VFS removes the registration when
    /// the poll call returns (select/poll) or the file is released (epoll).
    pub(crate) fn register(&self, wq: &WaitQueue) {
        if self.table.is_null() {
            return;
        }
        // 6.12's bindings see `poll_table_struct` as opaque; ours have its
        // fields (generated from <linux/poll.h>).
        let table = self.table.cast::<mb::poll_table_struct>();
        // SAFETY: a non-null table is valid for the duration of the call.
        if let Some(qproc) = unsafe { (*table)._qproc } {
            // SAFETY: `file` and `table` are the live arguments of this poll
            // call and `wq` is an initialised wait queue (see above).
            unsafe { qproc(self.file, wq.as_ptr(), table) };
        }
    }
}

/// A registered misc device; deregistered when dropped.
pub(crate) struct Registration<T: MiscDevice> {
    misc: Opaque<mb::miscdevice>,
    fops: Opaque<bindings::file_operations>,
    ctx: T::Ctx,
    registered: bool,
    _pin: PhantomPinned,
}

// SAFETY: after registration the C side only reads `misc` and `fops`, under
// its own locking; `ctx` is `Sync`.
unsafe impl<T: MiscDevice> Sync for Registration<T> {}
// SAFETY: the registration may be dropped from any thread; `misc_deregister`
// has no thread affinity.
unsafe impl<T: MiscDevice> Send for Registration<T> where T::Ctx: Send {}

impl<T: MiscDevice> Registration<T> {
    /// Registers `/dev/<name>` with permission bits `mode`, owned by `module`
    /// (so the module cannot unload while a file is open).
    pub(crate) fn new(
        name: &'static CStr,
        mode: u16,
        module: &'static ThisModule,
        ctx: T::Ctx,
    ) -> Result<Pin<KBox<Self>>> {
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

        // SAFETY: all-zero is a valid `file_operations` (no callbacks).
        let mut fops: bindings::file_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        fops.owner = module.as_ptr();
        fops.open = Some(open_callback::<T>);
        fops.release = Some(release_callback::<T>);
        fops.unlocked_ioctl = Some(ioctl_callback::<T>);
        fops.poll = Some(poll_callback::<T>);
        fops.llseek = Some(bindings::noop_llseek);
        // SAFETY: `fops` is valid for writes and not yet shared.
        unsafe { this.fops.get().write(fops) };

        // SAFETY: all-zero is a valid `miscdevice` (null pointers, empty list).
        let mut misc: mb::miscdevice = unsafe { MaybeUninit::zeroed().assume_init() };
        misc.minor = mb::MISC_DYNAMIC_MINOR as c_int;
        misc.name = name.as_char_ptr();
        misc.fops = this.fops.get();
        misc.mode = mode;
        // SAFETY: `misc` is valid for writes and not yet shared.
        unsafe { this.misc.get().write(misc) };

        // SAFETY: `misc` is initialised and pinned for as long as it is
        // registered: `Drop` deregisters it before the memory goes away.
        to_result(unsafe { mb::misc_register(this.misc.get()) })?;
        this.registered = true;
        Ok(reg)
    }
}

impl<T: MiscDevice> Drop for Registration<T> {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: registered in `new` and not deregistered since.
            unsafe { mb::misc_deregister(self.misc.get()) };
        }
    }
}

/// # Safety
///
/// Called by the VFS with a valid `file` whose `private_data` is the
/// `miscdevice` of a live [`Registration<T>`] (set by `misc_open`).
unsafe extern "C" fn open_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: per the function's contract `file` is valid.
    let misc = unsafe { (*file).private_data }.cast::<mb::miscdevice>();
    // SAFETY: `misc` is the `misc` field of a `Registration<T>`, which stays
    // registered (and so alive) while one of its files is being opened.
    let reg = unsafe { &*kernel::container_of!(misc, Registration<T>, misc) };
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
    drop(unsafe { T::Ptr::from_foreign((*file).private_data) });
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
    T::poll(data, &PollTable { file, table })
}
