// SPDX-License-Identifier: GPL-2.0

//! The agent against peers that stop: a guest that no longer reads its
//! link, a QMP socket that never greets. The operator's commands and the
//! other VMs go on meanwhile, and the stuck peer is dropped, audited. And
//! a QEMU whose words changed: what it is doing is asked, never parsed.

use miglock_abi::wire::{self, Header, Message};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{
    audit_records, control_timed, fake_qemu, listen, wait_for, write_config, Agent, FakeQemu, Guest,
};

const SECOND: Duration = Duration::from_secs(1);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-stuck-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn configure(dir: &Path, extra: &str, vms: &str) {
    write_config(dir, &format!("{extra}\n{vms}"));
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

/// A QMP socket that accepts and never greets (what a second client of a
/// QEMU meets): every dial fails within `[qmp] connect_timeout_ms`, saying
/// why; a guest's lock there is refused as unenforceable in bounded time;
/// `status` and the other VMs never wait for it.
#[test]
fn a_qmp_socket_that_never_greets_holds_up_nothing() {
    let dir = scratch("qmp");
    let silent = dir.join("silent-qmp.sock");
    let l = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    std::thread::spawn(move || {
        // Kept open, never written to.
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    let vms = format!(
        "[[vm]]\nname = \"silent\"\ndoorbell = \"{d}/silent.sock\"\nqmp = \"{q}\"\n",
        d = dir.display(),
        q = silent.display()
    ) + &vm(&dir, "other");
    configure(&dir, "[qmp]\nconnect_timeout_ms = 300\n", &vms);
    let silent_bell = listen(&dir.join("silent.sock"));
    let other_bell = listen(&dir.join("other.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&silent_bell);
    let mut other = Guest::accept(&other_bell);

    let t = std::time::Instant::now();
    let lock = std::thread::spawn(move || (g.lock(1, "needs qemu", 10_000), g));
    // While the lock waits for QEMU, status answers (each within 1 s).
    let mut looks = 0;
    while !lock.is_finished() || looks == 0 {
        let st = status(&dir);
        assert_eq!(st["vms"]["silent"]["blocker"], Value::Null, "{st}");
        looks += 1;
        assert!(t.elapsed() < Duration::from_secs(5), "the lock never ended");
    }
    let ((granted, _, why), _g) = lock.join().unwrap();
    let lock_ms = t.elapsed();
    assert!(!granted, "granted without QEMU's blocker");
    assert_eq!(why, wire::REFUSE_UNENFORCEABLE);
    // At most two dials: the watcher's, then the decision's own.
    assert!(
        lock_ms < Duration::from_secs(2),
        "refused after {lock_ms:?}"
    );

    let t = std::time::Instant::now();
    assert!(other.lock(2, "fine", 10_000).0);
    assert!(
        t.elapsed() < SECOND,
        "the other VM waited {:?}",
        t.elapsed()
    );

    // The watcher's dial records the outage on its own thread: wait for it.
    let told = |a: &[Value]| {
        a.iter().any(|r| {
            r["vm"] == "silent"
                && r["event"] == "qmp-link"
                && r["state"] == "unreachable"
                && r["error"].as_str().is_some_and(|e| e.contains("greeting"))
        })
    };
    wait_for(
        Duration::from_secs(5),
        "a qmp-link record naming the greeting",
        || told(&audit_records(&dir.join("audit.jsonl"))),
    );
}

/// QEMU refuses a blocker while a migration runs, in words that changed
/// between versions: the agent asks `query-migrate` instead, cancels the
/// migration another client started and grants the lock once the blocker
/// is in.
#[test]
fn a_migration_in_progress_is_known_by_its_status_not_its_wording() {
    let dir = scratch("busy");
    let qmp = dir.join("vm-qmp.sock");
    let sent = fake_qemu(
        &qmp,
        FakeQemu {
            initial: "active",
            ending: "active",
            busy_error: Some("Migration is running; try again later"),
            ..FakeQemu::default()
        },
    );
    let vms = format!(
        "[[vm]]\nname = \"vm\"\ndoorbell = \"{}/vm.sock\"\nqmp = \"{}\"\n",
        dir.display(),
        qmp.display()
    );
    configure(&dir, "", &vms);
    let bell = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&bell);
    let (granted, _, why) = g.lock(1, "critical", 10_000);
    assert!(granted, "refused ({why}): the wording was not recognised");
    let cmds: Vec<String> = sent
        .lock()
        .unwrap()
        .iter()
        .map(|c| c["execute"].as_str().unwrap_or("").to_string())
        .collect();
    let cancel = cmds.iter().position(|c| c == "migrate_cancel");
    let added = cmds.iter().rposition(|c| c == "blockdev-add");
    assert!(
        cancel.is_some() && added > cancel,
        "no cancel before the blocker: {cmds:?}"
    );
    let a = audit_records(&dir.join("audit.jsonl"));
    assert!(
        a.iter()
            .any(|r| r["event"] == "migrate-cancelled" && r["vm"] == "vm"),
        "{a:?}"
    );
}
