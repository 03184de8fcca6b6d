// SPDX-License-Identifier: GPL-2.0

//! A one-shot kernel timer (`struct timer_list`), embedded in its owner.
//!
//! 6.12's kernel crate has no timer abstraction. The callback runs in softirq
//! context and receives the timer's address; the owner finds itself with
//! `container_of!` and must keep the timer pinned and cancel it
//! ([`Timer::cancel_sync`]) before it goes away.

use kernel::{bindings, prelude::*, types::Opaque};

/// A `timer_list`; `repr(transparent)` so its address is the timer's.
#[pin_data]
#[repr(transparent)]
pub(crate) struct Timer {
    #[pin]
    raw: Opaque<bindings::timer_list>,
}

// SAFETY: timers are armed and cancelled from any context by design.
unsafe impl Send for Timer {}
// SAFETY: as above; the timer core serialises access.
unsafe impl Sync for Timer {}

impl Timer {
    /// Initialises a timer that calls `func` when it fires.
    ///
    /// # Safety
    ///
    /// `func` may run until [`Timer::cancel_sync`] returns: the owner must
    /// call it before the timer is freed, and `func` may only rely on what
    /// lives at least as long.
    pub(crate) unsafe fn new(
        func: unsafe extern "C" fn(*mut bindings::timer_list),
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; no name or lockdep key.
            raw <- Opaque::ffi_init(|slot| unsafe {
                bindings::init_timer_key(slot, Some(func), 0, core::ptr::null(), core::ptr::null_mut())
            }),
        })
    }

    /// Arms (or re-arms) the timer to fire `delta_ns` from now, rounded up
    /// to the next jiffy.
    pub(crate) fn arm_in(&self, delta_ns: u64) {
        // SAFETY: `nsecs_to_jiffies` is a pure conversion.
        let delta = unsafe { bindings::nsecs_to_jiffies(delta_ns) }.saturating_add(1);
        // SAFETY: `jiffies` is the kernel's tick counter, always readable.
        let now = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(bindings::jiffies)) };
        // SAFETY: the timer was initialised in `new` and is pinned.
        unsafe { bindings::mod_timer(self.raw.get(), now.wrapping_add(delta)) };
    }

    /// Cancels the timer and waits for a running callback to finish.
    pub(crate) fn cancel_sync(&self) {
        // SAFETY: the timer was initialised in `new` and is pinned.
        unsafe { bindings::timer_delete_sync(self.raw.get()) };
    }
}
