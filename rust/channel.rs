// SPDX-License-Identifier: GPL-2.0

//! The host side of lock decisions, as the rest of the module sees it.
//!
//! The hypercall shim (a later part) implements [`HostChannel`] over the
//! port-I/O doorbell or `vmcall`; until then [`Local`] decides in the guest
//! and says so (`MLD_DECISION_LOCAL`, no `MLD_ST_CHANNEL`). The ioctl ABI does
//! not change when a real channel plugs in.

use crate::abi::types::Reason;

/// What the host answered to a lock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// `Granted` and `Refused` come from the hypercall shim, the next part.
#[allow(dead_code)]
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
    /// No host channel: recorded in the guest only.
    Local,
}

/// A channel to the host agent.
pub(crate) trait HostChannel: Send + Sync {
    /// Whether the host side is reachable.
    fn connected(&self) -> bool;

    /// Asks the host for a hold. Called without the state lock held.
    fn request_lock(&self, reason: Reason, lease_ms: u32, label: &[u8]) -> Decision;

    /// Tells the host the VM became locked or unlocked.
    fn state_changed(&self, locked: bool);
}

/// No host: every request is decided locally.
pub(crate) struct Local;

impl HostChannel for Local {
    fn connected(&self) -> bool {
        false
    }

    fn request_lock(&self, _reason: Reason, _lease_ms: u32, _label: &[u8]) -> Decision {
        Decision::Local
    }

    fn state_changed(&self, _locked: bool) {}
}
