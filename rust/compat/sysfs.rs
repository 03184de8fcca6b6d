// SPDX-License-Identifier: GPL-2.0

//! A directory of read-only sysfs files under `/sys/kernel/`.
//!
//! The logic implements [`Show`] (what each file says, written into a
//! [`Page`]); this file owns the kobject, the attributes and the `show`
//! callback. Remove when the kernel crate can create sysfs attributes.

use core::{
    fmt::{self, Write},
    marker::PhantomData,
    mem::MaybeUninit,
    ptr,
};
use kernel::{bindings, ffi::c_char, prelude::*, str::CStr, sync::Arc};

/// What the files of a [`Directory`] show.
pub(crate) trait Show: Send + Sync {
    /// Writes file `file` (an index into the names given to
    /// [`Directory::create`]).
    fn show(&self, file: usize, out: &mut Page<'_>) -> fmt::Result;
}

/// sysfs's output page for one `show` call; a write that does not fit is
/// cut at the page's end and fails.
pub(crate) struct Page<'a> {
    buf: *mut c_char,
    len: usize,
    _page: PhantomData<&'a mut [u8]>,
}

impl Write for Page<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = (bindings::PAGE_SIZE - 1).saturating_sub(self.len);
        let n = s.len().min(room);
        // SAFETY: `buf` is sysfs's page (see `show_callback`) and
        // `len + n` stays below `PAGE_SIZE`.
        unsafe { ptr::copy_nonoverlapping(s.as_ptr(), self.buf.add(self.len).cast(), n) };
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// One file: the attribute sysfs knows and what it shows.
#[repr(C)]
struct Attr<T: Show> {
    raw: bindings::kobj_attribute,
    file: usize,
    data: *const T,
}

/// Lockdep wants a static key for each attribute it may track.
#[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
static KEY: super::poll::StaticKey = super::poll::StaticKey::new();

/// `/sys/kernel/<name>/`; removed when dropped.
pub(crate) struct Directory<T: Show> {
    kobj: *mut bindings::kobject,
    // The attributes, their list and group stay where they are (heap) for
    // as long as the files exist; `data` is what they show.
    _attrs: KVec<Attr<T>>,
    _list: KVec<*mut bindings::attribute>,
    _group: KBox<bindings::attribute_group>,
    _data: Arc<T>,
}

// SAFETY: the kobject pointer is only used to remove it, which may happen
// from any thread; the raw pointers in the attributes point into `_data`,
// which is `Send + Sync`.
unsafe impl<T: Show> Send for Directory<T> {}
// SAFETY: no `&self` method exists.
unsafe impl<T: Show> Sync for Directory<T> {}

impl<T: Show> Directory<T> {
    /// Creates `/sys/kernel/<name>/` with the read-only `files`, showing
    /// `data`.
    pub(crate) fn create(
        name: &'static CStr,
        files: &'static [&'static CStr],
        data: Arc<T>,
    ) -> Result<Self> {
        let mut attrs = KVec::with_capacity(files.len(), GFP_KERNEL)?;
        for (i, f) in files.iter().enumerate() {
            // SAFETY: all-zero is a valid `kobj_attribute` (null pointers,
            // no callbacks).
            let mut raw: bindings::kobj_attribute = unsafe { MaybeUninit::zeroed().assume_init() };
            raw.attr.name = f.as_char_ptr();
            raw.attr.mode = 0o444;
            raw.show = Some(show_callback::<T>);
            #[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
            {
                raw.attr.key = KEY.0.get();
            }
            // Within the capacity: the buffer never moves.
            attrs.push(
                Attr {
                    raw,
                    file: i,
                    data: ptr::from_ref::<T>(&data),
                },
                GFP_KERNEL,
            )?;
        }
        let mut list = KVec::with_capacity(files.len() + 1, GFP_KERNEL)?;
        for a in attrs.iter_mut() {
            list.push(ptr::addr_of_mut!(a.raw.attr), GFP_KERNEL)?;
        }
        list.push(ptr::null_mut(), GFP_KERNEL)?;
        // SAFETY: all-zero is a valid `attribute_group` (no name: the files
        // go in the kobject's own directory).
        let mut group: bindings::attribute_group = unsafe { MaybeUninit::zeroed().assume_init() };
        group.attrs = list.as_mut_ptr();
        let group = KBox::new(group, GFP_KERNEL)?;
        // SAFETY: `kernel_kobj` is initialised at boot and never freed; the
        // name is a static C string.
        let kobj =
            unsafe { bindings::kobject_create_and_add(name.as_char_ptr(), bindings::kernel_kobj) };
        if kobj.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `kobj` is live; the group and what it points to stay in
        // place until `drop` removes the kobject.
        let r = unsafe { bindings::sysfs_create_group(kobj, &*group) };
        if r != 0 {
            // SAFETY: drops the reference `kobject_create_and_add` returned.
            unsafe { bindings::kobject_put(kobj) };
            return Err(Error::from_errno(r));
        }
        Ok(Directory {
            kobj,
            _attrs: attrs,
            _list: list,
            _group: group,
            _data: data,
        })
    }
}

impl<T: Show> Drop for Directory<T> {
    fn drop(&mut self) {
        // SAFETY: `kobj` came from `kobject_create_and_add` and this is its
        // last reference; removing the files waits for `show` calls in
        // progress, so none runs once the fields below are dropped.
        unsafe { bindings::kobject_put(self.kobj) };
    }
}

/// # Safety
///
/// Called by sysfs with one of the attributes of a live [`Directory<T>`]
/// and a page-sized buffer.
unsafe extern "C" fn show_callback<T: Show>(
    _kobj: *mut bindings::kobject,
    attr: *mut bindings::kobj_attribute,
    buf: *mut c_char,
) -> isize {
    // SAFETY: `attr` is the `raw` field of an `Attr<T>` of a live directory.
    let a = unsafe { &*kernel::container_of!(attr, Attr<T>, raw) };
    // SAFETY: `data` points into the `Arc<T>` the directory holds until the
    // files are gone.
    let data = unsafe { &*a.data };
    let mut page = Page {
        buf,
        len: 0,
        _page: PhantomData,
    };
    // A file cut at the page's end still shows what fitted.
    let _ = data.show(a.file, &mut page);
    page.len as isize
}
