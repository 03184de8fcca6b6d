// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/miglock/`: the lock state for scripts and monitoring.
//!
//! Read-only files: `state` (locked/unlocked), `holders`, `lease` (ms until
//! the earliest lease ends, 0 if none), `channel` (host channel or local),
//! `holds` (one line per hold: owner, reason, remaining ms, label).

use crate::abi::types::Reason;
use crate::lockstate::table::Owner;
use crate::mld::Shared;
use core::{
    fmt::{self, Write},
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{bindings, c_str, ffi::c_char, prelude::*, str::CStr, sync::Arc};

/// The files, in `holds`-last order.
#[derive(Clone, Copy)]
enum File {
    State,
    Holders,
    Lease,
    Channel,
    Holds,
    ChannelStats,
}

const FILES: [(File, &CStr); 6] = [
    (File::State, c_str!("state")),
    (File::Holders, c_str!("holders")),
    (File::Lease, c_str!("lease")),
    (File::Channel, c_str!("channel")),
    (File::Holds, c_str!("holds")),
    (File::ChannelStats, c_str!("channel_stats")),
];

#[repr(transparent)]
struct Attr(bindings::kobj_attribute);
// SAFETY: only read, by sysfs.
unsafe impl Sync for Attr {}

#[repr(transparent)]
struct AttrList([*mut bindings::attribute; FILES.len() + 1]);
// SAFETY: only read, by sysfs.
unsafe impl Sync for AttrList {}

#[repr(transparent)]
struct Group(bindings::attribute_group);
// SAFETY: only read, by sysfs.
unsafe impl Sync for Group {}

const fn attr(name: &'static CStr) -> Attr {
    // SAFETY: all-zero is a valid `kobj_attribute` (null pointers, no callbacks).
    let mut a: bindings::kobj_attribute = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    a.attr.name = name.as_char_ptr();
    a.attr.mode = 0o444;
    a.show = Some(show_callback);
    Attr(a)
}

static ATTRS: [Attr; FILES.len()] = [
    attr(FILES[0].1),
    attr(FILES[1].1),
    attr(FILES[2].1),
    attr(FILES[3].1),
    attr(FILES[4].1),
    attr(FILES[5].1),
];

static ATTR_LIST: AttrList = AttrList([
    ptr::addr_of!(ATTRS[0].0.attr).cast_mut(),
    ptr::addr_of!(ATTRS[1].0.attr).cast_mut(),
    ptr::addr_of!(ATTRS[2].0.attr).cast_mut(),
    ptr::addr_of!(ATTRS[3].0.attr).cast_mut(),
    ptr::addr_of!(ATTRS[4].0.attr).cast_mut(),
    ptr::addr_of!(ATTRS[5].0.attr).cast_mut(),
    ptr::null_mut(),
]);

static GROUP: Group = Group({
    // SAFETY: all-zero is a valid `attribute_group` (no name: files go in
    // the kobject's own directory).
    let mut g: bindings::attribute_group =
        unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    g.attrs = ATTR_LIST.0.as_ptr().cast_mut();
    g
});

/// The state the files show; set while the directory exists.
static INSTANCE: AtomicPtr<Shared> = AtomicPtr::new(ptr::null_mut());

/// The `/sys/kernel/miglock` directory; removed when dropped.
pub(crate) struct Sysfs {
    kobj: *mut bindings::kobject,
    shared: Arc<Shared>,
}

// SAFETY: the kobject pointer is only used to remove it, which may happen
// from any thread.
unsafe impl Send for Sysfs {}
// SAFETY: no `&self` method touches the kobject.
unsafe impl Sync for Sysfs {}

impl Sysfs {
    /// Creates `/sys/kernel/miglock/` showing `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Self> {
        let p = ptr::from_ref::<Shared>(&shared).cast_mut();
        // Set before the files exist; `shared` keeps it alive until `drop`.
        INSTANCE.store(p, Ordering::Release);
        // SAFETY: `kernel_kobj` is initialised at boot and never freed; the
        // name is a static C string.
        let kobj = unsafe {
            bindings::kobject_create_and_add(c_str!("miglock").as_char_ptr(), bindings::kernel_kobj)
        };
        if kobj.is_null() {
            INSTANCE.store(ptr::null_mut(), Ordering::Release);
            return Err(ENOMEM);
        }
        // SAFETY: `kobj` is live; `GROUP` and what it points to are static.
        let r = unsafe { bindings::sysfs_create_group(kobj, &GROUP.0) };
        if r != 0 {
            // SAFETY: drops the reference `kobject_create_and_add` returned.
            unsafe { bindings::kobject_put(kobj) };
            INSTANCE.store(ptr::null_mut(), Ordering::Release);
            return Err(Error::from_errno(r));
        }
        Ok(Sysfs { kobj, shared })
    }
}

impl Drop for Sysfs {
    fn drop(&mut self) {
        // SAFETY: `kobj` came from `kobject_create_and_add` and this is its
        // last reference; removal waits for `show` calls in progress, so no
        // call can see `INSTANCE` cleared below while using it.
        unsafe { bindings::kobject_put(self.kobj) };
        INSTANCE.store(ptr::null_mut(), Ordering::Release);
        let _ = &self.shared;
    }
}

/// Writes at most one page, as sysfs requires.
struct Page {
    buf: *mut c_char,
    len: usize,
}

impl Write for Page {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = (bindings::PAGE_SIZE - 1).saturating_sub(self.len);
        let n = s.len().min(room);
        // SAFETY: `buf` is sysfs's page, `len + n` stays below `PAGE_SIZE`.
        unsafe { ptr::copy_nonoverlapping(s.as_ptr(), self.buf.add(self.len).cast(), n) };
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

fn render(file: File, shared: &Shared, out: &mut Page) -> fmt::Result {
    if let File::ChannelStats = file {
        // Not under the state lock: the counters have their own.
        let s = shared.channel_stats();
        return writeln!(
            out,
            "requests {} retries {} failures {} dropped {} stale {} hint_batches {} hint_frames {}",
            s.requests, s.retries, s.failures, s.dropped, s.stale, s.hint_batches, s.hint_frames
        );
    }
    shared.with_table(|t, now| match file {
        File::State => writeln!(out, "{}", if t.locked() { "locked" } else { "unlocked" }),
        File::Holders => writeln!(out, "{}", t.holders()),
        File::Lease => writeln!(
            out,
            "{}",
            t.earliest_expiry()
                .map_or(0, |e| crate::mld::ms_until(e, now))
        ),
        File::Channel => writeln!(
            out,
            "{}",
            match (shared.channel_present(), shared.channel_connected()) {
                (false, _) => "local",
                (true, true) => "connected",
                (true, false) => "disconnected",
            }
        ),
        File::Holds => {
            if t.static_lock() {
                writeln!(out, "static - - static lock (module parameter)")?;
            }
            for h in t.iter() {
                match h.owner {
                    Owner::File(id) => write!(out, "file:{id} ")?,
                    Owner::Detached => write!(out, "detached ")?,
                }
                let reason = Reason::from_u32(h.reason).map_or("?", Reason::name);
                let label = crate::abi::types::check_label(&h.label).unwrap_or(b"?");
                writeln!(
                    out,
                    "{reason} {} {}",
                    crate::mld::ms_until(h.expires_at, now),
                    core::str::from_utf8(label).unwrap_or("?")
                )?;
            }
            Ok(())
        }
        File::ChannelStats => Ok(()),
    })
}

/// # Safety
///
/// Called by sysfs with one of [`ATTRS`] and a page-sized buffer.
unsafe extern "C" fn show_callback(
    _kobj: *mut bindings::kobject,
    attr: *mut bindings::kobj_attribute,
    buf: *mut c_char,
) -> isize {
    let Some(i) = ATTRS.iter().position(|a| ptr::eq(&a.0, attr)) else {
        return EINVAL.to_errno() as isize;
    };
    let shared = INSTANCE.load(Ordering::Acquire);
    if shared.is_null() {
        return ENODEV.to_errno() as isize;
    }
    let mut page = Page { buf, len: 0 };
    // SAFETY: `INSTANCE` is set while the files exist and `Sysfs` holds a
    // reference to it (see `Drop`).
    let _ = render(FILES[i].0, unsafe { &*shared }, &mut page);
    page.len as isize
}
