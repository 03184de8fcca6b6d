// SPDX-License-Identifier: GPL-2.0

//! A threaded interrupt handler.
//!
//! The handler runs in a kernel thread (process context), so it may take
//! mutexes and sleep; the line stays masked until it returns
//! (`IRQF_ONESHOT`).

use core::ffi::c_void;
use kernel::{bindings, error::to_result, prelude::*, str::CStr, sync::Arc};

/// What a threaded interrupt does.
pub(crate) trait Handler: Send + Sync {
    /// Handles one interrupt; returns whether it was ours.
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
                None,
                Some(thread_fn::<T>),
                bindings::IRQF_ONESHOT as _,
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
