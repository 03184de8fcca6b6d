// SPDX-License-Identifier: GPL-2.0

//! `miglock-libvirt-hook`: libvirt's `qemu` hook (install it as
//! `/etc/libvirt/hooks/qemu`).
//!
//! libvirt runs it as `qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the
//! domain XML on stdin, and passes it no environment worth the name. Before
//! an incoming migration it runs `DOMAIN migrate begin -` on the
//! *destination*, where no agent knows the VM yet: so the hook decides from
//! the XML alone, whose `<metadata>` carries the lock state the source's
//! agent keeps there. A locked VM is refused (exit 1; libvirt shows our
//! stderr to whoever typed `virsh migrate`). A VM that is miglock's (its
//! QEMU has the doorbell) but whose state cannot be read is refused too,
//! unless `unknown = "allow"` in the hook's configuration:
//! `miglock.toml` beside the hook, else `/etc/miglock/libvirt-hook.toml`.
//! Other VMs and other operations pass.

use miglock_control::LIBVIRT_NAMESPACE;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// The hook's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What to do with a miglock VM whose lock state cannot be read:
    /// "refuse" (default) or "allow".
    #[serde(default)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Unknown {
    #[default]
    Refuse,
    Allow,
}

/// What the XML says.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Not a miglock VM.
    NotOurs,
    /// Locked, for these reasons.
    Locked(String),
    /// Unlocked.
    Unlocked,
    /// A miglock VM whose state cannot be read: why.
    Unknown(String),
}

fn state(xml: &str) -> State {
    let doc = match roxmltree::Document::parse(xml) {
        Ok(d) => d,
        Err(e) => return State::Unknown(format!("the domain XML does not parse: {e}")),
    };
    let lock = doc.descendants().find(|n| {
        n.tag_name().namespace() == Some(LIBVIRT_NAMESPACE) && n.tag_name().name() == "lock"
    });
    if let Some(l) = lock {
        return match l.attribute("locked") {
            Some("yes") => State::Locked(l.attribute("reasons").unwrap_or("").to_string()),
            Some("no") => State::Unlocked,
            other => State::Unknown(format!("locked=\"{}\"", other.unwrap_or(""))),
        };
    }
    // The doorbell's chardev on QEMU's command line marks a miglock VM.
    let ours = doc
        .descendants()
        .filter_map(|n| n.attribute("value"))
        .any(|v| v.contains("miglock"));
    if ours {
        State::Unknown("no lock state in the domain's metadata (is miglockd running?)".into())
    } else {
        State::NotOurs
    }
}

fn config() -> Result<Config, String> {
    let beside = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| Some(p.parent()?.join("miglock.toml")));
    let path = beside
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/etc/miglock/libvirt-hook.toml"));
    match std::fs::read_to_string(&path) {
        Ok(t) => toml::from_str(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // libvirt writes the XML whatever the operation: always read it.
    let mut xml = String::new();
    let read = std::io::stdin().read_to_string(&mut xml);
    let (domain, op, sub) = (
        args.first().map_or("?", String::as_str),
        args.get(1).map_or("", String::as_str),
        args.get(2).map_or("", String::as_str),
    );
    if (op, sub) != ("migrate", "begin") {
        return ExitCode::SUCCESS;
    }
    let st = match read {
        Ok(_) => state(&xml),
        Err(e) => State::Unknown(format!("reading the domain XML: {e}")),
    };
    let refuse = |why: String| {
        eprintln!("miglock: refusing to migrate {domain}: {why}");
        ExitCode::FAILURE
    };
    match st {
        State::NotOurs | State::Unlocked => ExitCode::SUCCESS,
        State::Locked(reasons) => refuse(format!("its guest holds a migration lock ({reasons})")),
        State::Unknown(why) => match config() {
            Ok(c) if c.unknown == Unknown::Allow => {
                eprintln!("miglock: allowing {domain} without a known lock state: {why}");
                ExitCode::SUCCESS
            }
            Ok(_) => refuse(format!("its lock state is unknown: {why}")),
            Err(e) => refuse(format!("its lock state is unknown ({why}), and the hook's configuration is unreadable: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(meta: &str, cmdline: &str) -> String {
        format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
             <name>g</name><metadata>{meta}</metadata>\
             <qemu:commandline>{cmdline}</qemu:commandline></domain>"
        )
    }

    const BELL: &str = "<qemu:arg value='socket,id=miglock-bell,path=/x'/>";

    #[test]
    fn reads_the_lock_from_the_metadata() {
        let locked = format!(
            "<miglock:lock xmlns:miglock='{LIBVIRT_NAMESPACE}' locked='yes' reasons='hold 1: db'/>"
        );
        assert_eq!(
            state(&domain(&locked, BELL)),
            State::Locked("hold 1: db".into())
        );
        let unlocked = format!("<m:lock xmlns:m='{LIBVIRT_NAMESPACE}' locked='no' reasons=''/>");
        assert_eq!(state(&domain(&unlocked, BELL)), State::Unlocked);
    }

    #[test]
    fn another_namespace_is_not_ours() {
        let other = "<x:lock xmlns:x='urn:other' locked='yes'/>";
        assert_eq!(state(&domain(other, "")), State::NotOurs);
        assert!(matches!(state(&domain(other, BELL)), State::Unknown(_)));
    }

    #[test]
    fn garbage_is_unknown() {
        assert!(matches!(state("<domain"), State::Unknown(_)));
        let bad = format!("<m:lock xmlns:m='{LIBVIRT_NAMESPACE}' locked='maybe'/>");
        assert!(matches!(state(&domain(&bad, BELL)), State::Unknown(_)));
    }
}
