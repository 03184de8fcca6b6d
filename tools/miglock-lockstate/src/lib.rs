// SPDX-License-Identifier: GPL-2.0

//! miglock's lock state machine, independent of the kernel.
//!
//! The guest module compiles `table.rs` through `#[path]` and tests it with
//! KUnit; this crate property-tests the very same file in userspace.

#![no_std]

pub mod table;
