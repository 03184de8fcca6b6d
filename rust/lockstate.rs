// SPDX-License-Identifier: GPL-2.0

//! The lock state machine, shared with userspace tests.
//!
//! The `miglock-lockstate` crate's own source, compiled into the module, so
//! the logic KUnit tests here is the logic property-tested in userspace.

#[path = "../tools/miglock-lockstate/src/table.rs"]
pub mod table;
