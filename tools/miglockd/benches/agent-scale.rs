// SPDX-License-Identifier: GPL-2.0

//! `bench-agent-scale`: one agent serving 1, 10 and 100 VMs whose guests
//! all lock and unlock at once (scripted guests on the doorbell sockets,
//! a fake QEMU monitor per VM, so every first lock installs a blocker over
//! QMP). Each size runs twice:
//!
//! - *offered load*: every guest locks [`PER_VM_PER_S`] times a second at
//!   fixed times (phases spread), 2500 decisions a second host-wide at 100
//!   VMs; a lock's time counts from when it was due, so a guest that fell
//!   behind is charged for it (no coordinated omission);
//! - *saturated*: every guest locks again as soon as it has its answer.
//!
//! Prints, and writes to `out/bench/agent-scale.json`, per size: how many
//! decisions, how many a second host-wide, and each lock's time to its
//! decision (p50, p99) under the offered load, with the saturated figures
//! beside them. Figures, not pass/fail: `make bench` runs it.
//!
//! Then a *long run*: one guest makes [`LONG`] lock/unlock pairs back to
//! back, and the cost per decision of the first thousand is set beside
//! that of the thousand after [`LONG`] (the ledger and its journal lines
//! must not grow with the history: within 20 %).

#[path = "../tests/support.rs"]
mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{fake_qemu, listen, Agent, FakeQemu, Guest};

/// Lock/unlock pairs each guest makes (within the default rate limit's
/// burst, so the limit refuses none).
const PAIRS: u32 = 100;

/// Locks a second each guest makes under the offered load.
const PER_VM_PER_S: f64 = 25.0;

/// Decisions in the long run.
const LONG: u32 = 100_000;

/// Decisions in each measured stretch of the long run.
const STRETCH: u32 = 1000;

/// The long run: [`LONG`] decisions, then [`STRETCH`] more measured.
fn long_run() -> Value {
    let dir = std::env::temp_dir().join(format!("miglockd-scale-long-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // No QMP: the ledger and the journal are what is measured; no rate
    // limit gets in the way of a guest going as fast as it can.
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n[limits]\nrate = 1e9\nburst = 1e9\n\
             [[vm]]\nname = \"vm0\"\ndoorbell = \"{d}/vm0.sock\"\n"
        ),
    )
    .unwrap();
    let door = listen(&dir.join("vm0.sock"));
    let agent = Agent::start(&dir);
    let mut g = Guest::accept(&door);
    let mut stretch = |n: u32| {
        let t = Instant::now();
        let mut lat = Vec::with_capacity(n as usize);
        for i in 0..n {
            let l = Instant::now();
            let (granted, _, reason) = g.lock(i % 8 + 1, "long", 60_000);
            lat.push(l.elapsed().as_secs_f64() * 1e6);
            assert!(granted, "refused (reason {reason})");
            g.send(miglock_abi::wire::Message::Unlock { hold: i % 8 + 1 });
        }
        lat.sort_by(f64::total_cmp);
        (
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n),
            pct(&lat, 0.5),
        )
    };
    let (first, first_p50) = stretch(STRETCH);
    stretch(LONG - STRETCH);
    let (last, last_p50) = stretch(STRETCH);
    let journal = std::fs::read_to_string(dir.join("state.json.journal")).unwrap_or_default();
    let longest_line = journal.lines().map(str::len).max().unwrap_or(0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    json!({
        "vms": 1,
        "long_run": true,
        "decisions": LONG + STRETCH,
        "first_us_per_decision": r2(first),
        "after_us_per_decision": r2(last),
        "first_p50_us": r2(first_p50),
        "after_p50_us": r2(last_p50),
        "after_over_first": r2(last / first),
        "within_20_percent": last <= first * 1.2,
        "longest_journal_line_bytes": longest_line,
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// One run of `vms` guests; `paced`: at [`PER_VM_PER_S`] each.
fn run(vms: usize, paced: bool) -> Value {
    let dir = std::env::temp_dir().join(format!("miglockd-scale-{vms}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let mut toml = format!(
        "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\ncontrol = \"{d}/control.sock\"\n"
    );
    let mut doors = Vec::new();
    for i in 0..vms {
        toml.push_str(&format!(
            "[[vm]]\nname = \"vm{i}\"\ndoorbell = \"{d}/vm{i}.sock\"\nqmp = \"{d}/vm{i}-qmp.sock\"\n"
        ));
        doors.push(listen(&dir.join(format!("vm{i}.sock"))));
        fake_qemu(&dir.join(format!("vm{i}-qmp.sock")), FakeQemu::default());
    }
    std::fs::write(dir.join("agent.toml"), toml).unwrap();
    let agent = Agent::start(&dir);
    let guests: Vec<Guest> = doors.iter().map(Guest::accept).collect();
    let start = std::sync::Barrier::new(vms);
    let t0 = Instant::now();
    let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
        let start = &start;
        let handles: Vec<_> = guests
            .into_iter()
            .enumerate()
            .map(|(k, mut g)| {
                let phase = k as f64 / vms as f64;
                s.spawn(move || {
                    start.wait();
                    let period = Duration::from_secs_f64(1.0 / PER_VM_PER_S);
                    // Phases spread over one period, so the load is even.
                    let first = Instant::now() + period.mul_f64(phase);
                    let mut v = Vec::with_capacity(PAIRS as usize);
                    for i in 0..PAIRS {
                        let t = if paced {
                            // Load generation, not synchronisation: the
                            // guest's next lock is due then.
                            let due = first + period * i;
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            due
                        } else {
                            Instant::now()
                        };
                        let (granted, _, reason) = g.lock(i % 8 + 1, "scale", 60_000);
                        v.push(t.elapsed().as_secs_f64() * 1e3);
                        assert!(granted, "refused (reason {reason})");
                        g.send(miglock_abi::wire::Message::Unlock { hold: i % 8 + 1 });
                    }
                    v
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    // Each guest's first lock installs the blocker (QMP); the rest do not.
    let mut later: Vec<f64> = lat.iter().flat_map(|v| v.iter().skip(1).copied()).collect();
    later.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    let decisions = all.len();
    json!({
        "vms": vms,
        "offered_per_s": if paced { Some(PER_VM_PER_S * vms as f64) } else { None },
        "decisions": decisions,
        "decisions_per_s": (decisions as f64 / secs).round(),
        "p50_ms": (pct(&all, 0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(&all, 0.99) * 1000.0).round() / 1000.0,
        "p99_ms_without_installs": (pct(&later, 0.99) * 1000.0).round() / 1000.0,
    })
}

fn main() {
    // `cargo bench` passes its own flags; a name filter is all we heed.
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let long_only = std::env::args().any(|a| a == "long");
    let mut rows = Vec::new();
    for vms in [1, 10, 100] {
        if long_only || only.is_some_and(|o| o != vms) {
            continue;
        }
        let mut r = run(vms, true);
        let sat = run(vms, false);
        for (what, r) in [("offered", &r), ("saturated", &sat)] {
            println!(
                "bench agent-scale: {:>3} VMs, {what:>9}: {:>6} decisions, {:>7} decisions/s, lock p50 {:.3} ms, \
                 p99 {:.3} ms (without the first locks, which install blockers: {:.3} ms)",
                r["vms"], r["decisions"], r["decisions_per_s"], r["p50_ms"].as_f64().unwrap_or(0.0),
                r["p99_ms"].as_f64().unwrap_or(0.0),
                r["p99_ms_without_installs"].as_f64().unwrap_or(0.0)
            );
        }
        r["saturated"] = sat;
        rows.push(r);
    }
    if only.is_none() {
        let r = long_run();
        println!(
            "bench agent-scale: long run, {} decisions: first {STRETCH} {} us/decision (p50 {} us), \
             {STRETCH} after {LONG} {} us/decision (p50 {} us): x{} ({}), longest journal line {} bytes",
            r["decisions"], r["first_us_per_decision"], r["first_p50_us"],
            r["after_us_per_decision"], r["after_p50_us"], r["after_over_first"],
            if r["within_20_percent"] == true { "within 20 %" } else { "NOT within 20 %" },
            r["longest_journal_line_bytes"]
        );
        rows.push(r);
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../out/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("agent-scale.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
    println!(
        "bench agent-scale: wrote {}",
        out.join("agent-scale.json").display()
    );
    let _ = Duration::ZERO;
}
