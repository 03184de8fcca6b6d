// SPDX-License-Identifier: GPL-2.0

//! The real miglockd binary against scripted guests on fake doorbell
//! sockets (standing in for QEMU's chardevs) and its control socket.

use miglock_abi::wire::{self, Header, Message};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{listen, wait_for, Agent, Guest, Kind};

trait Control {
    fn control(&self, req: Value) -> Value;
}

impl Control for Agent {
    fn control(&self, req: Value) -> Value {
        let sock = self.dir.join("control.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    // The agent is still starting: its socket is not bound yet.
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("control socket: {e}"),
            }
        };
        writeln!(s, "{req}").unwrap();
        for line in BufReader::new(s).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["kind"] != "progress" {
                return v;
            }
        }
        panic!("no reply");
    }
}

fn setup(name: &str) -> PathBuf {
    setup_with(name, "")
}

fn setup_with(name: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            r#"
state = "{d}/state.json"
audit = "{d}/audit.jsonl"
control = "{d}/control.sock"
{extra}
[[vm]]
name = "good"
doorbell = "{d}/good.sock"
[vm.policy]
max_lease_ms = 20000
[[vm]]
name = "bad"
doorbell = "{d}/bad.sock"
qmp = "{d}/bad-qmp.sock"
"#
        ),
    )
    .unwrap();
    dir
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn decides_records_and_survives_a_restart() {
    let dir = setup("restart");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let seq = g.send(Message::Hello {
        boot_id: 1,
        features: 0,
    });
    assert!(matches!(g.recv(), (r, Kind::Welcome) if r == seq));

    // The policy caps the lease.
    assert_eq!(g.lock(5, "db commit", 60_000), (true, 20_000, 0));
    let st = agent.control(json!({"cmd": "status"}));
    let vm = &st["data"]["vms"]["good"];
    assert_eq!(vm["locked"], true, "{st}");
    assert!(
        vm["reasons"][0].as_str().unwrap().contains("db commit"),
        "{st}"
    );
    assert_eq!(st["data"]["vms"]["bad"]["locked"], false);

    // Killed mid-lock: the new agent still knows, and re-announces itself.
    drop(agent);
    let agent = Agent::start(&dir);
    let st = agent.control(json!({"cmd": "status"}));
    assert_eq!(
        st["data"]["vms"]["good"]["locked"], true,
        "lost the lock across a restart: {st}"
    );
    let mut g = Guest::accept(&good);
    g.send(Message::Unlock { hold: 5 });
    g.send(Message::State {
        holders: 0,
        static_lock: false,
        earliest_expiry_ms: 0,
    });
    g.sync();
    let st = agent.control(json!({"cmd": "status"}));
    assert_eq!(st["data"]["vms"]["good"]["locked"], false, "{st}");
    let a = audit(&dir);
    assert!(a
        .iter()
        .any(|r| r["event"] == "lock" && r["granted"] == true && r["label"] == "db commit"));
    assert!(a.iter().any(|r| r["event"] == "unlock" && r["hold"] == 5));
    assert_eq!(a.iter().filter(|r| r["event"] == "agent-start").count(), 2);
}

/// A burst of decisions, then the agent is killed before the committer's
/// batch reached the disk: every decision the guest heard is in the audit
/// log, whole and in order, and every hold it was granted is in the state
/// the next agent loads (the kernel had both before the guest was answered).
#[test]
fn a_kill_mid_batch_loses_no_decision_and_no_lock() {
    let dir = setup_with("batch", "[storage]\ncommit_ms = 60000\n");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let holds: Vec<u32> = (1..=40).collect();
    for &h in &holds {
        assert!(g.lock(h, &format!("burst {h}"), 10_000).0, "hold {h}");
    }
    // SIGKILL: nothing has been synced (the batch waits a minute).
    drop(agent);
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "a torn record");
    let granted: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a whole record"))
        .filter(|r| r["event"] == "lock" && r["granted"] == true)
        .map(|r| r["hold"].as_u64().unwrap())
        .collect();
    assert_eq!(
        granted,
        holds.iter().map(|&h| u64::from(h)).collect::<Vec<_>>()
    );
    let agent = Agent::start(&dir);
    let st = agent.control(json!({"cmd": "status"}));
    let kept = st["data"]["vms"]["good"]["holds"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(kept, holds.len(), "{st}");
}

#[test]
fn refuses_invalid_requests_and_follows_policy() {
    let dir = setup("policy");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let seq = g.send(Message::Lock {
        hold: 1,
        reason: 0,
        lease_ms: 100,
        label: [0; 32],
    });
    assert_eq!(g.decision(seq), (false, 0, wire::REFUSE_INVALID));
    let seq = g.send(Message::Lock {
        hold: 1,
        reason: 1,
        lease_ms: 100,
        label: [b'x'; 32],
    });
    assert_eq!(g.decision(seq), (false, 0, wire::REFUSE_INVALID));

    let r = agent.control(json!({"cmd": "policy", "vm": "good", "set": {"guest_locks": false}}));
    assert_eq!(r["kind"], "ok", "{r}");
    assert_eq!(g.lock(2, "nope", 1000), (false, 0, wire::REFUSE_POLICY));
    // A 300 ms quota: a lease is capped by what is left of it, and once the
    // VM has been locked that long, locks are refused for the window.
    agent.control(
        json!({"cmd": "policy", "vm": "good", "set": {"guest_locks": true, "quota_ms": 300}}),
    );
    assert_eq!(g.lock(3, "a", 1000), (true, 300, 0));
    let t0 = Instant::now();
    while agent.control(json!({"cmd": "status"}))["data"]["vms"]["good"]["locked"] == true {
        assert!(t0.elapsed() < Duration::from_secs(5), "lease did not end");
        std::thread::yield_now();
    }
    assert_eq!(g.lock(5, "c", 1000), (false, 0, wire::REFUSE_QUOTA));

    // "migration = no" locks the VM on the host side; the gate refuses.
    agent.control(json!({"cmd": "policy", "vm": "bad", "set": {"migration": false}}));
    let st = agent.control(json!({"cmd": "status"}));
    assert_eq!(st["data"]["vms"]["bad"]["locked"], true);
    let r = agent.control(
        json!({"cmd": "migrate", "vm": "bad", "to": "tcp:127.0.0.1:1", "mode": "precopy"}),
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("is locked: policy: migration = no"),
        "{r}"
    );
    assert!(audit(&dir)
        .iter()
        .any(|r| r["event"] == "migrate-refused" && r["vm"] == "bad"));
    let forced = agent.control(
        json!({"cmd": "migrate", "vm": "bad", "to": "x", "mode": "precopy", "force": true}),
    );
    assert!(
        forced["message"].as_str().unwrap().contains("--reason"),
        "{forced}"
    );
    assert!(audit(&dir)
        .iter()
        .any(|r| r["event"] == "policy" && r["vm"] == "good"));
}

#[test]
fn a_hostile_guest_never_affects_another_vm() {
    let dir = setup("hostile");
    let good = listen(&dir.join("good.sock"));
    let bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let mut b = Guest::accept(&bad);
    // The bad guest: garbage, then a flood of valid but excessive frames.
    let flood = std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut junk = vec![0u8; 1 << 20];
        rng.fill(&mut junk);
        let _ = b.s.write_all(&junk);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            b.seq += 1;
            let mut f = [0u8; 64];
            let n = wire::encode(
                &Message::Ping,
                Header {
                    seq: b.seq,
                    reply_to: 0,
                },
                &mut f,
            )
            .unwrap();
            if b.s.write_all(&f[..n]).is_err() {
                break; // cut off by the agent: fine
            }
        }
    });
    // Meanwhile the good guest gets every answer promptly.
    let mut worst = Duration::ZERO;
    for i in 0..100 {
        let t = Instant::now();
        assert!(g.lock(10 + i, "work", 5000).0);
        g.send(Message::Unlock { hold: 10 + i });
        worst = worst.max(t.elapsed());
    }
    flood.join().unwrap();
    g.sync();
    assert!(worst < Duration::from_secs(1), "good VM waited {worst:?}");
    let st = agent.control(json!({"cmd": "status"}));
    let link = &st["data"]["vms"]["bad"]["link"];
    assert!(link["malformed"].as_u64().unwrap() > 0, "{st}");
    assert!(
        link["rate_dropped"].as_u64().unwrap() > 0 || link["cut"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(st["data"]["vms"]["good"]["link"]["malformed"], 0);
    assert_eq!(st["data"]["vms"]["good"]["locked"], false);
}

/// The libvirt hook decides from the domain XML libvirt hands it: it
/// passes other operations and other VMs, allows an unlocked miglock VM,
/// refuses a locked one naming the lock, and fails closed when a miglock
/// VM's state cannot be read, unless its configuration (beside it) says
/// otherwise.
#[test]
fn libvirt_hook_decides_from_the_domain_xml() {
    let dir = setup("hook");
    let hook = dir.join("qemu");
    // A link, not a copy: exec'ing a file just written fails with ETXTBSY
    // while another test's fork still holds the write descriptor.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_miglock-libvirt-hook"), &hook).unwrap();
    let run = |args: &[&str], xml: &str| {
        let mut c = Command::new(&hook)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let ns = miglock_control::LIBVIRT_NAMESPACE;
    let xml = |meta: &str| {
        format!(
            "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>g</name>\
             <metadata>{meta}</metadata><qemu:commandline>\
             <qemu:arg value='socket,id=miglock-bell,path=/run/x.sock,server=on'/>\
             </qemu:commandline></domain>"
        )
    };
    let locked = xml(&format!(
        "<m:lock xmlns:m='{ns}' locked='yes' reasons='guest hold 1: critical-operation &quot;hooked&quot;'/>"
    ));
    let unlocked = xml(&format!("<m:lock xmlns:m='{ns}' locked='no' reasons=''/>"));
    let begin = ["g", "migrate", "begin", "-"];
    assert!(run(&["g", "start", "begin", "-"], &locked).status.success());
    assert!(run(&begin, &unlocked).status.success());
    let out = run(&begin, &locked);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hooked"),
        "{out:?}"
    );
    // Not a miglock VM: none of its business.
    assert!(run(&begin, "<domain><name>other</name></domain>")
        .status
        .success());
    // A miglock VM without state: refused, unless configured to allow.
    let unknown = xml("");
    assert_eq!(run(&begin, &unknown).status.code(), Some(1));
    assert_eq!(run(&begin, "not xml").status.code(), Some(1));
    std::fs::write(dir.join("miglock.toml"), "unknown = \"allow\"\n").unwrap();
    assert!(run(&begin, &unknown).status.success());
    std::fs::write(dir.join("miglock.toml"), "unknown = \"maybe\"\n").unwrap();
    assert_eq!(run(&begin, &unknown).status.code(), Some(1));
}

/// `watch` streams each audit record as it is written.
#[test]
fn watch_streams_events() {
    let dir = setup("watch");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    agent.control(json!({"cmd": "status"})); // the control socket is up
    let mut s = UnixStream::connect(dir.join("control.sock")).unwrap();
    writeln!(s, "{}", json!({"cmd": "watch"})).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lines = BufReader::new(s).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["kind"], "progress"); // the watch is registered
    assert!(g.lock(9, "watched", 1000).0);
    // Other events (the other VM's link) may come first: find the lock.
    let ev = lines
        .by_ref()
        .take(20)
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .find(|v| v["kind"] == "event" && v["event"]["event"] == "lock")
        .expect("a lock event");
    assert_eq!(ev["event"]["label"], "watched");
}

/// Over its rate, a guest's lock requests are refused at once with
/// REFUSE_RATE, not left to time out.
#[test]
fn over_the_rate_requests_are_refused_not_dropped() {
    let dir = setup_with("rate", "[limits]\nrate = 5.0\nburst = 5.0\n");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let label = miglock_abi::types::make_label("burst").unwrap();
    let seqs: Vec<u32> = (0..30)
        .map(|i| {
            g.send(Message::Lock {
                hold: 100 + i,
                reason: 1,
                lease_ms: 1000,
                label,
            })
        })
        .collect();
    let t0 = Instant::now();
    let (mut granted, mut rate) = (0, 0);
    for seq in seqs {
        match g.decision(seq) {
            (true, _, _) => granted += 1,
            (false, _, r) if r == wire::REFUSE_RATE => rate += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answers took {:?}",
        t0.elapsed()
    );
    assert!(
        granted >= 5 && rate > 0,
        "granted {granted}, refused for rate {rate}"
    );
    drop(agent);
}

/// An unlock beyond the rate is still applied: it only releases, and
/// dropping it would keep the VM locked on the host for the whole lease.
#[test]
fn over_the_rate_unlocks_still_release() {
    let dir = setup_with("rateunlock", "[limits]\nrate = 5.0\nburst = 5.0\n");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    assert!(g.lock(1, "held", 60_000).0);
    for _ in 0..20 {
        g.send(Message::Ping); // use up the bucket
    }
    g.send(Message::Unlock { hold: 1 });
    // Wait for the agent to apply it (a condition, with a deadline well
    // inside the 60 s lease).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = agent.control(json!({"cmd": "status"}));
        let vm = &st["data"]["vms"]["good"];
        if vm["locked"] == false {
            assert!(vm["link"]["rate_dropped"].as_u64().unwrap() > 0, "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the over-rate unlock was dropped: {st}"
        );
        std::thread::yield_now();
    }
}

/// Repeating an unchanged state report costs no audit record (nor state
/// write): a guest cannot make the agent hit the disk in a loop.
#[test]
fn unchanged_state_reports_cost_nothing() {
    let dir = setup("samestate");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let _agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    for _ in 0..20 {
        g.send(Message::State {
            holders: 1,
            static_lock: false,
            earliest_expiry_ms: 5000,
        });
    }
    g.sync();
    let n = audit(&dir)
        .iter()
        .filter(|r| r["event"] == "guest-state")
        .count();
    assert_eq!(n, 1, "20 identical reports wrote {n} records");
}

impl Guest {
    fn send_hints(&mut self, batch: u32, ranges: &[wire::HintRange]) {
        self.frame(|hdr, b| wire::encode_hints(batch, ranges, hdr, b));
    }
}

fn hint(i: u64) -> wire::HintRange {
    wire::HintRange {
        start_pfn: i * 10,
        pages: (i % 7 + 1) as u32,
        score: 1000 - i as u32,
    }
}

/// A batch (workload figures, then two frames of ranges) arrives intact and
/// in order; invalid ranges are refused; `hints` shows the latest batch.
#[test]
fn hint_batches_arrive_intact_and_in_order() {
    let dir = setup("hints");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let ranges: Vec<_> = (0..100).map(hint).collect();
    g.send(Message::Workload {
        batch: 4,
        interval_ms: 1000,
        wss_pages: 5000,
        dirty_pages_per_s: 300,
        pfn_limit: 262_144,
    });
    g.send_hints(4, &ranges[..wire::MAX_HINTS]);
    g.send_hints(4, &ranges[wire::MAX_HINTS..]);
    // Beyond pfn_limit: refused whole, the batch stays as it was.
    g.send_hints(
        4,
        &[wire::HintRange {
            start_pfn: 262_143,
            pages: 2,
            score: 1,
        }],
    );
    g.sync();
    let h = agent.control(json!({"cmd": "hints", "vm": "good", "all": true}));
    let d = &h["data"];
    assert_eq!(d["latest"]["batch"], 4, "{h}");
    assert_eq!(d["latest"]["workload"]["wss_pages"], 5000);
    assert_eq!(d["latest"]["workload"]["dirty_pages_per_s"], 300);
    let got: Vec<(u64, u64, u64)> = d["latest"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["start_pfn"].as_u64().unwrap(),
                r["pages"].as_u64().unwrap(),
                r["score"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u64)> = ranges
        .iter()
        .map(|r| (r.start_pfn, r.pages.into(), r.score.into()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(d["stats"]["invalid"], 1);
    // The next batch replaces it.
    g.send_hints(5, &ranges[..3]);
    g.sync();
    let h = agent.control(json!({"cmd": "hints", "vm": "good"}));
    assert_eq!(h["data"]["latest"]["batch"], 5);
    assert_eq!(h["data"]["latest"]["ranges"], 3);
    let other = agent.control(json!({"cmd": "hints", "vm": "bad"}));
    assert!(other["data"]["latest"].is_null(), "{other}");
}

/// A flood of hints is cut to the hint rate and never costs lock requests
/// their rate: the lock right after it is granted.
#[test]
fn hint_floods_never_delay_locks() {
    let dir = setup("hintflood");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let ranges: Vec<_> = (0..wire::MAX_HINTS as u64).map(hint).collect();
    for b in 0..1000 {
        g.send_hints(b, &ranges);
    }
    let t = Instant::now();
    let (granted, _, why) = g.lock(1, "after the flood", 5000);
    assert!(granted, "refused ({why}) after a hint flood");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let h = agent.control(json!({"cmd": "hints", "vm": "good"}));
    let dropped = h["data"]["stats"]["rate_dropped"].as_u64().unwrap();
    assert!(dropped > 500, "{h}");
    let st = agent.control(json!({"cmd": "status"}));
    assert_eq!(st["data"]["vms"]["good"]["link"]["rate_dropped"], 0, "{st}");
}

/// A `Held` hold inside a grant is recorded as the guest took it and keeps
/// the VM locked after the grant around it ends; outside any grant it is
/// decided as a lock, and refused, the guest is told its holds are void.
#[test]
fn held_holds_live_inside_grants_or_are_decided() {
    let dir = setup("held");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let held = |g: &mut Guest, hold: u32, label: &str, lease_ms: u32| {
        let label = miglock_abi::types::make_label(label).unwrap();
        g.send(Message::Held {
            hold,
            reason: 2,
            lease_ms,
            label,
        });
        g.sync();
    };
    let locked =
        || agent.control(json!({"cmd": "status"}))["data"]["vms"]["good"]["locked"] == true;
    let has = |what: &dyn Fn(&Value) -> bool| {
        wait_for(Duration::from_secs(5), "the audit record", || {
            audit(&dir).iter().any(what)
        })
    };
    held(&mut g, 5, "alone", 1000);
    has(&|r| r["event"] == "held-uncovered" && r["hold"] == 5 && r["granted"] == true);
    assert_eq!(g.lock(1, "a", 10_000), (true, 10_000, 0));
    held(&mut g, 2, "inside", 5_000);
    has(&|r| r["event"] == "held" && r["hold"] == 2 && r["label"] == "inside");
    g.send(Message::Unlock { hold: 1 });
    g.send(Message::Unlock { hold: 5 });
    g.sync();
    assert!(locked(), "the held hold keeps the VM locked");
    g.send(Message::Unlock { hold: 2 });
    g.sync();
    assert!(!locked());
    let r = agent.control(json!({"cmd": "policy", "vm": "good", "set": {"guest_locks": false}}));
    assert_eq!(r["kind"], "ok", "{r}");
    g.send(Message::Held {
        hold: 3,
        reason: 2,
        lease_ms: 1000,
        label: miglock_abi::types::make_label("refused").unwrap(),
    });
    let t0 = Instant::now();
    while g.recv().1 != Kind::Notice {
        assert!(t0.elapsed() < Duration::from_secs(5), "no forced release");
    }
    has(&|r| r["event"] == "held-uncovered" && r["hold"] == 3 && r["granted"] == false);
    assert!(!locked());
}

/// A `LockShort` (label bytes only) is decided as a `Lock` and answered
/// with a `Verdict`; the label reaches the audit log whole.
#[test]
fn short_locks_get_short_answers() {
    let dir = setup("short");
    let good = listen(&dir.join("good.sock"));
    let _bad = listen(&dir.join("bad.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&good);
    let short = |g: &mut Guest, hold: u32, label: &[u8]| {
        let seq = g.send(Message::LockShort {
            hold,
            reason: 2,
            lease_ms: 5_000,
            label,
        });
        loop {
            let (reply_to, kind) = g.recv();
            if reply_to == seq {
                return kind;
            }
        }
    };
    assert_eq!(short(&mut g, 1, b"txn 42"), Kind::Decision(true, 5_000, 0));
    wait_for(Duration::from_secs(5), "the audit record", || {
        audit(&dir)
            .iter()
            .any(|r| r["event"] == "lock" && r["hold"] == 1 && r["label"] == "txn 42")
    });
    // Not printable: refused as invalid, in the short form too.
    assert_eq!(
        short(&mut g, 2, b"\x01"),
        Kind::Decision(false, 0, wire::REFUSE_INVALID)
    );
    agent.control(json!({"cmd": "policy", "vm": "good", "set": {"guest_locks": false}}));
    assert_eq!(
        short(&mut g, 3, b"nope"),
        Kind::Decision(false, 0, wire::REFUSE_POLICY)
    );
}
