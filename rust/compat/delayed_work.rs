// SPDX-License-Identifier: GPL-2.0

//! Delayed work (`struct delayed_work`) run on an [`Arc`]: process-context
//! work at a later time, queued on `system_wq`.
//!
//! The queued work owns one reference to its object, taken when it is queued
//! and handed to [`DelayedWorkItem::run`], so the object outlives the work.
//! [`DelayedWork::cancel`] (for teardown) waits for a running item and gives
//! back the reference of a pending one. Stands in for upstream's
//! `kernel::workqueue::DelayedWork`, which Linux 6.12 lacks; remove with it.

use super::poll::StaticKey;
use kernel::{bindings, prelude::*, str::CStr, sync::Arc, types::Opaque};

/// An object with a [`DelayedWork`] field that runs it.
///
/// # Safety
///
/// [`HasDelayedWork::delayed_work_ptr`] and [`HasDelayedWork::from_work_ptr`]
/// must be exact inverses over one field of type `DelayedWork<Self>`, as
/// [`impl_has_delayed_work!`] writes them.
pub(crate) unsafe trait HasDelayedWork: Sized + Send + Sync {
    /// The field of `this`.
    ///
    /// # Safety
    ///
    /// `this` points at a live `Self`.
    unsafe fn delayed_work_ptr(this: *const Self) -> *const DelayedWork<Self>;

    /// The object whose field `w` is.
    ///
    /// # Safety
    ///
    /// `w` is the field of a live `Self`.
    unsafe fn from_work_ptr(w: *const DelayedWork<Self>) -> *const Self;
}

/// Initialises a [`DelayedWork`] with a name and a lockdep key of its own.
macro_rules! new_delayed_work {
    ($name:literal) => {{
        static KEY: $crate::compat::poll::StaticKey = $crate::compat::poll::StaticKey::new();
        $crate::compat::delayed_work::DelayedWork::new(kernel::c_str!($name), &KEY)
    }};
}
pub(crate) use new_delayed_work;

/// Implements [`HasDelayedWork`] for `$ty` over its field `$field`.
macro_rules! impl_has_delayed_work {
    ($ty:ty, $field:ident) => {
        // SAFETY: both functions go through the same field, one the inverse
        // of the other.
        unsafe impl $crate::compat::delayed_work::HasDelayedWork for $ty {
            unsafe fn delayed_work_ptr(
                this: *const Self,
            ) -> *const $crate::compat::delayed_work::DelayedWork<Self> {
                // SAFETY: the caller passes a live object.
                unsafe { ::core::ptr::addr_of!((*this).$field) }
            }

            unsafe fn from_work_ptr(
                w: *const $crate::compat::delayed_work::DelayedWork<Self>,
            ) -> *const Self {
                // SAFETY: the caller passes the field of a live object.
                unsafe { ::kernel::container_of!(w, $ty, $field) }
            }
        }
    };
}
pub(crate) use impl_has_delayed_work;

/// What runs.
pub(crate) trait DelayedWorkItem: HasDelayedWork {
    /// The work is due; `this` is the reference the queueing took.
    fn run(this: Arc<Self>);
}

/// A `delayed_work` that runs its containing `T`.
#[pin_data]
#[repr(transparent)]
pub(crate) struct DelayedWork<T> {
    #[pin]
    raw: Opaque<bindings::delayed_work>,
    _t: core::marker::PhantomData<T>,
}

// SAFETY: the workqueue core serialises access to `raw`; `T` is only
// reached through an `Arc`, which is `Send + Sync` for `T: Send + Sync`.
unsafe impl<T: Send + Sync> Send for DelayedWork<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for DelayedWork<T> {}

/// # Safety
///
/// `w` is the `work` of the `delayed_work` of a [`DelayedWork<T>`] field,
/// queued by [`DelayedWork::run_in`], which leaked one `Arc<T>` for it.
unsafe extern "C" fn work_fn<T: DelayedWorkItem>(w: *mut bindings::work_struct) {
    // SAFETY: per the contract, `w` is the `work` field of a `delayed_work`.
    let dw = unsafe { kernel::container_of!(w, bindings::delayed_work, work) };
    // `DelayedWork` is `repr(transparent)` over `Opaque<delayed_work>`, itself
    // `repr(transparent)`.
    let field = dw.cast::<DelayedWork<T>>();
    // SAFETY: `field` is the field of a live `T`: the leaked `Arc` keeps it.
    let this = unsafe { T::from_work_ptr(field) };
    // SAFETY: the reference `run_in` leaked for this run; ownership is ours.
    T::run(unsafe { Arc::from_raw(this) });
}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// Delayed work that runs `T::run`.
    pub(crate) fn new(name: &'static CStr, key: &'static StaticKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; this is INIT_DELAYED_WORK.
            raw <- Opaque::ffi_init(|slot: *mut bindings::delayed_work| unsafe {
                bindings::init_work_with_key(
                    core::ptr::addr_of_mut!((*slot).work),
                    Some(work_fn::<T>),
                    false,
                    name.as_char_ptr(),
                    key.as_ptr(),
                );
                bindings::init_timer_key(
                    core::ptr::addr_of_mut!((*slot).timer),
                    Some(bindings::delayed_work_timer_fn),
                    bindings::TIMER_IRQSAFE,
                    core::ptr::null(),
                    core::ptr::null_mut(),
                );
            }),
            _t: core::marker::PhantomData,
        })
    }

    fn raw_of(this: &Arc<T>) -> *mut bindings::delayed_work {
        // SAFETY: `*this` is alive.
        let field = unsafe { T::delayed_work_ptr(&**this) };
        // SAFETY: `field` is the field of the live `*this`.
        unsafe { Opaque::raw_get(core::ptr::addr_of!((*field).raw)) }
    }

    /// Runs `this`'s work `delay_ns` from now (rounded up to a jiffy): a
    /// pending run is moved to that time. Any context.
    pub(crate) fn run_in(this: &Arc<T>, delay_ns: u64) {
        let raw = Self::raw_of(this);
        let delay = match delay_ns {
            0 => 0,
            // SAFETY: as above.
            d => unsafe { bindings::nsecs_to_jiffies(d) }.saturating_add(1),
        };
        let leaked = Arc::into_raw(this.clone());
        // SAFETY: `raw` was initialised in `new` and lives as long as `*this`,
        // which the leaked reference keeps alive until the work runs.
        let was_pending = unsafe {
            bindings::mod_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                bindings::system_wq,
                raw,
                delay as _,
            )
        };
        if was_pending {
            // The pending run keeps the reference it took: give ours back.
            // SAFETY: `leaked` came from `Arc::into_raw` just above and the
            // work did not take it.
            drop(unsafe { Arc::from_raw(leaked) });
        }
    }

    /// Cancels a pending run (giving back its reference) and waits for a
    /// running one, which cannot queue itself again meanwhile.
    pub(crate) fn cancel(this: &Arc<T>) {
        let raw = Self::raw_of(this);
        // SAFETY: `raw` was initialised in `new`; `*this` is alive.
        if unsafe { bindings::cancel_delayed_work_sync(raw) } {
            // SAFETY: a pending run held the reference `run_in` leaked; it
            // will not run now, so the reference is ours to drop.
            // `Arc::into_raw` gave the address of the object, as `&**this`.
            drop(unsafe { Arc::from_raw(&**this as *const T) });
        }
    }
}
