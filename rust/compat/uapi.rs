// SPDX-License-Identifier: GPL-2.0

//! The ABI's structures may be copied from and to userspace as bytes.
//!
//! Remove when the kernel crate can derive `FromBytes` and `AsBytes`.

use crate::abi::types::{MldHints, MldLock, MldRenew, MldStatus};
use kernel::types::{AsBytes, FromBytes};

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
