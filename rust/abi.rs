// SPDX-License-Identifier: GPL-2.0

//! The ABI shared with userspace and the host.
//!
//! These are the `miglock-abi` crate's own source files, compiled into the
//! module, so the numbers and layouts are defined exactly once.

#[path = "../tools/miglock-abi/src/ioctl.rs"]
pub mod ioctl;

#[path = "../tools/miglock-abi/src/types.rs"]
pub mod types;

// The guest-host protocol the host channels speak.
#[path = "../tools/miglock-abi/src/wire.rs"]
pub mod wire;
