// SPDX-License-Identifier: GPL-2.0

//! The ABI shared with userspace and the host.
//!
//! These are the `miglock-abi` crate's own source files, compiled into the
//! module, so the numbers and layouts are defined exactly once.

#[path = "../tools/miglock-abi/src/ioctl.rs"]
pub mod ioctl;

#[path = "../tools/miglock-abi/src/types.rs"]
pub mod types;

// The guest-host protocol; the hypercall shim (next part) speaks it.
#[path = "../tools/miglock-abi/src/wire.rs"]
pub mod wire;

use kernel::types::{AsBytes, FromBytes};
use types::{MldHints, MldLock, MldRenew, MldStatus};

// SAFETY: `repr(C)` structs of integers and byte arrays without padding: every
// bit pattern is valid.
unsafe impl FromBytes for MldLock {}
// SAFETY: as above.
unsafe impl FromBytes for MldRenew {}
// SAFETY: as above (integers only; `reserved` makes the tail padding explicit).
unsafe impl FromBytes for MldHints {}
// SAFETY: `repr(C)` of integers with no padding bytes (checked by the ABI
// crate's layout test), so no uninitialised byte is copied to userspace.
unsafe impl AsBytes for MldStatus {}
