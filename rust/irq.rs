// SPDX-License-Identifier: GPL-2.0

//! A threaded interrupt handler with a quiescing primary handler.
//!
//! The primary handler runs in hard-interrupt context and only silences the
//! device (so an edge-triggered ISA line can rise again later); the thread
//! then does the work in process context, where it may take mutexes and
//! sleep, and lets the device interrupt again. Masking the line instead
//! (`IRQF_ONESHOT`) would lose an edge that arrives while the thread runs.

use core::ffi::c_void;
use kernel::{bindings, error::to_result, prelude::*, str::CStr, sync::Arc};

/// What a threaded interrupt does.
pub(crate) trait Handler: Send + Sync {
    /// Hard-interrupt context: silence the device; false if it was not ours.
    /// Must not sleep or take sleeping locks.
    fn quiesce(&self) -> bool;

    /// Thread context: handle the interrupt, then let the device interrupt
    /// again; returns whether there was anything to do.
    fn handle(&self) -> bool;
}

/// A requested interrupt line; freed when dropped.
pub(crate) struct Irq<T: Handler> {
    irq: u32,
    handler: Arc<T>,
}

/// # Safety
///
/// `data` is the `Arc<T>` pointer passed to `request_threaded_irq` by
/// [`Irq::request`], alive until `free_irq` returns.
unsafe extern "C" fn primary_fn<T: Handler>(_irq: i32, data: *mut c_void) -> bindings::irqreturn_t {
    // SAFETY: as for `thread_fn`.
    let h = unsafe { &*data.cast::<T>() };
    if h.quiesce() {
        bindings::irqreturn_IRQ_WAKE_THREAD
    } else {
        bindings::irqreturn_IRQ_NONE
    }
}

/// # Safety
///
/// As for [`primary_fn`].
unsafe extern "C" fn thread_fn<T: Handler>(_irq: i32, data: *mut c_void) -> bindings::irqreturn_t {
    // SAFETY: per the contract, `data` points to a live `T`.
    let h = unsafe { &*data.cast::<T>() };
    if h.handle() {
        bindings::irqreturn_IRQ_HANDLED
    } else {
        bindings::irqreturn_IRQ_NONE
    }
}

impl<T: Handler> Irq<T> {
    /// Requests `irq`, calling `handler` in a thread for each interrupt.
    pub(crate) fn request(irq: u32, name: &'static CStr, handler: Arc<T>) -> Result<Self> {
        let data = core::ptr::from_ref::<T>(&handler)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: `thread_fn::<T>` only uses `data`, which `handler` keeps
        // alive until `drop` frees the line (waiting for a running handler).
        to_result(unsafe {
            bindings::request_threaded_irq(
                irq,
                Some(primary_fn::<T>),
                Some(thread_fn::<T>),
                0,
                name.as_char_ptr(),
                data,
            )
        })?;
        Ok(Irq { irq, handler })
    }
}

impl<T: Handler> Drop for Irq<T> {
    fn drop(&mut self) {
        let data = core::ptr::from_ref::<T>(&self.handler)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: requested in `request` with this `data`; `free_irq` waits
        // for a running handler before returning.
        unsafe { bindings::free_irq(self.irq, data) };
    }
}
