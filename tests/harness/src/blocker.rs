// SPDX-License-Identifier: GPL-2.0

//! The lock binds every initiator, not only `miglockctl`: migrations here
//! are started by the harness's own QMP monitor of the VM, a client the
//! agent knows nothing about (as libvirt, Proxmox or a script would be).
//!
//! `blocker-any-initiator`: while the guest holds a lock, that client's
//! `migrate` fails with the blocker's text; after the unlock it completes
//! and the guest arrives alive and whole.
//!
//! `blocker-race`: the guest locks and unlocks at random while that client
//! starts migrations at random moments; no migration may pass its
//! switchover while the guest holds a lock it was told is granted.

use crate::agentdemo::{host_fail, require, wait_for, Hosts};
use crate::pair::last_tick_in;
use crate::pair::{self, Pair, Proof};
use crate::scenario::{Env, FailKind, Failure, Scenario};
use crate::vm::{Vm, Wait};
use anyhow::Context;
use miglock_qmp::Qmp;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds (as the agents' audit logs stamp records).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The blocker texts QEMU reports now.
fn blocked_reasons(qmp: &mut Qmp) -> Result<Vec<String>, Failure> {
    let q = qmp
        .execute("query-migrate", None)
        .context("query-migrate")?;
    Ok(q["blocked-reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect())
}

/// How a migration that QEMU accepted ended.
struct Followed {
    status: String,
    /// When the harness saw it pass its switchover (wall clock, ms).
    switchover_ms: Option<u64>,
}

/// Follows the migration `qmp`'s QEMU is running until it ends.
fn follow(qmp: &mut Qmp, deadline: Instant) -> Result<Followed, Failure> {
    let mut switchover_ms = None;
    loop {
        let chunk = (Instant::now() + Duration::from_millis(500)).min(deadline);
        let ev = qmp
            .wait_event(chunk, |e| e.name == "MIGRATION")
            .context("waiting for MIGRATION")?;
        // Events say when; query-migrate says where it is, in case one was
        // missed.
        let status = match ev {
            Some(e) => e.data["status"].as_str().unwrap_or("").to_string(),
            None => qmp
                .execute("query-migrate", None)
                .context("query-migrate")?["status"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        if switchover_ms.is_none()
            && matches!(status.as_str(), "device" | "postcopy-active" | "completed")
        {
            switchover_ms = Some(wall_ms());
        }
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return Ok(Followed {
                status,
                switchover_ms,
            });
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                FailKind::Timeout,
                format!("the migration did not end (status {status})"),
            ));
        }
    }
}

/// Asks `vm`'s QEMU, as a client of its own, to migrate to `uri`; the
/// error text if QEMU refuses at once.
fn start_migration(vm: &mut Vm, uri: &str) -> Result<Option<String>, Failure> {
    // A careful client turns events on; QEMU keeps them. What it said of
    // earlier migrations (this QEMU may have received the VM) is old news.
    vm.qmp
        .execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
        )
        .context("migrate-set-capabilities")?;
    vm.qmp.clear_events();
    match vm.qmp.execute("migrate", Some(json!({ "uri": uri }))) {
        Ok(_) => Ok(None),
        Err(miglock_qmp::Error::Command { desc, .. }) => Ok(Some(desc)),
        Err(e) => Err(anyhow::Error::from(e).context("migrate").into()),
    }
}

/// The number after `key=` among a line's words.
pub(crate) fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `blocker-any-initiator`.
pub fn any_initiator(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut h = Hosts::start(sc, env, false)?;
    let cost = match h.src.wait_line(deadline, |l| l.starts_with("lock-cost")) {
        Wait::Line(l) => l,
        _ => return Err(host_fail("no lock-cost line from the guest".into())),
    };
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    let while_locked = blocked_reasons(&mut h.src.qmp)?;
    let refusal = start_migration(&mut h.src, &h.uri.clone())?;
    let reason = refusal.clone().unwrap_or_default();
    eprintln!("  QEMU's blocked-reasons while locked: {while_locked:?}");
    eprintln!(
        "  migrate from another QMP client: {}",
        refusal.as_deref().unwrap_or("accepted")
    );
    let locked_refused =
        reason.contains("miglock-critical-operation") && while_locked.iter().any(|r| r == &reason);
    h.src.send_line("unlock").context("console")?;
    wait_for(&mut h.src, deadline, "@@MIGLOCK unlocked@@")?;
    // The agent lifts the blocker once the unlock's linger is over.
    let lifted = Instant::now();
    while !blocked_reasons(&mut h.src.qmp)?.is_empty() {
        if Instant::now() >= deadline {
            return Err(host_fail("the blocker stayed after the unlock".into()));
        }
        std::thread::yield_now();
    }
    eprintln!(
        "  blocker lifted {} ms after the guest said it unlocked",
        lifted.elapsed().as_millis()
    );
    let before = last_tick_in(&h.src.seen);
    let accepted = start_migration(&mut h.src, &h.uri.clone())?;
    let end = match accepted {
        None => follow(&mut h.src.qmp, deadline)?.status,
        Some(e) => format!("refused: {e}"),
    };
    let unlocked_completed = end == "completed";
    eprintln!("  after the unlock: {end}");
    let proof = if unlocked_completed {
        let since = h.dst.seen.len();
        pair::prove_alive(&mut h.dst, 50, before, since)
    } else {
        Proof::Died("the guest did not move".into())
    };
    let audit = h.src_agent.audit();
    let installed_us = audit
        .iter()
        .find(|r| r["event"] == "blocker" && r["state"] == "added")
        .and_then(|r| r["us"].as_u64());
    let observed = audit.iter().any(|r| {
        r["event"] == "migrate-observed" && r["status"] == "completed" && r["by_agent"] == false
    });
    let v = json!({
        "locked_refused": locked_refused,
        "reason": reason,
        "blocked_reasons_while_locked": while_locked,
        "unlocked_completed": unlocked_completed,
        "guest_alive_on_destination": proof == Proof::Alive,
        "lock_us": {
            "first_holder_installs_blocker": field(&cost, "first_holder_us"),
            "second_holder_no_qmp": field(&cost, "second_holder_us"),
        },
        "blocker_install_us": installed_us,
        "agent_observed_the_migration": observed,
    });
    eprintln!("  {cost}; blocker added in {installed_us:?} us");
    env.write_result(&v)?;
    let r = (|| {
        require(
            locked_refused,
            &format!("a locked VM's migrate was not refused by its blocker: {reason:?}"),
        )?;
        require(
            unlocked_completed,
            &format!("the migration after the unlock did not complete: {end}"),
        )?;
        if let Proof::Died(why) | Proof::Corrupted(_, why) = &proof {
            return Err(Failure::new(FailKind::Migration, why.clone()));
        }
        require(
            observed,
            "the source agent did not audit the migration another client ran",
        )
    })();
    h.quit()?;
    r
}

/// `agent-state-bypass`.
pub fn state_bypass(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut h = Hosts::start(sc, env, false)?;
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    // The old agent granted the hold; the new one has no record of it
    // (its own state directory) and a policy that forbids guest locks.
    h.src_agent.kill();
    let d = env.dir.display();
    h.src_agent = crate::agentdemo::Agent::start_toml(
        &h.bins,
        &env.dir,
        "src-strict",
        &format!(
            "[[vm]]\nname = \"guest\"\ndoorbell = \"{d}/src-doorbell.sock\"\nqmp = \"{d}/src-agent-qmp.sock\"\n\
             [vm.policy]\nguest_locks = false\n"
        ),
    )?;
    // The module reports its hold once the new agent greets it.
    let reported = |a: &[Value]| {
        a.iter()
            .any(|r| r["event"] == "guest-state" && r["holders"].as_u64() > Some(0))
    };
    while !reported(&h.src_agent.audit()) {
        if Instant::now() >= deadline {
            return Err(host_fail(
                "the new agent never heard the guest's report of its hold".into(),
            ));
        }
        std::thread::yield_now();
    }
    let record = h
        .src_agent
        .audit()
        .into_iter()
        .find(|r| r["event"] == "guest-state-lock" && r["granted"] == false);
    let audited = record.is_some();
    let st = h.src_agent.ctl(&["--json", "status"])?;
    let st: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    let locked = st["data"]["vms"]["guest"]["locked"] != false;
    eprintln!("  the strict agent's decision on the reported hold: {record:?}; locked={locked}");
    // The old agent's blocker is still in QEMU: the new one adopts it and,
    // the VM being unlocked, lifts it after the linger (200 ms).
    let since = Instant::now();
    let lift_by = (since + Duration::from_secs(5)).min(deadline);
    let mut reasons = blocked_reasons(&mut h.src.qmp)?;
    while !reasons.is_empty() && Instant::now() < lift_by {
        std::thread::yield_now();
        reasons = blocked_reasons(&mut h.src.qmp)?;
    }
    let lifted_ms = reasons
        .is_empty()
        .then(|| since.elapsed().as_millis() as u64);
    eprintln!("  the old agent's blocker lifted after {lifted_ms:?} ms; QEMU's blocked-reasons {reasons:?}");
    h.src.send_line("go").context("console")?;
    let before = match h
        .src
        .wait_line(deadline, |l| crate::pair::tick_of(l).is_some())
    {
        Wait::Line(_) => last_tick_in(&h.src.seen),
        _ => return Err(host_fail("the guest's workload never ticked".into())),
    };
    let accepted = start_migration(&mut h.src, &h.uri.clone())?;
    let end = match &accepted {
        None => follow(&mut h.src.qmp, deadline)?.status,
        Some(e) => format!("refused: {e}"),
    };
    eprintln!("  migrate from another QMP client: {end}");
    let completed = end == "completed";
    let proof = if completed {
        let since = h.dst.seen.len();
        pair::prove_alive(&mut h.dst, 50, before, since)
    } else {
        Proof::Died("the guest did not move".into())
    };
    let added = h
        .src_agent
        .audit()
        .iter()
        .any(|r| r["event"] == "blocker" && r["state"] == "added");
    let bypassed = locked || added || !completed;
    env.write_result(&json!({
        "policy_bypassed": bypassed,
        "report_refused_audited": audited,
        "locked_after_report": locked,
        "blocker_added": added,
        "blocked_reasons": reasons,
        "stale_blocker_lifted_ms": lifted_ms,
        "migration": end,
        "guest_alive": proof == Proof::Alive,
    }))?;
    let r = (|| {
        require(!locked, "the agent counts the reported hold as a lock")?;
        require(audited, "the refused report was not audited")?;
        require(
            !added,
            "the agent installed a blocker for the reported hold",
        )?;
        require(completed, &format!("the other client's migration: {end}"))?;
        if let Proof::Died(why) | Proof::Corrupted(_, why) = &proof {
            return Err(Failure::new(FailKind::Migration, why.clone()));
        }
        Ok(())
    })();
    h.quit()?;
    r
}

/// Holds the source agent granted, as `[granted, ended)` intervals
/// (wall clock, ms) replayed from its audit log.
fn granted_intervals(audit: &[Value]) -> Vec<(u64, u64, u64)> {
    fn close_all(open: &mut BTreeMap<u64, u64>, ts: u64, done: &mut Vec<(u64, u64, u64)>) {
        for (hold, since) in std::mem::take(open) {
            done.push((hold, since, ts));
        }
    }
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let mut done = Vec::new();
    for r in audit {
        let ts = r["ts_ms"].as_u64().unwrap_or(0);
        match r["event"].as_str().unwrap_or("") {
            "lock" if r["granted"] == true => {
                if let Some(h) = r["hold"].as_u64() {
                    open.entry(h).or_insert(ts);
                }
            }
            "unlock" => {
                if let Some(since) = r["hold"].as_u64().and_then(|h| open.remove(&h)) {
                    done.push((r["hold"].as_u64().unwrap_or(0), since, ts));
                }
            }
            "guest-state" if r["holders"] == 0 => close_all(&mut open, ts, &mut done),
            "migrate-forced" => close_all(&mut open, ts, &mut done),
            "migrate-observed" if r["status"] == "completed" => close_all(&mut open, ts, &mut done),
            _ => {}
        }
    }
    close_all(&mut open, u64::MAX, &mut done);
    done
}

/// Rounds of `blocker-race`.
const RACE_ROUNDS: usize = 50;

/// `blocker-race`.
pub fn race(env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let guest = pair::Guest {
        script: "blocker-race",
        cpus: 2,
        append: String::new(),
        tick_ms: 50,
    };
    let mut p = Pair::start(env, &env.dir, guest, "")?;
    let mut rng = fastrand::Rng::with_seed(0x6d69_676c);
    let mut uri: Option<String> = None;
    let (mut refused, mut cancelled, mut completed) = (0, 0, 0);
    // (host the guest left, when the harness saw the switchover)
    let mut switchovers: Vec<(usize, u64)> = Vec::new();
    let mut problems = Vec::new();
    for round in 0..RACE_ROUNDS {
        if Instant::now() >= deadline {
            return Err(Failure::new(
                FailKind::Timeout,
                format!("only {round} rounds ran"),
            ));
        }
        let to = match &uri {
            Some(u) => u.clone(),
            None => {
                let dst = p.destination();
                dst.qmp
                    .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))
                    .context("migrate-incoming")?;
                let q = dst
                    .qmp
                    .execute("query-migrate", None)
                    .context("query-migrate")?;
                let port = q["socket-address"][0]["port"]
                    .as_str()
                    .context("no incoming port")?
                    .to_string();
                let u = format!("tcp:127.0.0.1:{port}");
                uri = Some(u.clone());
                u
            }
        };
        // A random moment: pacing, not synchronisation.
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        let before = p.last_tick();
        if let Some(why) = start_migration(p.vm(), &to)? {
            if !why.contains("miglock-") {
                problems.push(format!(
                    "round {round}: migrate refused for another reason: {why}"
                ));
            }
            refused += 1;
            continue;
        }
        let f = follow(&mut p.vm().qmp, deadline)?;
        match f.status.as_str() {
            "completed" => {
                completed += 1;
                switchovers.push((p.on, f.switchover_ms.unwrap_or_else(wall_ms)));
                p.on = 1 - p.on;
                let since = p.vm().seen.len();
                match p.prove_alive(before, since) {
                    Proof::Alive => {}
                    Proof::Corrupted(_, why) | Proof::Died(why) => {
                        return Err(Failure::new(
                            FailKind::Migration,
                            format!("round {round}: {why}"),
                        ));
                    }
                }
            }
            other => {
                cancelled += 1;
                if let Some(ts) = f.switchover_ms {
                    problems.push(format!(
                        "round {round}: {other} after passing its switchover at {ts}"
                    ));
                }
            }
        }
        // A destination that received (or gave up on) a stream is spent.
        p.fresh_destination(env)?;
        uri = None;
        eprintln!("  round {:>2}: {}", round + 1, f.status);
    }
    // The guest ends: its workload verifies once more, the race says what
    // the host answered.
    p.vm().send_line("finish").context("console")?;
    let said = match p.vm().wait_line(deadline, |l| l.starts_with("lock-race")) {
        Wait::Line(l) => l,
        _ => {
            return Err(Failure::new(
                FailKind::Guest,
                "the guest's lock race never reported",
            ))
        }
    };
    let verified = p
        .vm()
        .seen
        .iter()
        .any(|l| l.starts_with("workload: verified"));
    let mut violations = 0;
    for (host, ts) in &switchovers {
        for (hold, since, until) in granted_intervals(&p.hosts[*host].agent.audit()) {
            if since < *ts && *ts < until {
                violations += 1;
                problems.push(format!(
                    "switchover at {ts} while hold {hold} was granted ({since}..{until})"
                ));
            }
        }
    }
    let v = json!({
        "rounds": RACE_ROUNDS,
        "switchovers_while_granted": violations,
        "migrations_completed": completed,
        "migrations_refused_by_blocker": refused,
        "migrations_cancelled": cancelled,
        "guest": said,
        "workload_verified": verified,
        "problems": problems,
    });
    eprintln!(
        "  {RACE_ROUNDS} rounds: {refused} refused by the blocker, {cancelled} cancelled, {completed} completed, {violations} switchovers while granted; guest: {said}"
    );
    env.write_result(&v)?;
    p.quit();
    require(problems.is_empty(), &problems.join("; "))?;
    require(completed > 0, "no migration completed in the race")?;
    require(verified, "the workload did not verify at the end")?;
    require(
        field(&said, "granted").unwrap_or(0.0) > 0.0,
        "the guest was never granted a lock in the race",
    )
}
