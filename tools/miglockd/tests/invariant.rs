// SPDX-License-Identifier: GPL-2.0

//! Invariant: over randomized schedules of guest locks and unlocks,
//! migration requests and agent kills/restarts, no unforced migration of a
//! locked VM ever passes the switchover.
//!
//! The real miglockd runs against a scripted guest and a fake QEMU monitor
//! that walks each migration through active → pre-switchover → (continue)
//! → completed, and keeps migration blockers as QEMU does (none added while
//! a migration runs; none migrates while one is there). Two independent
//! checks: replaying the agent's audit log (a total order of grants,
//! unlocks and switchover decisions), and the guest's own view at the
//! moment the fake QEMU receives `migrate-continue`.

use miglock_abi::wire::{self, Decoder, Event, Header, Message};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The guest's view: hold id → (granted at, lease end), while it holds it.
type Held = Arc<Mutex<BTreeMap<u32, Instant>>>;

#[derive(Default)]
struct QemuLog {
    /// For every `migrate-continue`: holds the guest believed live then.
    continued_while_held: Vec<String>,
    continues: usize,
    cancels: usize,
}

/// A fake QEMU monitor (one client at a time, like QEMU's socket chardev).
fn fake_qemu(path: &Path, held: Held, log: Arc<Mutex<QemuLog>>, seed: u64) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        for conn in l.incoming().flatten() {
            // A new client (a restarted agent): an old migration stays where
            // it was, as in QEMU.
            let mut w = conn.try_clone().unwrap();
            let _ = writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#);
            let mut state = "none".to_string();
            let mut polls = 0;
            let mut blockers: Vec<String> = Vec::new();
            let mut fdsets = 0u64;
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    break;
                };
                let cmd = v["execute"].as_str().unwrap_or("").to_string();
                let running = state == "active" || state == "pre-switchover";
                let mut reply = match cmd.as_str() {
                    "migrate" if running => {
                        json!({"error": {"class": "GenericError", "desc": "migration in progress"}})
                    }
                    "migrate" if !blockers.is_empty() => {
                        json!({"error": {"class": "GenericError", "desc": "blocked"}})
                    }
                    "blockdev-add" if running => {
                        json!({"error": {"class": "GenericError", "desc": "disallowing migration blocker (migration/snapshot in progress)"}})
                    }
                    "blockdev-add" => {
                        blockers.push(v["arguments"]["node-name"].as_str().unwrap_or("").into());
                        json!({"return": {}})
                    }
                    "blockdev-del" => {
                        blockers.retain(|b| v["arguments"]["node-name"] != b.as_str());
                        json!({"return": {}})
                    }
                    "add-fd" => {
                        fdsets += 1;
                        json!({"return": {"fdset-id": fdsets, "fd": 3}})
                    }
                    "query-named-block-nodes" => {
                        let nodes: Vec<Value> =
                            blockers.iter().map(|b| json!({"node-name": b})).collect();
                        json!({ "return": nodes })
                    }
                    "query-fdsets" => json!({"return": []}),
                    "query-status" => json!({"return": {"status": "running", "running": true}}),
                    "query-version" => {
                        json!({"return": {"qemu": {"major": 10, "minor": 0, "micro": 2}}})
                    }
                    "query-kvm" => json!({"return": {"enabled": false, "present": false}}),
                    "migrate" => {
                        state = "active".into();
                        polls = rng.u32(0..10);
                        json!({"return": {}})
                    }
                    "query-migrate" => {
                        if state == "active" {
                            // Copying takes time (simulated).
                            std::thread::sleep(Duration::from_millis(5));
                            if polls == 0 {
                                state = "pre-switchover".into();
                            } else {
                                polls -= 1;
                            }
                        }
                        let r = json!({"return": {"status": state, "ram": {"transferred": 1, "remaining": 1}}});
                        if state == "completed" || state == "cancelled" {
                            state = "none".into();
                        }
                        r
                    }
                    "migrate-continue" if state == "pre-switchover" => {
                        let mut lg = log.lock().unwrap();
                        lg.continues += 1;
                        let now = Instant::now();
                        for (id, until) in held.lock().unwrap().iter() {
                            // 50 ms of slack for the agent's wall clock vs ours.
                            if *until > now + Duration::from_millis(50) {
                                lg.continued_while_held.push(format!("hold {id}"));
                            }
                        }
                        state = "completed".into();
                        json!({"return": {}})
                    }
                    "migrate_cancel" => {
                        log.lock().unwrap().cancels += 1;
                        state = "cancelled".into();
                        json!({"return": {}})
                    }
                    _ => json!({"return": {}}),
                };
                reply["id"] = v["id"].clone();
                if writeln!(w, "{reply}").is_err() {
                    break;
                }
                // Wake the agent's event wait at once.
                let ev = json!({"event": "MIGRATION", "data": {"status": state}, "timestamp": {}});
                let _ = writeln!(w, "{ev}");
            }
        }
    });
}

#[path = "support.rs"]
mod support;
use support::Agent;

fn control(dir: &Path, req: Value) -> Option<Value> {
    let mut s = UnixStream::connect(dir.join("control.sock")).ok()?;
    writeln!(s, "{req}").ok()?;
    for line in BufReader::new(s).lines() {
        let v: Value = serde_json::from_str(&line.ok()?).ok()?;
        if v["kind"] != "progress" {
            return Some(v);
        }
    }
    None // the agent died mid-request
}

/// The guest end of the doorbell, with a reader thread that applies the
/// agent's decisions to the guest's view.
struct Guest {
    w: UnixStream,
    seq: u32,
    answers: mpsc::Receiver<(u32, bool, u32)>,
}

fn guest(s: UnixStream) -> Guest {
    let w = s.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = s;
        let mut dec = Decoder::new();
        let mut b = [0u8; 256];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 {
                return;
            }
            for &x in &b[..n] {
                if dec.push(x) == Event::Frame {
                    if let Ok((
                        h,
                        Message::Decision {
                            granted, lease_ms, ..
                        },
                    )) = wire::decode(dec.frame())
                    {
                        let _ = tx.send((h.reply_to, granted, lease_ms));
                    }
                }
            }
        }
    });
    Guest {
        w,
        seq: 0,
        answers: rx,
    }
}

impl Guest {
    fn send(&mut self, m: Message<'_>) -> u32 {
        self.seq += 1;
        let mut b = [0u8; 128];
        let n = wire::encode(
            &m,
            Header {
                seq: self.seq,
                reply_to: 0,
            },
            &mut b,
        )
        .unwrap();
        let _ = self.w.write_all(&b[..n]);
        self.seq
    }

    /// Locks; records the hold in `held` before the agent could act on a
    /// later switchover (the agent decided before answering).
    fn lock(&mut self, hold: u32, lease_ms: u32, held: &Held) {
        let l = miglock_abi::types::make_label("inv").unwrap();
        let asked = Instant::now();
        let seq = self.send(Message::Lock {
            hold,
            reason: 1,
            lease_ms,
            label: l,
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Ok((r, granted, lease)) = self
            .answers
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if r == seq {
                if granted {
                    held.lock()
                        .unwrap()
                        .insert(hold, asked + Duration::from_millis(lease.into()));
                }
                return;
            }
        }
    }

    fn unlock(&mut self, hold: u32, held: &Held) {
        // Forget it first: from now on the guest no longer relies on it.
        held.lock().unwrap().remove(&hold);
        self.send(Message::Unlock { hold });
    }
}

/// Replays the audit log; returns the switchovers that happened while a
/// granted hold was live.
fn replay(audit: &str) -> Vec<String> {
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut bad = Vec::new();
    for line in audit.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        // Leases are on the lease clock, which each record also carries.
        let ts = r["mono_ms"].as_u64().unwrap_or(0);
        match r["event"].as_str().unwrap_or("") {
            "lock" | "renew" if r["granted"] == true => {
                // The lease ran from the decision, a little before the record.
                let until = r["until_ms"]
                    .as_u64()
                    .unwrap_or(ts + r["lease_ms"].as_u64().unwrap());
                live.insert(r["hold"].as_u64().unwrap(), until);
            }
            "unlock" => {
                live.remove(&r["hold"].as_u64().unwrap());
            }
            "migrate-forced" => live.clear(),
            "migrate-switchover" => {
                for (h, until) in &live {
                    if *until > ts {
                        bad.push(format!(
                            "switchover at {ts} while hold {h} was live until {until}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    bad
}

fn schedule(seed: u64, steps: usize) -> (usize, usize, usize) {
    let dir = std::env::temp_dir().join(format!("miglockd-inv-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\ncontrol = \"{d}/control.sock\"\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/bell.sock\"\nqmp = \"{d}/qmp.sock\"\n"
        ),
    )
    .unwrap();
    let held: Held = Arc::default();
    let log: Arc<Mutex<QemuLog>> = Arc::default();
    fake_qemu(&dir.join("qmp.sock"), held.clone(), log.clone(), seed);
    let bell = UnixListener::bind(dir.join("bell.sock")).unwrap();
    let mut agent = Agent::start(&dir);
    let (s0, _) = bell.accept().unwrap();
    let mut g = guest(s0);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut migrations = Vec::new();
    let mut restarts = 0;
    for _ in 0..steps {
        match rng.u8(0..30) {
            0..=5 => g.lock(rng.u32(1..4), rng.u32(5..80), &held),
            6..=13 => {
                let h = rng.u32(1..4);
                g.unlock(h, &held);
            }
            14..=28 => {
                let dir = dir.clone();
                migrations.push(std::thread::spawn(move || {
                    control(
                        &dir,
                        json!({"cmd": "migrate", "vm": "vm", "to": "tcp:x", "mode": "precopy"}),
                    )
                }));
                // Often race a lock against the migration just requested.
                if rng.bool() {
                    std::thread::sleep(Duration::from_millis(rng.u64(0..20)));
                    g.lock(rng.u32(1..4), rng.u32(5..80), &held);
                }
            }
            _ => {
                // Kill the agent mid-whatever and start a new one.
                drop(agent);
                agent = Agent::start(&dir);
                let (s, _) = bell.accept().unwrap();
                g = Guest {
                    answers: guest(s.try_clone().unwrap()).answers,
                    w: s,
                    seq: g.seq,
                };
                restarts += 1;
            }
        }
        // Random pacing so requests interleave differently per seed.
        std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
    }
    for m in migrations {
        let _ = m.join();
    }
    let audit_path = agent.dir.join("audit.jsonl");
    drop(agent);
    let audit = std::fs::read_to_string(audit_path).unwrap();
    let bad = replay(&audit);
    let lg = log.lock().unwrap();
    assert!(bad.is_empty(), "seed {seed}: audit replay: {bad:?}");
    assert!(
        lg.continued_while_held.is_empty(),
        "seed {seed}: switchover while the guest held {:?}",
        lg.continued_while_held
    );
    if std::env::var_os("MIGLOCK_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    (lg.continues, lg.cancels, restarts)
}

#[test]
fn no_unforced_migration_of_a_locked_vm() {
    let (mut continues, mut cancels, mut restarts) = (0, 0, 0);
    for seed in 1..=8 {
        let (c, x, r) = schedule(seed, 60);
        continues += c;
        cancels += x;
        restarts += r;
    }
    eprintln!("switchovers {continues}, cancels {cancels}, agent restarts {restarts}");
    // The schedules must really exercise both outcomes.
    assert!(
        continues > 0 && cancels > 0,
        "switchovers {continues}, cancels {cancels}"
    );
}
