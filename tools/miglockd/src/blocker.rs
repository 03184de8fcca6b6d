// SPDX-License-Identifier: GPL-2.0

//! The lock inside QEMU: a migration blocker.
//!
//! QEMU refuses every `migrate`, from any client, while it has a migration
//! blocker, and lists the blockers' texts in `query-migrate`'s
//! `blocked-reasons`. A block node whose format cannot migrate adds one;
//! attached to no device, the guest never sees it. The agent adds a
//! read-only qcow (version 1) node named after the lock, say
//! `miglock-critical-operation`, while the VM is locked, so the person who
//! typed `virsh migrate` reads "The qcow format used by node
//! 'miglock-critical-operation' does not support live migration". The
//! image is a memfd handed to QEMU over QMP (`add-fd`), so no path has to
//! be reachable under AppArmor or SELinux confinement.
//!
//! [`Blocker`] decides (pure; time passed in); the functions below do the
//! QMP calls.

use miglock_qmp::{Error as QmpError, Monitor};
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Every node the agent adds starts with this.
pub const NODE_PREFIX: &str = "miglock-";
/// The `opaque` tag of the agent's fd sets (to find them again).
pub const FDSET_TAG: &str = "miglock-blocker";
/// QEMU's longest node name.
const NODE_NAME_MAX: usize = 31;
/// How long a VM stays blocked after its last hold ended, so that a burst
/// of lock/unlock pairs costs one blocker change.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);

/// What the agent knows of one VM's blocker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocker {
    /// The node in QEMU, if one is there.
    pub node: Option<String>,
    /// Its fd set, to remove with it.
    pub fdset: Option<u64>,
    /// Since when the VM has been unlocked while the node stayed.
    unlocked_since: Option<Instant>,
    /// A forced migration runs: no blocker until it ends.
    pub suspended: bool,
}

/// What to do about the blocker now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Keep,
    /// Add a node with this name.
    Install(String),
    /// Remove the node.
    Remove,
}

impl Blocker {
    /// The next step for a VM that is `locked` (for `why`, the first
    /// lock's reason name) at `now`, lifting the blocker only after the VM
    /// has been unlocked for `linger`.
    pub fn step(&mut self, locked: bool, why: &str, now: Instant, linger: Duration) -> Step {
        if self.suspended {
            return if self.node.is_some() {
                Step::Remove
            } else {
                Step::Keep
            };
        }
        match (&self.node, locked) {
            (None, true) => Step::Install(node_name(why)),
            (None, false) => Step::Keep,
            (Some(_), true) => {
                self.unlocked_since = None;
                Step::Keep
            }
            (Some(_), false) => {
                let since = *self.unlocked_since.get_or_insert(now);
                if now.duration_since(since) >= linger {
                    Step::Remove
                } else {
                    Step::Keep
                }
            }
        }
    }

    /// When [`Blocker::step`] may next have something to do without any
    /// change of the lock: the end of the linger.
    pub fn due(&self, linger: Duration) -> Option<Instant> {
        self.unlocked_since.map(|t| t + linger)
    }

    /// The VM is locked again under the node it has: the linger starts
    /// over at its next unlock (a burst of pairs keeps one blocker).
    pub fn relocked(&mut self) {
        self.unlocked_since = None;
    }

    /// Records that QEMU has `node` (with `fdset`).
    pub fn installed(&mut self, node: String, fdset: Option<u64>) {
        self.node = Some(node);
        self.fdset = fdset;
        self.unlocked_since = None;
    }

    /// Records that QEMU has no node of ours.
    pub fn removed(&mut self) {
        self.node = None;
        self.fdset = None;
        self.unlocked_since = None;
    }
}

/// A node name QEMU accepts (a letter first; letters, digits, `-`, `_`,
/// `.`; at most 31 characters) that says why: `miglock-` and `why`.
pub fn node_name(why: &str) -> String {
    let mut s = String::from(NODE_PREFIX);
    for c in why.chars() {
        if s.len() == NODE_NAME_MAX {
            break;
        }
        s.push(match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '-',
        });
    }
    if s.len() == NODE_PREFIX.len() {
        s.push_str("locked");
    }
    s
}

/// A minimal qcow version 1 image: a 48-byte header (4 KiB virtual disk,
/// 4 KiB clusters, one L2 table) and its one-entry L1 table.
pub fn image() -> [u8; 56] {
    let mut img = [0u8; 56];
    img[0..4].copy_from_slice(b"QFI\xfb"); // magic
    img[4..8].copy_from_slice(&1u32.to_be_bytes()); // version
                                                    // backing_file_offset (8), backing_file_size (4), mtime (4): zero.
    img[24..32].copy_from_slice(&4096u64.to_be_bytes()); // size
    img[32] = 12; // cluster_bits
    img[33] = 9; // l2_bits
                 // padding (2), crypt_method (4): zero.
    img[40..48].copy_from_slice(&48u64.to_be_bytes()); // l1_table_offset
    img
}

/// Why QEMU did not take a blocker.
#[derive(Debug)]
pub enum InstallError {
    /// A migration (or snapshot) is in progress: QEMU takes no new blocker
    /// then; cancel it first.
    MigrationInProgress,
    /// Anything else.
    Failed(String),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::MigrationInProgress => write!(f, "a migration is in progress"),
            InstallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A read-only descriptor of a memfd holding [`image`].
fn image_fd() -> std::io::Result<File> {
    let fd = rustix::fs::memfd_create("miglock-blocker", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = File::from(fd);
    f.write_all(&image())?;
    // QEMU opens the node read-only and takes an fd of the same access
    // mode from the set.
    File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&f)
    ))
}

/// Adds node `node` over `mon`; returns its fd set.
pub fn install(mon: &Monitor, node: &str) -> Result<u64, InstallError> {
    let fail = |e: &dyn std::fmt::Display| InstallError::Failed(e.to_string());
    let fd = image_fd().map_err(|e| fail(&e))?;
    let set = mon
        .execute_with_fd("add-fd", Some(json!({"opaque": FDSET_TAG})), fd.as_fd())
        .map_err(|e| fail(&e))?;
    let fdset = set["fdset-id"]
        .as_u64()
        .ok_or_else(|| fail(&format!("add-fd answered {set}")))?;
    let add = mon.execute(
        "blockdev-add",
        Some(json!({
            "driver": "qcow", "node-name": node, "read-only": true,
            "file": {"driver": "file", "filename": format!("/dev/fdset/{fdset}"), "read-only": true},
        })),
    );
    match add {
        Ok(_) => Ok(fdset),
        Err(e) => {
            let _ = mon.execute("remove-fd", Some(json!({ "fdset-id": fdset })));
            // QEMU takes no blocker while a migration runs. Its error text
            // is no API (it changed between versions): ask QEMU instead.
            let busy = matches!(&e, QmpError::Command { .. })
                && migration_status(mon).is_ok_and(|s| migrating(&s));
            Err(if busy {
                InstallError::MigrationInProgress
            } else {
                fail(&e)
            })
        }
    }
}

/// Removes `node` and its fd set.
pub fn remove(mon: &Monitor, node: &str, fdset: Option<u64>) -> Result<(), String> {
    mon.execute("blockdev-del", Some(json!({ "node-name": node })))
        .map_err(|e| e.to_string())?;
    if let Some(id) = fdset {
        // The node held a dup of the fd; the set's own copy goes now.
        let _ = mon.execute("remove-fd", Some(json!({ "fdset-id": id })));
    }
    Ok(())
}

/// The agent's nodes and fd sets QEMU has (left by an earlier agent).
pub fn find(mon: &Monitor) -> Result<(Vec<String>, Vec<u64>), String> {
    let nodes = mon
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .map_err(|e| e.to_string())?;
    let names = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node-name"].as_str())
        .filter(|n| n.starts_with(NODE_PREFIX))
        .map(String::from)
        .collect();
    let sets = mon
        .execute("query-fdsets", None)
        .map_err(|e| e.to_string())?;
    let ours = sets
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["fds"]
                .as_array()
                .is_some_and(|fds| fds.iter().any(|f| f["opaque"] == FDSET_TAG))
        })
        .filter_map(|s| s["fdset-id"].as_u64())
        .collect();
    Ok((names, ours))
}

/// Whether a `query-migrate` status is a migration (or snapshot) that has
/// not ended.
pub fn migrating(status: &str) -> bool {
    !matches!(status, "none" | "completed" | "failed" | "cancelled" | "")
}

/// QEMU's migration status (`none` before the first migration).
pub fn migration_status(mon: &Monitor) -> Result<String, String> {
    let q: Value = mon
        .execute("query-migrate", None)
        .map_err(|e| e.to_string())?;
    Ok(q["status"].as_str().unwrap_or("none").to_string())
}

/// Waits up to `every` for any QMP event, then asks QEMU how its migration
/// stands: `query-migrate`'s answer and its status. How every loop that
/// follows a migration (the gate's, a checkpoint's, an incoming one's)
/// looks again.
pub fn next_look(
    mon: &Monitor,
    events: &std::sync::mpsc::Receiver<miglock_qmp::Event>,
    every: Duration,
) -> Result<(Value, String), QmpError> {
    let _ = events.recv_timeout(every);
    let q = mon.execute("query-migrate", None)?;
    let status = q["status"].as_str().unwrap_or("").to_string();
    Ok((q, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_valid_and_say_why() {
        assert_eq!(
            node_name("critical-operation"),
            "miglock-critical-operation"
        );
        assert_eq!(node_name(""), "miglock-locked");
        assert_eq!(node_name("a b/c"), "miglock-a-b-c");
        let long = node_name(&"x".repeat(100));
        assert_eq!(long.len(), NODE_NAME_MAX);
        assert!(long.starts_with(NODE_PREFIX));
    }

    #[test]
    fn image_is_a_qcow1_header_and_l1_table() {
        let img = image();
        assert_eq!(&img[..4], b"QFI\xfb");
        assert_eq!(u32::from_be_bytes(img[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_be_bytes(img[40..48].try_into().unwrap()), 48);
        assert!(img[48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn installs_when_locked_and_lifts_after_the_linger() {
        let linger = Duration::from_millis(200);
        let t0 = Instant::now();
        let mut b = Blocker::default();
        assert_eq!(b.step(false, "x", t0, linger), Step::Keep);
        assert_eq!(
            b.step(true, "critical-operation", t0, linger),
            Step::Install("miglock-critical-operation".into())
        );
        b.installed("miglock-critical-operation".into(), Some(3));
        assert_eq!(b.step(true, "other", t0, linger), Step::Keep);
        // Unlocked: kept through the linger, then lifted.
        assert_eq!(b.step(false, "", t0, linger), Step::Keep);
        assert_eq!(b.due(linger), Some(t0 + linger));
        let mid = t0 + linger / 2;
        assert_eq!(b.step(false, "", mid, linger), Step::Keep);
        // Locked again within the linger: the linger starts over.
        assert_eq!(b.step(true, "x", mid, linger), Step::Keep);
        assert_eq!(b.due(linger), None);
        assert_eq!(b.step(false, "", mid, linger), Step::Keep);
        assert_eq!(b.step(false, "", mid + linger, linger), Step::Remove);
        b.removed();
        assert_eq!(b, Blocker::default());
    }

    #[test]
    fn a_forced_migration_suspends_it() {
        let now = Instant::now();
        let mut b = Blocker::default();
        b.installed("miglock-x".into(), None);
        b.suspended = true;
        assert_eq!(b.step(true, "x", now, Duration::ZERO), Step::Remove);
        b.removed();
        b.suspended = true;
        assert_eq!(b.step(true, "x", now, Duration::ZERO), Step::Keep);
    }
}
