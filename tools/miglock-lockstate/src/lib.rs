// SPDX-License-Identifier: GPL-2.0

//! miglock's pure guest-side logic, independent of the kernel: the lock
//! table, the checks of what applications ask, the status they read, the
//! host's notices, and the slots of requests waiting for the host.
//!
//! The guest module compiles these very files through `#[path]` and tests
//! them with KUnit; this crate property-tests them in userspace and the
//! `lock_request` fuzz target runs the request checks. Nothing here does
//! I/O or allocates: time is passed in.

#![no_std]

/// The ABI these files speak, under the path the module gives it too.
pub use miglock_abi as abi;

pub mod grants;
pub mod notices;
pub mod request;
pub mod slots;
pub mod status;
pub mod table;
