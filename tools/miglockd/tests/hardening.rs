// SPDX-License-Identifier: GPL-2.0

//! The agent against its own restarts, a second instance, a full disk and
//! guests that report holds they were never granted (issue 22).

use miglock_abi::wire::{self, Message};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{fake_qemu, listen, wait_for, Agent, FakeQemu, Guest};

/// A directory with an `agent.toml` for one VM `vm` on a fake QEMU whose
/// migrations complete; `policy` and `extra` are pasted into its
/// `[vm.policy]` and top level.
fn setup(name: &str, policy: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-hard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir, policy, extra);
    fake_qemu(&dir.join("qmp.sock"), FakeQemu::default());
    dir
}

fn write_config(dir: &Path, policy: &str, extra: &str) {
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n{extra}\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/vm.sock\"\nqmp = \"{d}/qmp.sock\"\n\
             [vm.policy]\n{policy}\n"
        ),
    )
    .unwrap();
}

/// One control request; its final reply (progress lines passed over).
fn control(dir: &Path, req: Value) -> Value {
    let sock = dir.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "control socket: {e}");
                std::thread::sleep(Duration::from_millis(10)); // polling pace
            }
        }
    };
    writeln!(s, "{req}").unwrap();
    for line in BufReader::new(s).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["kind"] != "progress" {
            return v;
        }
    }
    panic!("no reply to {req}");
}

fn status(dir: &Path) -> Value {
    control(dir, json!({"cmd": "status"}))["data"]["vms"]["vm"].clone()
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events(dir: &Path, event: &str) -> Vec<Value> {
    audit(dir)
        .into_iter()
        .filter(|r| r["event"] == event)
        .collect()
}

fn migrate(dir: &Path, force: bool) -> Value {
    let mut req = json!({"cmd": "migrate", "vm": "vm", "to": "tcp:127.0.0.1:1", "mode": "precopy"});
    if force {
        req["force"] = json!(true);
        req["reason"] = json!("evacuating the host");
    }
    control(dir, req)
}

/// A forced migration lifts "migration = no" for itself only: the static
/// setting is back afterwards (it was left `true` for ever).
#[test]
fn a_forced_migration_puts_the_static_setting_back() {
    let dir = setup("forced", "migration = false", "");
    let _door = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    assert_eq!(status(&dir)["locked"], true);
    let r = migrate(&dir, true);
    assert_eq!(r["kind"], "ok", "{r}");
    let st = status(&dir);
    assert_eq!(st["policy"]["migration"], false, "{st}");
    assert_eq!(st["locked"], true, "{st}");
    let r = migrate(&dir, false);
    assert_ne!(r["kind"], "ok", "an unforced migration passed: {r}");
}

fn state(g: &mut Guest, holders: u32, static_lock: bool) {
    g.send(Message::State {
        holders,
        static_lock,
        earliest_expiry_ms: 60_000,
    });
    g.sync();
}

fn blocker_adds(dir: &Path) -> usize {
    events(dir, "blocker")
        .iter()
        .filter(|r| r["state"] == "added")
        .count()
}

/// With `guest_locks = false`, a guest reporting holds (or its static
/// lock) leaves the VM unlocked: no blocker, a migration passes, and the
/// attempt is audited as a refused lock. It once locked the VM for
/// `max_lease_ms` per report, with no policy asked.
#[test]
fn a_report_of_holds_is_no_bypass_of_the_policy() {
    let dir = setup("bypass", "guest_locks = false", "");
    let door = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    g.send(Message::State {
        holders: 1,
        static_lock: false,
        earliest_expiry_ms: 60_000,
    });
    // The guest hears that what it holds is void.
    assert!(matches!(
        g.notice(),
        wire::Notice::ForcedRelease {
            reason: wire::FORCED_UNCOVERED
        }
    ));
    state(&mut g, 2, true);
    // Repeated, a refused report is not decided (nor recorded) again.
    for _ in 0..50 {
        state(&mut g, 2, true);
    }
    let st = status(&dir);
    assert_eq!(st["locked"], false, "{st}");
    assert_eq!(blocker_adds(&dir), 0);
    let tried = events(&dir, "guest-state-lock");
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(tried
        .iter()
        .all(|r| r["granted"] == false && r["refusal"] == wire::REFUSE_POLICY));
    let r = migrate(&dir, false);
    assert_eq!(r["kind"], "ok", "{r}");
}

/// Allowed, a report is decided as one lock: the quota bounds it, so
/// re-sending it cannot keep the VM locked for ever.
#[test]
fn a_repeated_report_cannot_outlast_the_quota() {
    let dir = setup("quota", "quota_ms = 300\nmax_lease_ms = 20000", "");
    let door = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    state(&mut g, 1, false);
    let st = status(&dir);
    assert_eq!(st["locked"], true, "{st}");
    let granted = &events(&dir, "guest-state-lock")[0];
    assert_eq!(granted["granted"], true, "{granted}");
    assert_eq!(granted["lease_ms"], 300, "{granted}");
    wait_for(Duration::from_secs(10), "the lease to end", || {
        status(&dir)["locked"] == false
    });
    // The same report again, and again changed: refused, quota spent.
    state(&mut g, 1, false);
    state(&mut g, 2, false);
    assert_eq!(status(&dir)["locked"], false);
    let tried = events(&dir, "guest-state-lock");
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[1..]
        .iter()
        .all(|r| r["granted"] == false && r["refusal"] == wire::REFUSE_QUOTA));
}

/// A report the grants cover (after a restart, the journal's holds) costs
/// no new decision.
#[test]
fn granted_holds_survive_a_restart_without_a_new_decision() {
    let dir = setup("regrant", "", "");
    let door = listen(&dir.join("vm.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    assert!(g.lock(1, "db", 60_000).0);
    drop(agent);
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    state(&mut g, 1, false);
    assert_eq!(status(&dir)["locked"], true);
    assert!(events(&dir, "guest-state-lock").is_empty());
    // One more than granted: that one is decided.
    state(&mut g, 2, false);
    let tried = events(&dir, "guest-state-lock");
    assert_eq!(tried.len(), 1, "{tried:?}");
    assert_eq!(tried[0]["granted"], true);
}

/// A second agent on the same state directory refuses to start, saying
/// why, and leaves the first one's control socket and journal alone (it
/// once unlinked the one and truncated the other).
#[test]
fn a_second_instance_refuses_and_touches_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = setup("second", "", "");
    let door = listen(&dir.join("vm.sock"));
    let _first = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    assert!(g.lock(1, "db", 60_000).0);
    let journal = dir.join("state/state.json.journal");
    let socket = std::fs::metadata(dir.join("control.sock")).unwrap().ino();
    let before = std::fs::read(&journal).unwrap();
    assert!(!before.is_empty());
    // Its own stderr file: the first agent's is still open.
    let second_dir = dir.join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let mut cmd = Agent::command(&second_dir);
    cmd.arg("--config").arg(dir.join("agent.toml"));
    let mut second = Agent::spawn(&second_dir, cmd);
    assert!(!second.exit_status(Duration::from_secs(10)).success());
    let log = second.log();
    assert!(log.contains("another miglockd is running"), "{log}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
    assert_eq!(
        std::fs::metadata(dir.join("control.sock")).unwrap().ino(),
        socket
    );
    assert_eq!(status(&dir)["locked"], true);
}

/// A full disk under the audit log: a lock that cannot be recorded is
/// refused (not granted unrecorded), and the failure shows in the status
/// and the log.
#[test]
fn a_decision_that_cannot_be_recorded_is_refused() {
    let dir = setup("full", "", "");
    let config = std::fs::read_to_string(dir.join("agent.toml")).unwrap();
    let audit_line = config.lines().find(|l| l.starts_with("audit =")).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        config.replace(audit_line, "audit = \"/dev/full\""),
    )
    .unwrap();
    let door = listen(&dir.join("vm.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    assert_eq!(
        g.lock(1, "db", 60_000),
        (false, 0, wire::REFUSE_UNENFORCEABLE)
    );
    let st = control(&dir, json!({"cmd": "status"}));
    assert_eq!(st["data"]["vms"]["vm"]["locked"], false, "{st}");
    assert!(st["data"]["unrecorded"].as_u64().unwrap() > 0, "{st}");
    assert!(agent.log().contains("cannot write the audit log"));
    // Nor does a report get in by the side door.
    state(&mut g, 1, false);
    assert_eq!(status(&dir)["locked"], false);
}

/// `miglockctl policy` outlives a restart (the file once won every time);
/// once the file is edited, the file's policy wins.
#[test]
fn runtime_policy_survives_a_restart_until_the_file_changes() {
    let dir = setup("policy", "max_lease_ms = 20000", "");
    let door = listen(&dir.join("vm.sock"));
    let agent = Agent::start(&dir);
    let _g = Guest::accept(&door);
    let r = control(
        &dir,
        json!({"cmd": "policy", "vm": "vm", "set": {"guest_locks": false}}),
    );
    assert_eq!(r["kind"], "ok", "{r}");
    drop(agent);
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    assert_eq!(g.lock(1, "db", 1000), (false, 0, wire::REFUSE_POLICY));
    assert_eq!(status(&dir)["policy"]["guest_locks"], false);
    assert_eq!(events(&dir, "policy-restored")[0]["source"], "runtime");
    drop(agent);
    write_config(&dir, "max_lease_ms = 1234", "");
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    assert_eq!(g.lock(1, "db", 60_000), (true, 1234, 0));
    let p = &status(&dir)["policy"];
    assert_eq!(p["guest_locks"], true, "{p}");
    assert_eq!(events(&dir, "policy-restored")[1]["source"], "config");
}

/// Policy changes and forced migrations name their caller (uid and pid,
/// from the kernel) in the audit log.
#[test]
fn the_callers_credentials_are_audited() {
    let dir = setup("peer", "", "");
    let _door = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    let r = control(
        &dir,
        json!({"cmd": "policy", "vm": "vm", "set": {"migration": false}}),
    );
    assert_eq!(r["kind"], "ok", "{r}");
    assert_eq!(migrate(&dir, true)["kind"], "ok");
    let uid = u64::from(rustix::process::getuid().as_raw());
    for event in ["policy", "migrate-force-requested"] {
        let rec = &events(&dir, event)[0];
        assert_eq!(rec["peer"]["pid"], u64::from(std::process::id()), "{rec}");
        assert_eq!(rec["peer"]["uid"], uid, "{rec}");
    }
}

/// A state saved by an older agent (wall-clock times) is moved onto the
/// lease clock: its hold keeps what was left of it. One saved in another
/// host boot (another clock, and its QEMU gone) keeps no hold.
#[test]
fn saved_leases_are_read_on_the_lease_clock() {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let save = |dir: &Path, boot: Option<&str>, until: u64| {
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let mut l = json!({"holds": {"1": {"reason": 2, "label": "db",
            "since_ms": until - 60_000, "until_ms": until}}});
        if let Some(b) = boot {
            l["host_boot"] = json!(b);
        }
        std::fs::write(dir.join("state/state.json"), json!({ "vm": l }).to_string()).unwrap();
    };
    let dir = setup("clock-wall", "", "");
    let _door = listen(&dir.join("vm.sock"));
    save(&dir, None, wall + 60_000);
    let agent = Agent::start(&dir);
    let st = status(&dir);
    let left = st["holds"]["1"]["left_ms"].as_u64().expect("the hold kept");
    assert!((50_000..=60_000).contains(&left), "{st}");
    drop(agent);

    let dir = setup("clock-boot", "", "");
    let _door = listen(&dir.join("vm.sock"));
    save(&dir, Some("00000000-0000-0000-0000-000000000000"), 1 << 50);
    let _agent = Agent::start(&dir);
    let st = status(&dir);
    assert_eq!(st["locked"], false, "{st}");
    let rec = &events(&dir, "state-clock")[0];
    assert_eq!(rec["holds_forgotten"], 1, "{rec}");
}

/// Each journal line is what one decision changed: after thousands of
/// lock/unlock pairs it is as short as the first (each line once held the
/// whole ledger, with one usage interval per lock ever made in the window).
#[test]
fn journal_lines_stay_short_however_many_decisions() {
    let dir = setup("lines", "", "[limits]\nrate = 1e9\nburst = 1e9\n");
    let door = listen(&dir.join("vm.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    for i in 0..3000 {
        let hold = i % 8 + 1;
        assert!(g.lock(hold, "pair", 60_000).0, "lock {i}");
        g.send(Message::Unlock { hold });
    }
    g.sync();
    let journal = std::fs::read_to_string(dir.join("state/state.json.journal")).unwrap();
    let longest = journal.lines().map(str::len).max().unwrap();
    assert!(longest < 400, "a journal line of {longest} bytes");
    let st = status(&dir);
    assert_eq!(st["locked"], false, "{st}");
}
