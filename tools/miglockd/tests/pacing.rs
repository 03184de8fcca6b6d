// SPDX-License-Identifier: GPL-2.0

//! What a guest's locks cost the host, and what the agent charges for: the
//! blocker installs (QMP calls into its QEMU), not the frames. A scripted
//! guest on the doorbell, a fake QEMU on the agent's monitor.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use miglock_abi::wire;
use support::{fake_qemu, listen, wait_for, Agent, FakeQemu, Guest};

fn setup(name: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-pacing-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fake_qemu(&dir.join("qmp.sock"), FakeQemu::default());
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\ncontrol = \"{d}/control.sock\"\n\
             {extra}\n[[vm]]\nname = \"vm\"\ndoorbell = \"{d}/vm.sock\"\nqmp = \"{d}/qmp.sock\"\n"
        ),
    )
    .unwrap();
    dir
}

fn status(agent: &Agent) -> Value {
    let mut s = UnixStream::connect(agent.dir.join("control.sock")).expect("control socket");
    writeln!(s, "{}", json!({"cmd": "status"})).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    v["data"]["vms"]["vm"].clone()
}

fn installs(dir: &Path) -> usize {
    blocker_records(dir, "added")
}

/// The audited blocker changes of one `state`.
fn blocker_records(dir: &Path, state: &str) -> usize {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "blocker" && r["state"] == state)
        .count()
}

/// 1000 lock/unlock pairs back to back at the default limits: none is
/// refused, and the whole burst costs one blocker install (it lingers
/// between the pairs).
#[test]
fn a_burst_of_pairs_is_never_refused_and_costs_one_install() {
    let dir = setup("burst", "");
    let bell = listen(&dir.join("vm.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&bell);
    let mut refused = Vec::new();
    for i in 0..1000 {
        let (granted, _, why) = g.lock(7, "pair", 5000);
        if !granted {
            refused.push((i, why));
        }
        g.send(wire::Message::Unlock { hold: 7 });
    }
    g.sync();
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert_eq!(status(&agent)["link"]["rate_dropped"], 0);
    assert_eq!(installs(&dir), 1, "one blocker for the burst");
}

/// With no linger, every lock of an unlocked VM installs the blocker anew:
/// past `blocker_burst` such locks are refused for rate (the application
/// gets EAGAIN), while a lock inside the blocked VM still costs nothing.
#[test]
fn blocker_installs_are_paced() {
    let dir = setup(
        "paced",
        "[limits]\nblocker_rate = 0.001\nblocker_burst = 2.0\n[blocker]\nlinger_ms = 0\n",
    );
    let bell = listen(&dir.join("vm.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&bell);
    for round in 0..2 {
        assert!(g.lock(1, "paid for", 5000).0, "round {round}");
        g.send(wire::Message::Unlock { hold: 1 });
        // Lifted: audited (status may still show the blocker of before
        // the grant for a moment, so it cannot say).
        wait_for(Duration::from_secs(5), "the blocker to be lifted", || {
            blocker_records(&dir, "removed") == round + 1
        });
    }
    let (granted, _, why) = g.lock(1, "one too many", 5000);
    assert!(!granted && why == wire::REFUSE_RATE, "{granted} {why}");
    assert_eq!(installs(&dir), 2);
    // Not a frame limit: the link is fine and other calls go through.
    g.sync();
    assert_eq!(status(&agent)["link"]["rate_dropped"], 0);
}
