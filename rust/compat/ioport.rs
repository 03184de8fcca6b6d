// SPDX-License-Identifier: GPL-2.0

//! Port I/O on an I/O port range this module owns.
//!
//! Owning the range (`request_region`) is what makes the accesses sound: no
//! other driver touches these ports while an [`IoRegion`] exists. x86 only
//! (`in`/`out`), which is why the module builds only for x86_64 (Kbuild).
//!
//! Remove when the kernel crate can claim I/O port regions and do port I/O.

use kernel::{bindings, prelude::*, str::CStr};

/// Reads a byte from an I/O port.
///
/// # Safety
///
/// The caller must own `port` (see [`IoRegion`]).
unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: `in` has no memory effects; the caller owns the port.
    unsafe {
        core::arch::asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
///
/// The caller must own `port` (see [`IoRegion`]).
unsafe fn outb(port: u16, v: u8) {
    // SAFETY: `out` has no memory effects; the caller owns the port.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// A requested range of I/O ports; released when dropped.
pub(crate) struct IoRegion {
    base: u16,
    len: u16,
}

impl IoRegion {
    /// Claims ports `base..base + len` under `name` (`/proc/ioports`).
    pub(crate) fn request(base: u16, len: u16, name: &'static CStr) -> Result<Self> {
        if len == 0 || u32::from(base) + u32::from(len) > 0x1_0000 {
            return Err(EINVAL);
        }
        // SAFETY: `ioport_resource` is the kernel's root of port ranges; the
        // name is static and outlives the claim.
        let res = unsafe {
            bindings::__request_region(
                core::ptr::addr_of_mut!(bindings::ioport_resource),
                base.into(),
                len.into(),
                name.as_char_ptr(),
                0,
            )
        };
        if res.is_null() {
            return Err(EBUSY);
        }
        Ok(IoRegion { base, len })
    }

    /// Reads the register at `off` (0xff, like an empty bus, if out of range).
    pub(crate) fn read(&self, off: u16) -> u8 {
        if off >= self.len {
            return 0xff;
        }
        // SAFETY: the port is inside the range this region owns.
        unsafe { inb(self.base + off) }
    }

    /// Writes the register at `off` (ignored if out of range).
    pub(crate) fn write(&self, off: u16, v: u8) {
        if off < self.len {
            // SAFETY: the port is inside the range this region owns.
            unsafe { outb(self.base + off, v) };
        }
    }
}

impl Drop for IoRegion {
    fn drop(&mut self) {
        // SAFETY: the range was claimed in `request` and not released since.
        unsafe {
            bindings::__release_region(
                core::ptr::addr_of_mut!(bindings::ioport_resource),
                self.base.into(),
                self.len.into(),
            )
        };
    }
}
