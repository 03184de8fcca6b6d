// SPDX-License-Identifier: GPL-2.0

//! The lock state in a libvirt domain's `<metadata>`, where libvirt's
//! `qemu` hook on the destination reads it (in the domain XML libvirt hands
//! the hook on stdin, which carries no environment the agent could set).
//!
//! QEMU's blocker is what stops a migration; the metadata lets the hook
//! give the same answer in the moment before QEMU is asked, and for
//! migrations that never ask QEMU (a shut-off domain). It follows the
//! blocker off the decision path: `virsh metadata` takes tens of
//! milliseconds.

use serde::Deserialize;
use std::process::Command;

pub use miglock_control::LIBVIRT_NAMESPACE as NAMESPACE;
/// The element's prefix.
pub const KEY: &str = "miglock";

/// `[vm.libvirt]`: the libvirt domain this VM is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// libvirt connection URI (e.g. `qemu:///system`).
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Domain name (default: the VM's name).
    #[serde(default)]
    pub name: Option<String>,
}

fn default_uri() -> String {
    "qemu:///system".into()
}

/// Escapes `s` for an XML attribute.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The element for a VM that is `locked` for `reasons`, as of `at_ms`.
pub fn element(locked: bool, reasons: &[String], at_ms: u64) -> String {
    format!(
        "<lock locked=\"{}\" reasons=\"{}\" at_ms=\"{at_ms}\"/>",
        if locked { "yes" } else { "no" },
        attr(&reasons.join("; "))
    )
}

/// Writes `element` into `vm`'s live domain metadata.
pub fn publish(d: &Domain, vm: &str, element: &str) -> Result<(), String> {
    let name = d.name.as_deref().unwrap_or(vm);
    let out = Command::new("virsh")
        .args(["-q", "-c", &d.uri, "metadata", name, "--uri", NAMESPACE])
        .args(["--key", KEY, "--set", element, "--live"])
        .output()
        .map_err(|e| format!("running virsh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Follows `vm`'s blocker into its domain's metadata: each value received
/// is whether the VM is blocked now (only the latest counts).
pub fn publisher(
    agent: std::sync::Arc<crate::agent::Agent>,
    vm: std::sync::Arc<crate::agent::Vm>,
    rx: std::sync::mpsc::Receiver<bool>,
) {
    let Some(d) = vm.config.libvirt.clone() else {
        return;
    };
    let name = vm.config.name.clone();
    let mut published = None;
    let mut failing = false;
    while let Ok(mut locked) = rx.recv() {
        while let Ok(l) = rx.try_recv() {
            locked = l;
        }
        if published == Some(locked) {
            continue;
        }
        let reasons = vm
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reasons(crate::clock::now_ms());
        let el = element(locked, &reasons, crate::audit::wall_ms());
        match publish(&d, &name, &el) {
            Ok(()) => {
                published = Some(locked);
                failing = false;
                agent.audit.record(
                    &name,
                    "libvirt-metadata",
                    serde_json::json!({"locked": locked}),
                );
            }
            Err(e) if !failing => {
                // Said once per failure streak; the next change tries again.
                failing = true;
                agent.audit.record(
                    &name,
                    "libvirt-metadata-failed",
                    serde_json::json!({"error": e}),
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_escapes_what_a_guest_may_put_in_a_label() {
        let e = element(true, &["guest hold 1: other \"a<b>&'c\"".into()], 5);
        assert_eq!(
            e,
            "<lock locked=\"yes\" reasons=\"guest hold 1: other &quot;a&lt;b&gt;&amp;&apos;c&quot;\" at_ms=\"5\"/>"
        );
        assert!(element(false, &[], 0).starts_with("<lock locked=\"no\""));
    }
}
