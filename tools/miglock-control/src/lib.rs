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
    /// Take a live (copy-on-write) checkpoint of a VM: its memory and
    /// device state as of the start, while it keeps running here.
    Checkpoint(CheckpointRequest),
    /// Bring a VM back from a checkpoint: its QEMU runs with
    /// `-incoming defer` and loads the image.
    Restore(RestoreRequest),
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
    /// Whether a live checkpoint may be taken while the VM is locked.
    #[serde(default)]
    pub checkpoint_locked: Option<bool>,
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
    /// QEMU `max-postcopy-bandwidth` in bytes/s (default: `bandwidth`, else
    /// QEMU's, none; pre-copy then post-copy on QEMU 10.0 or later: none).
    #[serde(default)]
    pub postcopy_bandwidth: Option<u64>,
    /// QEMU `downtime-limit` in ms (default: QEMU's current setting).
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    /// Cancel a migration still copying after this long (pre-copy that
    /// does not converge would otherwise run forever).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// QEMU's `postcopy-preempt` when post-copy runs: requested pages on a
    /// channel of their own, past the queued background pages (the
    /// destination must enable it too).
    #[serde(default)]
    pub postcopy_preempt: bool,
    /// QEMU's own remedy for pre-copy that does not converge: the
    /// `auto-converge` capability, which throttles the guest's vCPUs while
    /// it dirties memory faster than the link sends (QEMU's
    /// `cpu-throttle-*` parameters as they are). Refused by a QEMU that
    /// does not offer it.
    #[serde(default)]
    pub auto_converge: bool,
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
    /// Enable QEMU's `postcopy-preempt` (the source must enable it too).
    #[serde(default)]
    pub postcopy_preempt: bool,
    /// The guest's hot pages, hottest first (its hints on the source):
    /// read in QEMU's memory here as soon as the guest runs here under
    /// post-copy, so QEMU fetches them before the guest faults on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<PrefetchRange>,
}

/// A range of guest-physical page frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchRange {
    /// First frame.
    pub start_pfn: u64,
    /// Frames.
    pub pages: u32,
}

/// `checkpoint` arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    /// VM name.
    pub vm: String,
    /// Where QEMU writes the image: `file:PATH` (PATH as QEMU sees it)
    /// or `exec:COMMAND` (the stream on COMMAND's stdin).
    pub to: String,
    /// How long the guest has, after the "checkpoint started" notice,
    /// before the image is taken (to put its state in order), ms.
    #[serde(default)]
    pub lead_ms: Option<u64>,
    /// Cancel the checkpoint if it has not completed this long after it
    /// started, ms (the guest hears it is off; the image is incomplete).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `restore` arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// VM name (its QEMU runs with `-incoming defer` and the same
    /// configuration as the one checkpointed).
    pub vm: String,
    /// The image: `file:PATH` or `exec:COMMAND` (the stream on its stdout).
    pub from: String,
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
        /// Which kind of failure (miglockctl's exit status follows it);
        /// an agent that does not say is taken to mean `failed`.
        #[serde(default)]
        class: ErrorClass,
    },
    /// Progress of a long request.
    Progress {
        /// What is happening.
        message: String,
        /// Where a migration is, for a progress bar (copy phases only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migration: Option<MigrationProgress>,
    },
    /// An event (for `watch`).
    Event {
        /// The audit record.
        event: serde_json::Value,
    },
}

impl Reply {
    /// An error reply of `class`.
    pub fn error(class: ErrorClass, message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
            class,
        }
    }

    /// A progress line with only a message.
    pub fn progress(message: impl Into<String>) -> Reply {
        Reply::Progress {
            message: message.into(),
            migration: None,
        }
    }
}

/// What kind of failure an error reply reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The request failed: QEMU's error, a bad request, a VM already
    /// migrating.
    #[default]
    Failed,
    /// The lock said no (or the fence for a QEMU that would corrupt the
    /// guest in the mode asked).
    Refused,
    /// The migration started and was cancelled: a guest lock during the
    /// copy, `--timeout`, or another client's `migrate_cancel`.
    Cancelled,
    /// The agent manages no VM of that name.
    UnknownVm,
}

/// A migration's progress, from QEMU's `query-migrate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// QEMU's status: `active`, `postcopy-active`, ...
    pub status: String,
    /// The guest's RAM, bytes.
    pub total_bytes: u64,
    /// Sent so far, every pass, bytes.
    pub transferred_bytes: u64,
    /// Still to send, bytes (pre-copy: grows again as the guest writes).
    pub remaining_bytes: u64,
    /// QEMU's current rate, bytes/s.
    pub rate_bytes_per_s: u64,
    /// Since the migration started, ms.
    pub elapsed_ms: u64,
}

impl MigrationProgress {
    /// The share of RAM the destination already has, 0.0..=1.0.
    pub fn done(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        let have = self.total_bytes.saturating_sub(self.remaining_bytes);
        have as f64 / self.total_bytes as f64
    }

    /// Time left at the current rate; `None` while nothing moves.
    pub fn eta(&self) -> Option<std::time::Duration> {
        (self.rate_bytes_per_s > 0).then(|| {
            std::time::Duration::from_secs_f64(
                self.remaining_bytes as f64 / self.rate_bytes_per_s as f64,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Older agents send errors without a class: they still parse, as
    /// failures; progress without figures keeps its old shape.
    #[test]
    fn replies_keep_their_shape() {
        let old: Reply = serde_json::from_value(json!({"kind": "error", "message": "x"})).unwrap();
        assert_eq!(old, Reply::error(ErrorClass::Failed, "x"));
        let refused =
            serde_json::to_value(Reply::error(ErrorClass::UnknownVm, "no VM 'a'")).unwrap();
        assert_eq!(
            refused,
            json!({"kind": "error", "message": "no VM 'a'", "class": "unknown-vm"})
        );
        let p = serde_json::to_value(Reply::progress("listening on tcp:h:1")).unwrap();
        assert_eq!(
            p,
            json!({"kind": "progress", "message": "listening on tcp:h:1"})
        );
    }

    #[test]
    fn progress_share_and_eta() {
        let mut p = MigrationProgress {
            status: "active".into(),
            total_bytes: 400,
            transferred_bytes: 300,
            remaining_bytes: 100,
            rate_bytes_per_s: 50,
            elapsed_ms: 6000,
        };
        assert_eq!(p.done(), 0.75);
        assert_eq!(p.eta(), Some(std::time::Duration::from_secs(2)));
        p.rate_bytes_per_s = 0;
        assert_eq!(p.eta(), None);
        // More dirty than RAM (never expected) still reads 0 %, not garbage.
        p.remaining_bytes = 500;
        assert_eq!(p.done(), 0.0);
        p.total_bytes = 0;
        assert_eq!(p.done(), 0.0);
    }
}
