// SPDX-License-Identifier: GPL-2.0

//! miglock's ABI, defined once.
//!
//! This crate is `#![no_std]` and allocation-free: the guest kernel module
//! compiles this very file (through `#[path]`), the userspace tools depend on
//! it as a normal crate, and a golden test checks the C header against it.

#![no_std]

pub mod ioctl;
pub mod types;
pub mod wire;
