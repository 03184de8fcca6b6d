// SPDX-License-Identifier: GPL-2.0

//! Waiting that `poll()` can see: a condition variable pollers register on,
//! and the `poll_table` of one `poll()` call.
//!
//! Stands in for upstream's `kernel::sync::poll::{PollCondVar, PollTable}`
//! (6.12's `CondVar` keeps its wait queue private). Remove when the kernel
//! crate has `kernel::sync::poll`.

use super::bindings as mb;
use core::{marker::PhantomData, ptr};
use kernel::{bindings, prelude::*, str::CStr, types::Opaque};

/// A lockdep class key in static storage, as lockdep requires.
pub(crate) struct StaticKey(Opaque<bindings::lock_class_key>);

// SAFETY: `lock_class_key` is designed for concurrent use by lockdep.
unsafe impl Sync for StaticKey {}

impl StaticKey {
    /// A key; only its address matters.
    pub(crate) const fn new() -> Self {
        StaticKey(Opaque::uninit())
    }

    /// The key for C.
    pub(crate) fn as_ptr(&self) -> *mut bindings::lock_class_key {
        self.0.get()
    }
}

/// Initialises a [`PollCondVar`] with a name and a lockdep key of its own,
/// as `new_condvar!` does for `CondVar`.
macro_rules! new_poll_condvar {
    ($name:literal) => {{
        static KEY: $crate::compat::poll::StaticKey = $crate::compat::poll::StaticKey::new();
        $crate::compat::poll::PollCondVar::new(kernel::c_str!($name), &KEY)
    }};
}
pub(crate) use new_poll_condvar;

/// A wait queue that `poll()` can register on, woken with
/// [`PollCondVar::notify_all`].
///
/// Dropping it first tells every poller still registered that it goes
/// away (`wake_up_pollfree`, which makes epoll drop its entry) and waits an
/// RCU grace period, so a registration can never outlive it: that is what
/// makes [`PollTable::register_wait`] safe for any `PollCondVar`.
#[pin_data(PinnedDrop)]
pub(crate) struct PollCondVar {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
}

// SAFETY: a wait queue head is used concurrently by design, under its own lock.
unsafe impl Send for PollCondVar {}
// SAFETY: as above.
unsafe impl Sync for PollCondVar {}

impl PollCondVar {
    /// Initialises it in place; see [`new_poll_condvar!`].
    pub(crate) fn new(name: &'static CStr, key: &'static StaticKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; the name and key are static.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.as_ptr())
            }),
        })
    }

    /// Wakes every waiter and poller (`wake_up_all`); callable from any
    /// context, softirq included.
    pub(crate) fn notify_all(&self) {
        // SAFETY: the head was initialised in `new` and is pinned.
        unsafe { bindings::__wake_up(self.head.get(), bindings::TASK_NORMAL, 0, ptr::null_mut()) };
    }
}

#[pinned_drop]
impl PinnedDrop for PollCondVar {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: the head was initialised in `new` and is still pinned;
        // `__wake_up_pollfree` removes the entries of pollers that support
        // it and wakes the others with `POLLFREE`.
        unsafe { bindings::__wake_up_pollfree(self.head.get()) };
        // Pollers may still be looking at the head under RCU (epoll does).
        // SAFETY: called in process context (the owner is dropped at
        // module unload or file release), where sleeping is allowed.
        unsafe { bindings::synchronize_rcu() };
    }
}

/// The `poll_table` of one `poll()`/`select()`/`epoll` call, handed to
/// [`crate::compat::miscdevice::MiscDevice::poll`]; it cannot outlive the call.
pub(crate) struct PollTable<'a> {
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
    _call: PhantomData<&'a ()>,
}

impl PollTable<'_> {
    /// The table of one poll call on `file`.
    ///
    /// # Safety
    ///
    /// `file` is the file being polled and `table` its (possibly null)
    /// `poll_table`, both valid for the lifetime of the returned value,
    /// which must not outlive the `poll` callback that received them.
    pub(crate) unsafe fn from_raw(
        file: *mut bindings::file,
        table: *mut bindings::poll_table_struct,
    ) -> Self {
        PollTable {
            file,
            table,
            _call: PhantomData,
        }
    }

    /// Registers `cv` so that notifying it wakes this poller (`poll_wait()`).
    pub(crate) fn register_wait(&self, cv: &PollCondVar) {
        if self.table.is_null() {
            return;
        }
        // 6.12's bindings see `poll_table_struct` as opaque; ours have its
        // fields (generated from <linux/poll.h>).
        let table = self.table.cast::<mb::poll_table_struct>();
        // SAFETY: a non-null table is valid for the duration of the call
        // (see `from_raw`).
        if let Some(qproc) = unsafe { (*table)._qproc } {
            // SAFETY: `file` and `table` are the live arguments of this poll
            // call; `cv` is initialised and, whatever its owner, tells every
            // registration before it goes away (see `PollCondVar`).
            unsafe { qproc(self.file, cv.head.get(), table) };
        }
    }
}
