// SPDX-License-Identifier: GPL-2.0

//! The pure guest-side logic, shared with userspace tests.
//!
//! The `miglock-lockstate` crate's own sources, compiled into the module, so
//! the logic KUnit tests here is the logic property-tested and fuzzed in
//! userspace.

#[path = "../tools/miglock-lockstate/src/grants.rs"]
pub mod grants;

#[path = "../tools/miglock-lockstate/src/notices.rs"]
pub mod notices;

#[path = "../tools/miglock-lockstate/src/request.rs"]
pub mod request;

#[path = "../tools/miglock-lockstate/src/slots.rs"]
pub mod slots;

#[path = "../tools/miglock-lockstate/src/status.rs"]
pub mod status;

#[path = "../tools/miglock-lockstate/src/table.rs"]
pub mod table;
