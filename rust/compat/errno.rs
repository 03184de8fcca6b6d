// SPDX-License-Identifier: GPL-2.0

//! Error codes 6.12's `kernel::error::code` does not declare.
//!
//! Remove when `kernel::error::code` declares them.

use kernel::{bindings, error::Error};

/// `ENOLCK`: no lock held (unlock or renew without a hold).
pub(crate) fn enolck() -> Error {
    Error::from_errno(-(bindings::ENOLCK as i32))
}

/// `ETIMEDOUT`: the host or the UART did not answer in time.
pub(crate) fn etimedout() -> Error {
    Error::from_errno(-(bindings::ETIMEDOUT as i32))
}

/// `EOPNOTSUPP`: hints are turned off (`hint_rate=0`).
pub(crate) fn eopnotsupp() -> Error {
    Error::from_errno(-(bindings::EOPNOTSUPP as i32))
}

/// `ENOTCONN`: the host channel is not connected.
pub(crate) fn enotconn() -> Error {
    Error::from_errno(-(bindings::ENOTCONN as i32))
}
