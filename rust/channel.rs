// SPDX-License-Identifier: GPL-2.0

//! The host side of lock decisions, as the rest of the module sees it.
//!
//! `shim.rs` implements [`HostChannel`] over the port-I/O doorbell; without
//! a doorbell it decides in the guest and says so (`MLD_DECISION_LOCAL`, no
//! `MLD_ST_CHANNEL`). The ioctl ABI is the same either way.

use crate::abi::types::Reason;

/// What the host answered to a lock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Granted, for at most this lease.
    Granted {
        /// Lease the host allows, in milliseconds.
        lease_ms: u32,
    },
    /// Refused, with the host's reason code.
    Refused {
        /// Host refusal reason.
        reason: u32,
    },
    /// No host answered: recorded in the guest only.
    Local,
}

/// The guest's lock state as reported to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// Number of holds.
    pub(crate) holders: u32,
    /// The static lock is set.
    pub(crate) static_lock: bool,
    /// ms until the earliest lease ends, 0 if none.
    pub(crate) earliest_expiry_ms: u32,
}

/// A channel to the host agent.
pub(crate) trait HostChannel: Send + Sync {
    /// Whether the host side answered recently.
    fn connected(&self) -> bool;

    /// Asks the host for hold `hold`. Called without the state lock held.
    fn request_lock(&self, hold: u32, reason: Reason, lease_ms: u32, label: &[u8]) -> Decision;

    /// Asks the host to restart hold `hold`'s lease. Called without the
    /// state lock held.
    fn request_renew(&self, hold: u32, lease_ms: u32) -> Decision;

    /// Tells the host that hold `hold` ended.
    fn released(&self, hold: u32);

    /// Tells the host the guest's state after a VM-wide change.
    fn state_changed(&self, report: Report);
}
