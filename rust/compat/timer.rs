// SPDX-License-Identifier: GPL-2.0

//! A one-shot kernel timer (`struct timer_list`) that owns what it calls.
//!
//! The callback is a trait the logic implements ([`TimerCallback`]), run in
//! softirq context on the object the timer owns; the timer is cancelled
//! (waiting for a running callback) before that object is dropped, so the
//! callback can never see freed memory and no user needs `unsafe` or
//! `container_of!`. Stands in for upstream's timer abstractions
//! (`kernel::time::hrtimer`); remove when the kernel crate has one.

use kernel::{bindings, prelude::*, time::Ktime, types::Opaque};

/// Sleeps about `us` microseconds (process context only).
pub(crate) fn sleep_us(us: u32) {
    let us = u64::from(us);
    // SAFETY: callers run in process context, where sleeping is allowed;
    // uninterruptible, as `usleep_range()` sleeps.
    unsafe {
        bindings::usleep_range_state(us as _, (us + us / 4) as _, bindings::TASK_UNINTERRUPTIBLE)
    };
}

/// `CLOCK_MONOTONIC` in nanoseconds: what leases and timings count in.
pub(crate) fn now_ns() -> u64 {
    // CLOCK_MONOTONIC is never negative.
    Ktime::ktime_get().to_ns().max(0) as u64
}

/// What a timer does when it fires. Runs in softirq context: must not sleep
/// or take sleeping locks.
pub(crate) trait TimerCallback: Sync {
    /// The timer fired.
    fn run(&self);
}

/// A `timer_list` and the callback object it runs.
#[pin_data(PinnedDrop)]
pub(crate) struct Timer<C: TimerCallback> {
    #[pin]
    raw: Opaque<bindings::timer_list>,
    #[pin]
    callback: C,
}

// SAFETY: timers are armed and cancelled from any context by design; the
// callback object is `Sync` and only shared through `&`.
unsafe impl<C: TimerCallback + Send> Send for Timer<C> {}
// SAFETY: as above; the timer core serialises access to `raw`.
unsafe impl<C: TimerCallback> Sync for Timer<C> {}

/// # Safety
///
/// `t` is the `raw` field of a live, pinned [`Timer<C>`]: its drop cancels
/// the timer synchronously before `callback` goes away.
unsafe extern "C" fn fired<C: TimerCallback>(t: *mut bindings::timer_list) {
    // SAFETY: per the contract; `Opaque` is `repr(transparent)`, so the
    // `timer_list` pointer is the field's.
    let timer =
        unsafe { &*kernel::container_of!(t.cast::<Opaque<bindings::timer_list>>(), Timer<C>, raw) };
    timer.callback.run();
}

impl<C: TimerCallback> Timer<C> {
    /// A timer that runs `callback` when it fires.
    pub(crate) fn new(callback: impl PinInit<C>) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; no name or lockdep key.
            raw <- Opaque::ffi_init(|slot| unsafe {
                bindings::init_timer_key(slot, Some(fired::<C>), 0, core::ptr::null(), core::ptr::null_mut())
            }),
            callback <- callback,
        })
    }

    /// The callback object.
    pub(crate) fn callback(&self) -> &C {
        &self.callback
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
}

#[pinned_drop]
impl<C: TimerCallback> PinnedDrop for Timer<C> {
    fn drop(self: Pin<&mut Self>) {
        // Before `callback` is dropped: no callback runs or can start after
        // this returns.
        // SAFETY: the timer was initialised in `new` and is pinned.
        unsafe { bindings::timer_delete_sync(self.raw.get()) };
    }
}
