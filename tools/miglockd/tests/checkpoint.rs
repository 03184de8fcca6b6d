// SPDX-License-Identifier: GPL-2.0

//! `miglockctl checkpoint --timeout`: a live checkpoint that does not finish
//! in time is cancelled in QEMU, audited, and the guest is told it is off;
//! the VM can then migrate as before.

use miglock_abi::wire::Notice;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{fake_qemu, listen, Agent, FakeQemu, Guest};

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_miglockctl"))
        .arg("--socket")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .unwrap()
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_checkpoint_past_its_timeout_is_cancelled_and_the_guest_told() {
    let dir = std::env::temp_dir().join(format!("miglockd-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // A QEMU whose snapshot never ends by itself.
    fake_qemu(
        &dir.join("qmp.sock"),
        FakeQemu {
            ending: "active",
            ..Default::default()
        },
    );
    let bell = listen(&dir.join("vm.sock"));
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/vm.sock\"\nqmp = \"{d}/qmp.sock\"\n"
        ),
    )
    .unwrap();
    let _agent = Agent::start(&dir);
    let mut guest = Guest::accept(&bell);

    let t = Instant::now();
    let out = ctl(
        &dir,
        &[
            "checkpoint",
            "vm",
            "--to",
            "/nonexistent/x.img",
            "--timeout",
            "400ms",
        ],
    );
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    // Exit status 4: cancelled, with why.
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        err.contains("cancelled") && err.contains("--timeout"),
        "{err}"
    );
    // Within the timeout and the cancel's confirmation, not the 10 s the
    // agent otherwise gives QEMU to end the snapshot's pause.
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // The guest heard it start, then end unsaved.
    assert_eq!(guest.notice(), Notice::CheckpointStarted);
    assert_eq!(guest.notice(), Notice::CheckpointDone { saved: false });

    // Audited as cancelled, with why, QEMU's confirmation and the guest told.
    let a = audit(&dir);
    let rec = a
        .iter()
        .find(|r| r["event"] == "checkpoint-cancelled")
        .unwrap_or_else(|| panic!("no checkpoint-cancelled record: {a:?}"));
    assert!(rec["why"].as_str().unwrap().contains("--timeout"), "{rec}");
    assert_eq!(rec["ended"], "cancelled", "{rec}");
    assert_eq!(rec["guest_told"], true, "{rec}");
    assert!(rec["transferred_bytes"].is_u64(), "{rec}");
    assert!(!a.iter().any(|r| r["event"] == "checkpoint-done"), "{a:?}");

    // The checkpoint is over: a migration is not refused as beside one (the
    // fake never completes it, so it ends cancelled by its own timeout).
    let m = ctl(
        &dir,
        &[
            "migrate",
            "vm",
            "--to",
            "tcp:127.0.0.1:1",
            "--timeout",
            "300ms",
        ],
    );
    let err = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(4), "{m:?}");
    assert!(!err.contains("checkpoint"), "{err}");
    // And a second checkpoint may start (and be cancelled again).
    let again = ctl(
        &dir,
        &[
            "checkpoint",
            "vm",
            "--to",
            "/nonexistent/x.img",
            "--timeout",
            "200ms",
        ],
    );
    assert_eq!(again.status.code(), Some(4), "{again:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
