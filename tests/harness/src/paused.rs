// SPDX-License-Identifier: GPL-2.0

//! `agent-restart-paused`: the source agent stops while `miglockctl
//! migrate` runs, and no migration may be left paused at "pre-switchover"
//! (the gate turns on `pause-before-switchover`, so QEMU waits there with
//! the guest's vCPUs stopped for a `migrate-continue` only an agent sends).
//!
//! Three rounds, each started by `miglockctl migrate` on a slow link (the
//! guest dirties faster than it copies, so it is still copying when the
//! agent stops):
//!
//! 1. `sigterm-copying`: SIGTERM while the gate follows the copy. The
//!    stopping agent cancels it and exits 0; the restarted agent finds
//!    nothing paused; the guest runs on here.
//! 2. `sigkill-locked`: SIGKILL while copying; the link is then freed, so
//!    QEMU reaches "pre-switchover" by itself and waits. The next agent
//!    starts with the VM statically locked (`migration = false`) and
//!    cancels the pause at once; the guest runs on here.
//! 3. `sigkill-then-sigterm-unlocked`: SIGKILL while copying, QEMU pauses
//!    as in 2; the restarted agent (unlocked VM, a long
//!    `orphan_continue_ms`) leaves the pause to its grace and is stopped
//!    with SIGTERM while the migration waits there: it continues the pause
//!    as it goes; the migration completes and the guest arrives whole at
//!    the destination. (A restarted agent continuing after the grace is
//!    tested with a fake QEMU, `tools/miglockd/tests/paused.rs`.)
//!
//! After each round the guest must prove it is alive where it now runs
//! (ticks go on, the workload verifies its memory), and QEMU must neither
//! still be at "pre-switchover" nor have a VM that is not running there
//! (`left_paused` counts the rounds where it was).

use crate::agentdemo::{host_fail, require, wait_for, Agent, Hosts};
use crate::pair::{self, last_tick_in, tick_of, Proof};
use crate::scenario::{Env, FailKind, Failure, Scenario};
use crate::vm::{Vm, Wait};
use anyhow::Context;
use miglock_qmp::Qmp;
use serde_json::{json, Value};
use std::process::Child;
use std::time::{Duration, Instant};

/// The restarted agents' `[switchover] orphan_continue_ms`.
const ORPHAN_MS: u64 = 300;
/// Long enough that an agent leaves a pause alone until it is stopped.
const ORPHAN_LONG_MS: u64 = 600_000;
/// How long a restarted agent has to end a pause before the round counts
/// it as left paused.
const ITS_TIME: Duration = Duration::from_secs(20);
/// The longest a SIGTERM may take (the agent promises 15 s).
const STOP_WITHIN: Duration = Duration::from_secs(20);
/// The workload's tick.
const TICK_MS: u64 = 50;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn query(qmp: &mut Qmp, cmd: &str) -> Result<Value, Failure> {
    Ok(qmp.execute(cmd, None).with_context(|| cmd.to_string())?)
}

fn status(qmp: &mut Qmp) -> Result<String, Failure> {
    Ok(query(qmp, "query-migrate")?["status"]
        .as_str()
        .unwrap_or("none")
        .to_string())
}

/// Polls `query-migrate` until its status satisfies `pred` or `until`
/// passes; the last status either way.
fn wait_status(
    qmp: &mut Qmp,
    until: Instant,
    pred: impl Fn(&str) -> bool,
) -> Result<String, Failure> {
    loop {
        let s = status(qmp)?;
        if pred(&s) || Instant::now() >= until {
            return Ok(s);
        }
        std::thread::yield_now();
    }
}

/// Polls `query-status` until the VM runs or `until` passes; its status.
fn wait_running(qmp: &mut Qmp, until: Instant) -> Result<String, Failure> {
    loop {
        let s = query(qmp, "query-status")?["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if s == "running" || Instant::now() >= until {
            return Ok(s);
        }
        std::thread::yield_now();
    }
}

/// The source agent's configuration: one VM, the given switchover grace
/// and static lock.
fn start_agent(
    h: &mut Hosts,
    env: &Env<'_>,
    orphan_ms: u64,
    migration: bool,
) -> Result<(), Failure> {
    // The old one first: a second instance on one state directory refuses
    // to start.
    h.src_agent.kill();
    let d = env.dir.display();
    let before = starts(&h.src_agent.audit());
    h.src_agent = Agent::start_toml(
        &h.bins,
        &env.dir,
        "src",
        &format!(
            "[switchover]\norphan_continue_ms = {orphan_ms}\n\
             [[vm]]\nname = \"guest\"\ndoorbell = \"{d}/src-doorbell.sock\"\nqmp = \"{d}/src-agent-qmp.sock\"\n\
             [vm.policy]\nmigration = {migration}\nmax_lease_ms = 120000\n"
        ),
    )?;
    // Until it has reached QEMU (its first QMP connection).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let a = h.src_agent.audit();
        let reached = starts(&a) > before
            && a.iter()
                .rev()
                .take_while(|r| r["event"] != "agent-start")
                .any(|r| r["event"] == "qmp-link" && r["state"] == "connected");
        if reached {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(host_fail("the restarted agent never reached QEMU".into()));
        }
        std::thread::yield_now();
    }
}

fn starts(audit: &[Value]) -> usize {
    audit.iter().filter(|r| r["event"] == "agent-start").count()
}

/// The records of the agent that started last.
fn since_last_start(audit: &[Value]) -> Vec<Value> {
    let from = audit
        .iter()
        .rposition(|r| r["event"] == "agent-start")
        .unwrap_or(0);
    audit[from..].to_vec()
}

/// Records of `audit` about how a migration ended (by an agent).
fn endings(audit: &[Value]) -> Vec<Value> {
    audit
        .iter()
        .filter(|r| {
            matches!(
                r["event"].as_str(),
                Some("migrate-continued" | "migrate-cancelled" | "migrate-left")
            )
        })
        .cloned()
        .collect()
}

/// The last agent's records of how the migration ended, once one of them
/// satisfies `pred` (QEMU reports the end a moment before the agent has
/// written its record) or `until` passes.
fn wait_ending(h: &Hosts, until: Instant, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    loop {
        let e = endings(&since_last_start(&h.src_agent.audit()));
        if e.iter().any(&pred) || Instant::now() >= until {
            return e;
        }
        std::thread::yield_now();
    }
}

/// A fresh destination QEMU waiting for the guest (one that received, or
/// gave up on, a stream is spent).
fn fresh_dst(h: &mut Hosts, sc: &Scenario, env: &Env<'_>) -> Result<(), Failure> {
    h.restart_dst(sc, env)?;
    h.dst
        .qmp
        .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))
        .context("migrate-incoming")?;
    let q = query(&mut h.dst.qmp, "query-migrate")?;
    let port = q["socket-address"][0]["port"]
        .as_str()
        .context("no incoming port")?
        .to_string();
    h.uri = format!("tcp:127.0.0.1:{port}");
    Ok(())
}

/// `miglockctl migrate` on a slow link, left running; returns once QEMU
/// copies.
fn migrate_slowly(h: &mut Hosts, deadline: Instant) -> Result<Child, Failure> {
    let mut ctl = h.migrate_in_background(&["--bandwidth", "4M"])?;
    h.until_active(&mut ctl, deadline)?;
    Ok(ctl)
}

/// What `miglockctl migrate` said when its agent went.
fn ctl_said(ctl: Child) -> Result<Value, Failure> {
    let out = ctl.wait_with_output().context("miglockctl migrate")?;
    let said = String::from_utf8_lossy(&out.stderr);
    Ok(json!({
        "exit": out.status.code(),
        "said": said.lines().last().unwrap_or("").trim(),
    }))
}

/// The agent was SIGKILLed while copying: the link is freed, so QEMU
/// converges and stops at "pre-switchover" by itself. How long it took.
fn paused_by_itself(h: &mut Hosts, deadline: Instant) -> Result<u64, Failure> {
    let t = Instant::now();
    h.src
        .qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": 1u64 << 30})),
        )
        .context("migrate-set-parameters")?;
    let until = (t + Duration::from_secs(60)).min(deadline);
    let s = wait_status(&mut h.src.qmp, until, |s| !matches!(s, "setup" | "active"))?;
    require(
        s == "pre-switchover",
        &format!("with no agent, QEMU did not stop at pre-switchover but is '{s}'"),
    )?;
    Ok(ms(t.elapsed()))
}

/// The guest proves it is alive on `vm`: ticks after `after`, its memory
/// verified.
fn alive(vm: &mut Vm, after: u64) -> Proof {
    let since = vm.seen.len();
    pair::prove_alive(vm, TICK_MS, after, since)
}

/// The same on `vm`, for ticks after those printed so far.
fn alive_here(vm: &mut Vm) -> Proof {
    // Whatever the console holds already is old news.
    let _ = vm.wait_line(Instant::now(), |_| false);
    let after = last_tick_in(&vm.seen);
    alive(vm, after)
}

/// One round's outcome.
struct Round {
    detail: Value,
    left_paused: bool,
    proof: Proof,
}

/// Whether QEMU left the VM paused: still at "pre-switchover", or the VM
/// (where the guest now is) not running.
fn left(migration: &str, vm_status: &str) -> bool {
    migration == "pre-switchover" || vm_status != "running"
}

/// Round 1.
fn sigterm_copying(h: &mut Hosts, env: &Env<'_>, deadline: Instant) -> Result<Round, Failure> {
    let ctl = migrate_slowly(h, deadline)?;
    let t = Instant::now();
    let exit = h.src_agent.terminate(STOP_WITHIN)?;
    let stop_ms = ms(t.elapsed());
    let ctl = ctl_said(ctl)?;
    let stopped = since_last_start(&h.src_agent.audit());
    let ended_by_stop = endings(&stopped);
    let after_stop = status(&mut h.src.qmp)?;
    eprintln!(
        "  round 1: SIGTERM while copying: exit {:?} after {stop_ms} ms; QEMU '{after_stop}'; audit {ended_by_stop:?}",
        exit.code()
    );
    let t = Instant::now();
    start_agent(h, env, ORPHAN_MS, true)?;
    let restart_ms = ms(t.elapsed());
    let until = Instant::now() + ITS_TIME;
    let migration = wait_status(&mut h.src.qmp, until, |s| s != "pre-switchover")?;
    let vm = wait_running(&mut h.src.qmp, until)?;
    let ended_by_restart = endings(&since_last_start(&h.src_agent.audit()));
    let left_paused = left(&migration, &vm);
    let proof = alive_here(&mut h.src);
    require(
        exit.code() == Some(0),
        &format!("the agent's exit on SIGTERM: {exit}"),
    )?;
    require(
        ended_by_stop.iter().any(|r| {
            r["event"] == "migrate-cancelled"
                && r["found"] == "active"
                && r["why"].as_str().is_some_and(|w| w.contains("SIGTERM"))
        }),
        "the stopping agent did not audit cancelling its copy",
    )?;
    require(
        after_stop == "cancelled",
        &format!("after the SIGTERM QEMU's migration is '{after_stop}'"),
    )?;
    Ok(Round {
        detail: json!({
            "round": "sigterm-copying",
            "signal": "SIGTERM",
            "found": "active",
            "locked": false,
            "agent_exit": exit.code(),
            "stop_ms": stop_ms,
            "miglockctl": ctl,
            "stopping_agent_audit": ended_by_stop,
            "restart_ms": restart_ms,
            "restarted_agent_audit": ended_by_restart,
            "migration_after": migration,
            "vm_after": vm,
            "guest_on": "source",
        }),
        left_paused,
        proof,
    })
}

/// Round 2.
fn sigkill_locked(h: &mut Hosts, env: &Env<'_>, deadline: Instant) -> Result<Round, Failure> {
    let ctl = migrate_slowly(h, deadline)?;
    h.src_agent.kill();
    let ctl = ctl_said(ctl)?;
    let pause_ms = paused_by_itself(h, deadline)?;
    let paused_at = Instant::now();
    eprintln!("  round 2: SIGKILL while copying; QEMU paused at pre-switchover {pause_ms} ms after the link was freed");
    // The next agent: the VM statically locked.
    let t = Instant::now();
    start_agent(h, env, ORPHAN_MS, false)?;
    let until = Instant::now() + ITS_TIME;
    // QEMU says "cancelling" a moment before "cancelled".
    let migration = wait_status(&mut h.src.qmp, until, |s| {
        !matches!(s, "pre-switchover" | "cancelling")
    })?;
    let end_ms = ms(t.elapsed());
    let paused_ms = ms(paused_at.elapsed());
    let vm = wait_running(&mut h.src.qmp, until)?;
    let cancelled = |r: &Value| {
        r["event"] == "migrate-cancelled"
            && r["found"] == "pre-switchover"
            && r["why"].as_str().is_some_and(|w| w.contains("no gate"))
    };
    let by_restart = wait_ending(h, until, cancelled);
    eprintln!("  round 2: the locked agent ended the pause {end_ms} ms after it started: QEMU '{migration}', VM '{vm}'; audit {by_restart:?}");
    let left_paused = left(&migration, &vm);
    let proof = alive_here(&mut h.src);
    require(
        by_restart.iter().any(cancelled),
        "the restarted agent did not audit cancelling the locked VM's pause",
    )?;
    require(
        migration == "cancelled",
        &format!("the locked VM's pause ended as '{migration}'"),
    )?;
    Ok(Round {
        detail: json!({
            "round": "sigkill-locked",
            "signal": "SIGKILL",
            "found": "pre-switchover",
            "locked": true,
            "miglockctl": ctl,
            "paused_after_ms": pause_ms,
            "restarted_agent_audit": by_restart,
            "end_ms": end_ms,
            "paused_ms": paused_ms,
            "migration_after": migration,
            "vm_after": vm,
            "guest_on": "source",
        }),
        left_paused,
        proof,
    })
}

/// Round 3.
fn sigkill_unlocked(h: &mut Hosts, env: &Env<'_>, deadline: Instant) -> Result<Round, Failure> {
    // The last agent held the VM statically locked: one that does not.
    start_agent(h, env, ORPHAN_MS, true)?;
    let before = last_tick_in(&h.src.seen);
    let ctl = migrate_slowly(h, deadline)?;
    h.src_agent.kill();
    let ctl = ctl_said(ctl)?;
    let pause_ms = paused_by_itself(h, deadline)?;
    let paused_at = Instant::now();
    eprintln!("  round 3: SIGKILL while copying; QEMU paused at pre-switchover {pause_ms} ms after the link was freed");
    // An agent that leaves the pause to its long grace, stopped while the
    // migration waits there: it must end the pause as it goes.
    start_agent(h, env, ORPHAN_LONG_MS, true)?;
    let before_term = status(&mut h.src.qmp)?;
    let t = Instant::now();
    let exit = h.src_agent.terminate(STOP_WITHIN)?;
    let stop_ms = ms(t.elapsed());
    eprintln!(
        "  round 3: SIGTERM at '{before_term}' (an agent owning no gate of it): exit {:?} after {stop_ms} ms",
        exit.code()
    );
    let until = Instant::now() + ITS_TIME;
    let migration = wait_status(&mut h.src.qmp, until, |s| s != "pre-switchover")?;
    let end_ms = ms(t.elapsed());
    let paused_ms = ms(paused_at.elapsed());
    let migration = if migration == "pre-switchover" {
        migration
    } else {
        wait_status(&mut h.src.qmp, deadline, |s| {
            matches!(s, "completed" | "failed" | "cancelled")
        })?
    };
    let vm = wait_running(
        &mut h.dst.qmp,
        until.max(Instant::now() + Duration::from_secs(5)),
    )?;
    let continued = |r: &Value| {
        r["event"] == "migrate-continued"
            && r["found"] == "pre-switchover"
            && r["why"]
                .as_str()
                .is_some_and(|w| w.contains("no gate") && w.contains("SIGTERM"))
    };
    let by_restart = wait_ending(h, until, continued);
    eprintln!("  round 3: the stopping agent ended the pause {end_ms} ms after the SIGTERM: QEMU '{migration}', destination VM '{vm}'; audit {by_restart:?}");
    let left_paused = left(&migration, &vm);
    let proof = if migration == "completed" {
        alive(&mut h.dst, before)
    } else {
        Proof::Died(format!("the migration ended '{migration}'"))
    };
    require(
        exit.code() == Some(0),
        &format!("the agent's exit on SIGTERM: {exit}"),
    )?;
    require(
        before_term == "pre-switchover",
        &format!("the migration was '{before_term}' when the agent was stopped, not paused"),
    )?;
    require(
        by_restart.iter().any(continued),
        "the stopping agent did not audit continuing the unlocked VM's pause",
    )?;
    require(
        migration == "completed",
        &format!("the continued migration ended '{migration}'"),
    )?;
    Ok(Round {
        detail: json!({
            "round": "sigkill-then-sigterm-unlocked",
            "signal": "SIGKILL, then SIGTERM while paused",
            "found": "pre-switchover",
            "locked": false,
            "miglockctl": ctl,
            "paused_after_ms": pause_ms,
            "orphan_continue_ms": ORPHAN_LONG_MS,
            "agent_exit": exit.code(),
            "stop_ms": stop_ms,
            "stopping_agent_audit": by_restart,
            "end_ms": end_ms,
            "paused_ms": paused_ms,
            "migration_after": migration,
            "vm_after": vm,
            "guest_on": "destination",
        }),
        left_paused,
        proof,
    })
}

/// `agent-restart-paused`.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut h = Hosts::start(sc, env, false)?;
    let r = rounds(&mut h, sc, env, deadline);
    h.quit()?;
    r
}

fn rounds(h: &mut Hosts, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK ready@@")?;
    if let Wait::Timeout | Wait::Closed = h.src.wait_line(deadline, |l| tick_of(l).is_some()) {
        return Err(Failure::new(FailKind::Guest, "the workload never ticked"));
    }
    start_agent(h, env, ORPHAN_MS, true)?;
    let mut done: Vec<Round> = Vec::new();
    let mut failed: Option<Failure> = None;
    type Step = fn(&mut Hosts, &Env<'_>, Instant) -> Result<Round, Failure>;
    let steps: [Step; 3] = [sigterm_copying, sigkill_locked, sigkill_unlocked];
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            // The last round's destination received, or gave up on, a stream.
            fresh_dst(h, sc, env)?;
        }
        match step(h, env, deadline) {
            Ok(r) => {
                let spent = !matches!(r.proof, Proof::Alive);
                done.push(r);
                if spent {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let left_paused = done.iter().filter(|r| r.left_paused).count();
    let guest_alive = done.len() == steps.len() && done.iter().all(|r| r.proof == Proof::Alive);
    let details: Vec<Value> = done
        .iter()
        .map(|r| {
            let mut d = r.detail.clone();
            d["left_paused"] = json!(r.left_paused);
            d["guest_alive"] = json!(r.proof == Proof::Alive);
            d
        })
        .collect();
    env.write_result(&json!({
        "rounds": done.len(),
        "left_paused": left_paused,
        "guest_alive": guest_alive,
        "orphan_continue_ms": ORPHAN_MS,
        "per_round": details,
    }))?;
    if let Some(e) = failed {
        return Err(e);
    }
    for r in &done {
        if let Proof::Died(why) | Proof::Corrupted(_, why) = &r.proof {
            return Err(Failure::new(
                FailKind::Migration,
                format!("{}: {why}", r.detail["round"]),
            ));
        }
    }
    require(
        left_paused == 0,
        &format!("{left_paused} round(s) left the VM paused"),
    )
}
