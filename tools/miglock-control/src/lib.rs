// SPDX-License-Identifier: GPL-2.0

//! miglockd's control protocol: one JSON request per line on the control
//! socket, answered by one or more JSON lines (progress, then a result).

use serde::{Deserialize, Serialize};

/// The XML namespace of the lock state the agent keeps in a libvirt
/// domain's `<metadata>` (read by the libvirt hook).
pub const LIBVIRT_NAMESPACE: &str = "urn:x-miglock:lock:1";

/// A request to the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Every VM's state.
    Status,
    /// Show or change a VM's policy.
    Policy {
        /// VM name.
        vm: String,
        /// Fields to change; none: just show.
        #[serde(default)]
        set: Option<PolicyUpdate>,
    },
    /// Migrate a VM if its lock allows.
    Migrate(MigrateRequest),
    /// Receive a VM: listen, follow the migration, and tell the guest when
    /// post-copy starts.
    Incoming(IncomingRequest),
    /// Stream events (decisions, migrations) as they happen.
    Watch,
    /// A VM's latest hint batch from its guest.
    Hints {
        /// VM name.
        vm: String,
        /// Every range, not just the hottest.
        #[serde(default)]
        all: bool,
    },
}

/// Policy fields an administrator may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// The paper's static setting: false = "migration = no".
    pub migration: Option<bool>,
    /// Whether the guest may lock at all.
    pub guest_locks: Option<bool>,
    /// Longest lease the host grants, ms.
    pub max_lease_ms: Option<u32>,
    /// Locked time allowed per window, ms.
    pub quota_ms: Option<u64>,
    /// The quota window, ms.
    pub window_ms: Option<u64>,
    /// Grace after a pending-migration notice, ms.
    pub grace_ms: Option<u32>,
}

/// Migration modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// QEMU's iterative pre-copy.
    Precopy,
    /// Post-copy from the start.
    Postcopy,
    /// One pre-copy pass, then post-copy for the rest (only on a QEMU
    /// where it is known to be correct).
    PrecopyThenPostcopy,
    /// Planned from the guest's hints: pre-copy, post-copy, or pre-copy
    /// then post-copy, with downtime limit and bandwidth.
    Auto,
}

/// `migrate` arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// VM name.
    pub vm: String,
    /// Destination URI, e.g. `tcp:127.0.0.1:4444`.
    pub to: String,
    /// Mode.
    pub mode: Mode,
    /// If locked: notify the guest and wait this long for it to unlock.
    #[serde(default)]
    pub wait_unlock_ms: Option<u64>,
    /// If locked: notify the guest and wait the VM policy's grace period.
    #[serde(default)]
    pub wait_grace: bool,
    /// Migrate even if locked; requires `reason`, audited.
    #[serde(default)]
    pub force: bool,
    /// Why (required with `force`).
    #[serde(default)]
    pub reason: Option<String>,
    /// QEMU `max-bandwidth` in bytes/s (default: QEMU's current setting).
    #[serde(default)]
    pub bandwidth: Option<u64>,
    /// QEMU `max-postcopy-bandwidth` in bytes/s (default: QEMU's, none).
    #[serde(default)]
    pub postcopy_bandwidth: Option<u64>,
    /// QEMU `downtime-limit` in ms (default: QEMU's current setting).
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    /// Cancel a migration still copying after this long (pre-copy that
    /// does not converge would otherwise run forever).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `incoming` arguments: the destination side of a migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingRequest {
    /// VM name (its QEMU runs with `-incoming defer`).
    pub vm: String,
    /// Where to listen, e.g. `tcp:127.0.0.1:0` (port 0: any; the reply's
    /// first progress line names it).
    pub uri: String,
    /// Allow post-copy (the source must enable it too).
    #[serde(default)]
    pub postcopy: bool,
}

/// One line of the agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// The request succeeded; `data` is the answer.
    Ok {
        /// Answer.
        data: serde_json::Value,
    },
    /// The request failed.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Progress of a long request.
    Progress {
        /// What is happening.
        message: String,
    },
    /// An event (for `watch`).
    Event {
        /// The audit record.
        event: serde_json::Value,
    },
}
