// SPDX-License-Identifier: GPL-2.0

//! A threaded interrupt handler whose primary handler silences the device.
//!
//! The primary handler runs in hard-interrupt context and only silences the
//! device (so an edge-triggered ISA line can rise again later); the thread
//! then does the work in process context, where it may take mutexes and
//! sleep, and lets the device interrupt again. Masking the line instead
//! (`IRQF_ONESHOT`) would lose an edge that arrives while the thread runs.
//!
//! Shaped like upstream's `kernel::irq::{ThreadedHandler,
//! ThreadedRegistration}`; remove when the kernel crate has `kernel::irq`.

use core::ffi::c_void;
use kernel::{bindings, error::to_result, prelude::*, str::CStr, sync::Arc};

/// What the primary handler says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadedIrqReturn {
    /// Not this device's interrupt (upstream's shape; unused while the
    /// doorbell is alone on its line).
    #[allow(dead_code)]
    None,
    /// Silenced: run the thread.
    WakeThread,
}

/// What the thread says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IrqReturn {
    /// There was nothing to do.
    None,
    /// Handled.
    Handled,
}

/// What a threaded interrupt does.
pub(crate) trait ThreadedHandler: Send + Sync {
    /// Hard-interrupt context: silence the device. Must not sleep or take
    /// sleeping locks.
    fn handle(&self) -> ThreadedIrqReturn;

    /// Thread context: handle the interrupt, then let the device interrupt
    /// again.
    fn handle_threaded(&self) -> IrqReturn;
}

/// A requested interrupt line; freed when dropped (waiting for a running
/// handler).
pub(crate) struct ThreadedRegistration<T: ThreadedHandler> {
    irq: u32,
    handler: Arc<T>,
}

/// # Safety
///
/// `data` is the `Arc<T>` pointer passed to `request_threaded_irq` by
/// [`ThreadedRegistration::register`], alive until `free_irq` returns.
unsafe extern "C" fn primary_fn<T: ThreadedHandler>(
    _irq: i32,
    data: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: per the contract, `data` points to a live `T`.
    let h = unsafe { &*data.cast::<T>() };
    match h.handle() {
        ThreadedIrqReturn::WakeThread => bindings::irqreturn_IRQ_WAKE_THREAD,
        ThreadedIrqReturn::None => bindings::irqreturn_IRQ_NONE,
    }
}

/// # Safety
///
/// As for [`primary_fn`].
unsafe extern "C" fn thread_fn<T: ThreadedHandler>(
    _irq: i32,
    data: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: per the contract, `data` points to a live `T`.
    let h = unsafe { &*data.cast::<T>() };
    match h.handle_threaded() {
        IrqReturn::Handled => bindings::irqreturn_IRQ_HANDLED,
        IrqReturn::None => bindings::irqreturn_IRQ_NONE,
    }
}

impl<T: ThreadedHandler> ThreadedRegistration<T> {
    /// Requests `irq`, calling `handler` for each interrupt.
    pub(crate) fn register(irq: u32, name: &'static CStr, handler: Arc<T>) -> Result<Self> {
        let data = core::ptr::from_ref::<T>(&handler)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: the handlers only use `data`, which `handler` keeps alive
        // until `drop` frees the line (waiting for a running handler).
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
        Ok(ThreadedRegistration { irq, handler })
    }
}

impl<T: ThreadedHandler> Drop for ThreadedRegistration<T> {
    fn drop(&mut self) {
        let data = core::ptr::from_ref::<T>(&self.handler)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: requested in `register` with this `data`; `free_irq` waits
        // for a running handler before returning.
        unsafe { bindings::free_irq(self.irq, data) };
    }
}
