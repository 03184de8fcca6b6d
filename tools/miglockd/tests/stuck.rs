// SPDX-License-Identifier: GPL-2.0

//! The agent against peers that stop: a guest that no longer reads its
//! link, a QMP socket that never greets. The operator's commands and the
//! other VMs go on meanwhile, and the stuck peer is dropped, audited.

use miglock_abi::wire::{self, Header, Message};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{audit_records, control_timed, fake_qemu, listen, wait_for, Agent, FakeQemu, Guest};

const SECOND: Duration = Duration::from_secs(1);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-stuck-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn configure(dir: &Path, extra: &str, vms: &str) {
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n{extra}\n{vms}"
        ),
    )
    .unwrap();
}

fn vm(dir: &Path, name: &str) -> String {
    let qmp = dir.join(format!("{name}-qmp.sock"));
    fake_qemu(&qmp, FakeQemu::default());
    format!(
        "[[vm]]\nname = \"{name}\"\ndoorbell = \"{}/{name}.sock\"\nqmp = \"{}\"\n",
        dir.display(),
        qmp.display()
    )
}

/// `status`, answered within a second.
fn status(dir: &Path) -> Value {
    let (took, v) = control_timed(dir, json!({"cmd": "status"}), SECOND, SECOND);
    assert!(took < SECOND, "status took {took:?}");
    v["data"].clone()
}

/// A guest stops reading while the host has thousands of answers for it:
/// they wait in the link's queue, never in a sender. Meanwhile `status`,
/// a forced migration of that VM and a lock in another VM each answer
/// within a second; then the link is dropped for not draining, audited.
#[test]
fn a_guest_that_stops_reading_stops_nothing_else() {
    let dir = scratch("guest");
    let vms = vm(&dir, "stuck") + &vm(&dir, "other");
    // Long enough a stall to measure inside it; deep enough a queue that
    // the timeout, not the queue, ends it.
    configure(
        &dir,
        "[limits]\nsend_queue = 100000\nsend_timeout_ms = 5000\n",
        &vms,
    );
    let stuck_bell = listen(&dir.join("stuck.sock"));
    let other_bell = listen(&dir.join("other.sock"));
    let _agent = Agent::start(&dir);
    let mut stuck = Guest::accept(&stuck_bell);
    let mut other = Guest::accept(&other_bell);
    assert!(stuck.lock(1, "hostile", 60_000).0);

    // 3000 pings (within the frame rate's burst), never an answer read.
    const PINGS: u64 = 3000;
    let mut flood = Vec::new();
    for seq in 0..PINGS as u32 {
        let mut f = [0u8; 64];
        let hdr = Header {
            seq: 100 + seq,
            reply_to: 0,
        };
        let n = wire::encode(&Message::Ping, hdr, &mut f).unwrap();
        flood.extend_from_slice(&f[..n]);
    }
    let mut s = stuck.s.try_clone().unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = std::thread::spawn(move || s.write_all(&flood).is_ok());
    // Every ping handled: far more answers than the socket holds wait.
    wait_for(Duration::from_secs(10), "the pings handled", || {
        status(&dir)["vms"]["stuck"]["link"]["frames"]
            .as_u64()
            .is_some_and(|f| f > PINGS)
    });
    assert!(writer.join().unwrap(), "the agent kept reading");
    let st = status(&dir);
    assert_eq!(st["vms"]["stuck"]["connected"], true, "{st}");

    let t = std::time::Instant::now();
    let (granted, ..) = other.lock(7, "other work", 10_000);
    let other_ms = t.elapsed();
    assert!(granted);
    assert!(other_ms < SECOND, "the other VM's lock took {other_ms:?}");

    let force = json!({"cmd": "migrate", "vm": "stuck", "to": "tcp:x", "mode": "precopy",
        "force": true, "reason": "evicting a hostile guest"});
    let (force_first, done) = control_timed(&dir, force, SECOND, Duration::from_secs(20));
    assert!(force_first < SECOND, "migrate --force took {force_first:?}");
    assert_eq!(done["kind"], "ok", "{done}");

    wait_for(Duration::from_secs(15), "the link dropped, audited", || {
        audit_records(&dir.join("audit.jsonl")).iter().any(|r| {
            r["vm"] == "stuck"
                && r["event"] == "guest-misbehaving"
                && r["action"] == "link dropped"
                && r["why"].as_str().is_some_and(|w| w.contains("no frame"))
        })
    });
    let st = status(&dir);
    assert_eq!(st["vms"]["stuck"]["link"]["undrained"], 1, "{st}");
    assert_eq!(st["vms"]["other"]["link"]["undrained"], 0, "{st}");
    drop(stuck);
}
