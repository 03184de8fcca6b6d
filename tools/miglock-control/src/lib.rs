// SPDX-License-Identifier: GPL-2.0

//! miglockd's control protocol: one JSON request per line on the control
//! socket, answered by one or more JSON lines (progress, then a result).

use serde::{Deserialize, Serialize};

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
    /// Stream events (decisions, migrations) as they happen.
    Watch,
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
    /// Post-copy after the first pre-copy pass.
    Postcopy,
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
