// SPDX-License-Identifier: GPL-2.0

//! A wait queue that `poll()` can register on.
//!
//! 6.12's `CondVar` keeps its `wait_queue_head` private, so `poll_wait()`
//! cannot use it; this is the minimal wrapper that can.

use core::ptr;
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
}

/// A `wait_queue_head_t`.
#[pin_data]
pub(crate) struct WaitQueue {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
}

// SAFETY: a wait queue head is used concurrently by design, under its own lock.
unsafe impl Send for WaitQueue {}
// SAFETY: as above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// Initialises a wait queue in place.
    pub(crate) fn new(name: &'static CStr, key: &'static StaticKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; the name and key are static.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.0.get())
            }),
        })
    }

    /// Wakes every waiter (`wake_up_all`); callable from any context.
    pub(crate) fn wake_all(&self) {
        // SAFETY: the head was initialised in `new` and is pinned.
        unsafe { bindings::__wake_up(self.head.get(), bindings::TASK_NORMAL, 0, ptr::null_mut()) };
    }

    /// The raw head, for [`crate::miscdev::PollTable`].
    pub(crate) fn as_ptr(&self) -> *mut bindings::wait_queue_head {
        self.head.get()
    }
}
