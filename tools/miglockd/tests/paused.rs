// SPDX-License-Identifier: GPL-2.0

//! A migration paused before its switchover with nobody to continue it: an
//! agent stopped (SIGTERM) while its gate followed the migration, or one
//! found paused with no gate of this agent owning it, at connect or later.
//! The agent ends each pause, continued for an unlocked VM and cancelled
//! for a locked one, audited, within bounded time.

use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{
    audit_records, fake_qemu, listen, wait_for, write_config, Agent, Commands, FakeQemu,
};

/// An agent with one VM, "vm", on a fake QEMU `q`; `extra` goes into the
/// configuration, `policy` into the VM's.
fn start(name: &str, q: FakeQemu, extra: &str, policy: &str) -> (Agent, Commands) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("miglockd-paused-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let sent = fake_qemu(&dir.join("qmp.sock"), q);
    write_config(
        &dir,
        &format!(
            "{extra}\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/vm.sock\"\nqmp = \"{d}/qmp.sock\"\n\
             [vm.policy]\n{policy}\n"
        ),
    );
    // A doorbell that answers nothing: no guest is needed here.
    std::mem::forget(listen(&dir.join("vm.sock")));
    (Agent::start(&dir), sent)
}

fn sent_any(sent: &Commands, cmd: &str) -> bool {
    sent.lock().unwrap().iter().any(|c| c["execute"] == cmd)
}

/// The first audit record of `vm` with `event`, once there is one.
fn record(dir: &Path, event: &str, within: Duration) -> Value {
    let mut found = None;
    wait_for(within, &format!("an audit record '{event}'"), || {
        found = audit_records(&dir.join("audit.jsonl"))
            .into_iter()
            .find(|r| r["vm"] == "vm" && r["event"] == event);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn an_unowned_pause_of_an_unlocked_vm_is_continued() {
    let q = FakeQemu {
        initial: "pre-switchover",
        ..FakeQemu::default()
    };
    let (agent, sent) = start(
        "continue",
        q,
        "[switchover]\norphan_continue_ms = 200\n",
        "",
    );
    let r = record(&agent.dir, "migrate-continued", Duration::from_secs(5));
    assert_eq!(r["found"], "pre-switchover", "{r}");
    assert_eq!(r["error"], Value::Null, "{r}");
    let continued = sent.lock().unwrap().iter().any(|c| {
        c["execute"] == "migrate-continue" && c["arguments"] == json!({"state": "pre-switchover"})
    });
    assert!(continued);
    assert!(!sent_any(&sent, "migrate_cancel"));
}

#[test]
fn an_unowned_pause_of_a_locked_vm_is_cancelled_at_once() {
    let q = FakeQemu {
        initial: "pre-switchover",
        ..FakeQemu::default()
    };
    // The grace is for continuing only: a locked VM's pause ends at once.
    let (agent, sent) = start(
        "cancel",
        q,
        "[switchover]\norphan_continue_ms = 600000\n",
        "migration = false",
    );
    let r = record(&agent.dir, "migrate-cancelled", Duration::from_secs(5));
    assert_eq!(r["found"], "pre-switchover", "{r}");
    assert_eq!(r["ended"], "cancelled", "{r}");
    assert!(sent_any(&sent, "migrate_cancel"));
    assert!(!sent_any(&sent, "migrate-continue"));
}

/// The same where QEMU takes no blocker while a migration runs (as real
/// QEMU does): the locked VM's blocker cancels the pause on the way, and
/// that must read as the pause ended, with the capability turned off.
#[test]
fn an_unowned_pause_cancelled_by_the_blocker_is_audited_as_the_pause() {
    let q = FakeQemu {
        initial: "pre-switchover",
        busy_error: Some("disallowing migration blocker (migration/snapshot in progress)"),
        ..FakeQemu::default()
    };
    let (agent, sent) = start(
        "cancel-busy",
        q,
        "[switchover]\norphan_continue_ms = 600000\n",
        "migration = false",
    );
    let r = record(&agent.dir, "migrate-cancelled", Duration::from_secs(5));
    assert_eq!(r["found"], "pre-switchover", "{r}");
    assert_eq!(r["ended"], "cancelled", "{r}");
    assert!(
        r["why"]
            .as_str()
            .is_some_and(|w| w.contains("owned by no gate")),
        "{r}"
    );
    assert!(sent_any(&sent, "migrate_cancel"));
    assert!(!sent_any(&sent, "migrate-continue"));
    let turned_off = sent.lock().unwrap().iter().any(|c| {
        c["execute"] == "migrate-set-capabilities"
            && c["arguments"]["capabilities"]
                == json!([{"capability": "pause-before-switchover", "state": false}])
    });
    assert!(turned_off, "pause-before-switchover left on");
}

/// Copying when the agent connects, paused a moment later (no event: the
/// agent asks while another client's migration copies).
#[test]
fn a_pause_that_comes_later_is_continued_too() {
    let q = FakeQemu {
        initial: "active",
        ..FakeQemu::default()
    };
    let (agent, sent) = start("later", q, "[switchover]\norphan_continue_ms = 200\n", "");
    let r = record(&agent.dir, "migrate-continued", Duration::from_secs(5));
    assert_eq!(r["found"], "pre-switchover", "{r}");
    assert!(sent_any(&sent, "migrate-continue"));
}

/// SIGTERM while the gate follows a migration that is still copying: it
/// would stop at its switchover with nobody to continue it, so the agent
/// cancels it, audited, and exits 0 within the bound.
#[test]
fn sigterm_ends_the_migration_the_gate_follows() {
    let q = FakeQemu {
        ending: "active",
        ..FakeQemu::default()
    };
    let (mut agent, sent) = start("sigterm", q, "", "");
    let sock = agent.dir.join("control.sock");
    wait_for(Duration::from_secs(10), "the control socket", || {
        sock.exists()
    });
    let mut c = UnixStream::connect(&sock).unwrap();
    let req = json!({"cmd": "migrate", "vm": "vm", "to": "tcp:x", "mode": "precopy"});
    writeln!(c, "{req}").unwrap();
    record(&agent.dir, "migrate-start", Duration::from_secs(10));
    let t = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.exit_status(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", agent.log());
    assert!(t.elapsed() < Duration::from_secs(16), "{:?}", t.elapsed());
    let r = record(&agent.dir, "migrate-cancelled", Duration::ZERO);
    assert!(
        r["why"].as_str().is_some_and(|w| w.contains("SIGTERM")),
        "{r}"
    );
    assert!(sent_any(&sent, "migrate_cancel"));
    assert!(!sent_any(&sent, "migrate-continue"));
}

/// SIGTERM while an unowned pause waits out its grace: a stopping agent
/// continues it at once, or an agent restarted faster than the grace
/// would keep the guest paused for ever.
#[test]
fn sigterm_ends_an_unowned_pause_without_its_grace() {
    let q = FakeQemu {
        initial: "pre-switchover",
        ..FakeQemu::default()
    };
    let (mut agent, sent) = start(
        "sigterm-orphan",
        q,
        "[switchover]\norphan_continue_ms = 600000\n",
        "",
    );
    // Connected and watching: the pause is seen, its grace running.
    record(&agent.dir, "qmp-link", Duration::from_secs(10));
    assert!(!sent_any(&sent, "migrate-continue"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.exit_status(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", agent.log());
    let r = record(&agent.dir, "migrate-continued", Duration::ZERO);
    assert_eq!(r["found"], "pre-switchover", "{r}");
    assert!(
        r["why"].as_str().is_some_and(|w| w.contains("SIGTERM")),
        "{r}"
    );
    assert!(sent_any(&sent, "migrate-continue"));
}
