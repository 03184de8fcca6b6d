// SPDX-License-Identifier: GPL-2.0

//! The migration gate: `miglockctl migrate`. A migration of a locked VM
//! never starts unless forced (with a reason, audited); otherwise it runs
//! over QMP and is followed to the end.
//!
//! QEMU itself refuses a locked VM's migration from any client (the
//! blocker, `enforce.rs`); the gate adds what only it can: waiting for the
//! guest to unlock, forcing with a reason, planning, and a decision at the
//! paused switchover. While QEMU is still copying a new guest lock cancels
//! the migration; after the switchover new locks are refused
//! (`REFUSE_MIGRATING`), since the guest is already on its way.

use crate::agent::{Agent, Vm};
use crate::clock::now_ms;
use crate::enforce;
use crate::fence;
use crate::ledger::Migration;
use crate::planner::{self, Choice, Plan};
use miglock_abi::wire::{Notice, FORCED_BY_ADMIN};
use miglock_control::{ErrorClass, MigrateRequest, MigrationProgress, Mode, Reply};
use miglock_qmp::Monitor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

type Progress<'a> = &'a mut dyn FnMut(&Reply) -> std::io::Result<()>;

fn say(p: Progress<'_>, m: String) {
    let _ = p(&Reply::progress(m));
}

fn err(m: impl Into<String>) -> Reply {
    Reply::error(ErrorClass::Failed, m)
}

/// The lock, or the fence, said no.
fn refused(m: impl Into<String>) -> Reply {
    Reply::error(ErrorClass::Refused, m)
}

/// The answer to a migration (or a checkpoint: `what`) that QEMU reports
/// `failed` or `cancelled`, with QEMU's description.
pub(crate) fn ended_badly(what: &str, status: &str, q: &Value) -> Reply {
    let why = q["error-desc"].as_str().unwrap_or("no description");
    let class = if status == "cancelled" {
        ErrorClass::Cancelled
    } else {
        ErrorClass::Failed
    };
    Reply::error(class, format!("{what} {status}: {why}"))
}

/// Which end of a migration an agent follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Source,
    Destination,
}

/// The answer when QEMU reports `postcopy-paused` (query-migrate `q`) at
/// `end`: the stream broke after the switchover, the VM's memory is split
/// between the hosts and QEMU waits to be recovered, which waiting with it
/// would only hang the caller for. Audited for the VM `name`.
pub(crate) fn postcopy_paused(agent: &Agent, name: &str, q: &Value, end: End) -> Reply {
    let (event, broke, waits, recover) = match end {
        End::Source => (
            "migrate-postcopy-paused",
            "the link to the destination broke or the destination failed",
            "The VM runs nowhere until it is recovered",
            "QMP migrate-recover on the destination, then migrate with \"resume\": true here",
        ),
        End::Destination => (
            "incoming-postcopy-paused",
            "the link to the source broke or the source failed",
            "The guest waits here for its missing pages until it is recovered",
            "QMP migrate-recover here, then migrate with \"resume\": true on the source",
        ),
    };
    agent
        .audit
        .record(name, event, json!({"error": q["error-desc"]}));
    err(format!(
        "post-copy paused after the switchover: {broke} ({}). {waits}: {recover}",
        q["error-desc"].as_str().unwrap_or("QEMU gave no reason")
    ))
}

/// A migration refused because the VM is locked: audited with `why` and
/// the locks, answered with `state` ("is locked", ...) and the locks.
fn refused_locked(agent: &Agent, name: &str, why: &str, state: &str, locks: &[String]) -> Reply {
    agent
        .audit
        .record(name, "migrate-refused", json!({"why": why, "locks": locks}));
    refused(format!(
        "refused: VM '{name}' {state}: {}",
        locks.join("; ")
    ))
}

/// Waits until `vm` is unlocked or `deadline`; true if it unlocked.
fn wait_unlocked(vm: &Vm, deadline: Instant) -> bool {
    let mut l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = now_ms();
        if !l.locked(now) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Wake on any ledger change, or when the next lease ends.
        let next_end = l
            .live_holds(now)
            .map(|(_, h)| h.until_ms)
            .chain([l.reported.until_ms])
            .filter(|&t| t > now)
            .min();
        let nap = next_end.map_or(left, |t| left.min(Duration::from_millis(t - now)));
        l = vm
            .changed
            .wait_timeout(l, nap)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Runs `migrate` for `req`, reporting progress through `p`.
pub fn migrate(agent: &Agent, req: &MigrateRequest, p: Progress<'_>) -> Reply {
    let Some(vm) = agent.vm(&req.vm) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{}'", req.vm));
    };
    let name = req.vm.as_str();
    let reason = req.reason.clone().unwrap_or_default();
    if req.force && reason.trim().is_empty() {
        return err("--force needs --reason: forced migrations are audited with why");
    }
    if vm.config.qmp.is_none() {
        return err(format!("VM '{name}' has no QMP socket configured"));
    }

    // The gate. Checking and marking the migration happen under one lock,
    // so no lock can slip in between unnoticed.
    let (locked, reasons, grace) = {
        let mut l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if l.checkpoint {
            let why = "a checkpoint is being taken; a migration cannot run beside it";
            agent
                .audit
                .record(name, "migrate-refused", json!({"why": why}));
            return refused(format!("refused: VM '{name}': {why}"));
        }
        if l.gate || l.migration.is_some() {
            return err(format!("VM '{name}' is already migrating"));
        }
        let locked = l.locked(now);
        if !locked {
            l.gate = true;
        }
        (locked, l.reasons(now), l.policy.grace_ms)
    };
    let wait = req
        .wait_unlock_ms
        .or_else(|| req.wait_grace.then_some(u64::from(grace)));
    if locked && !req.force && wait.is_none() {
        return refused_locked(agent, name, "locked", "is locked", &reasons);
    }
    // From here on the migration is tried, and every open file in the
    // guest hears of it: with the wait it gets, the policy's grace if it
    // waits for nothing, 0 if forced. If it does not complete, the guest
    // hears that too.
    let deadline_ms = match (req.force, wait) {
        (true, _) => 0,
        (false, Some(w)) => w.min(u64::from(u32::MAX)) as u32,
        (false, None) => grace,
    };
    let told = agent.notify(vm, Notice::MigrationPending { deadline_ms });
    agent.audit.record(
        name,
        "migrate-announced",
        json!({"deadline_ms": deadline_ms, "guest_told": told}),
    );
    let r = gated(agent, vm, req, p, locked, &reasons, wait, told);
    if !matches!(r, Reply::Ok { .. }) {
        let told = agent.notify(vm, Notice::MigrationCancelled);
        agent
            .audit
            .record(name, "migrate-called-off", json!({"guest_told": told}));
    }
    r
}

/// The rest of [`migrate`] once the guest was told (`told`): waits for a
/// locked VM (`wait`) or forces it, then runs the migration.
#[allow(clippy::too_many_arguments)]
fn gated(
    agent: &Agent,
    vm: &Vm,
    req: &MigrateRequest,
    p: Progress<'_>,
    locked: bool,
    reasons: &[String],
    wait: Option<u64>,
    told: bool,
) -> Reply {
    let name = req.vm.as_str();
    let reason = req.reason.clone().unwrap_or_default();
    let mut static_off = false;
    if locked {
        if req.force {
            agent.audit.record(
                name,
                "migrate-forced",
                json!({"reason": reason, "overrode": reasons}),
            );
            agent.notify(
                vm,
                Notice::ForcedRelease {
                    reason: FORCED_BY_ADMIN,
                },
            );
            // The static setting is lifted for this migration only (put
            // back below, whatever the outcome).
            static_off = agent.update(vm, |l, now| {
                l.force_release(now);
                let was = std::mem::replace(&mut l.policy.migration, true);
                l.gate = true;
                (!was, true)
            });
            say(
                p,
                format!("VM locked ({}); forcing: {reason}", reasons.join("; ")),
            );
        } else if let Some(wait) = wait {
            agent.audit.record(
                name,
                "migrate-waiting",
                json!({"wait_ms": wait, "locks": reasons}),
            );
            say(
                p,
                format!(
                    "VM locked ({}); {} waiting up to {wait} ms",
                    reasons.join("; "),
                    if told {
                        "asked the guest to unlock,"
                    } else {
                        "guest not connected,"
                    }
                ),
            );
            if !wait_unlocked(vm, Instant::now() + Duration::from_millis(wait)) {
                return refused_locked(
                    agent,
                    name,
                    "still locked after waiting",
                    &format!("still locked after {wait} ms"),
                    &vm.reasons_now(),
                );
            }
            let raced = agent.update(vm, |l, now| {
                if l.locked(now) || l.gate || l.migration.is_some() {
                    return (true, false);
                }
                l.gate = true;
                (false, false)
            });
            if raced {
                return refused(format!("refused: VM '{name}' was locked again"));
            }
        }
    }

    let r = match agent.monitor(vm) {
        Ok(mon) => {
            let r = if req.force {
                // The blocker is lifted for this migration only.
                match enforce::suspend(agent, vm, &mon) {
                    Ok(()) => run(agent, vm, req, &mon, p),
                    Err(e) => err(format!("lifting the blocker: {e}")),
                }
            } else {
                run(agent, vm, req, &mon, p)
            };
            if !matches!(r, Reply::Ok { .. }) {
                // The VM stays: later migrations by other clients must not
                // stop at a switchover nobody continues.
                let _ = mon.execute(
                    "migrate-set-capabilities",
                    Some(json!({"capabilities": [{"capability": "pause-before-switchover", "state": false}]})),
                );
            }
            r
        }
        Err(e) => err(e),
    };
    agent.update(vm, |l, now| {
        if matches!(r, Reply::Ok { .. }) {
            // The guest now lives elsewhere; its lock state is the
            // destination agent's.
            l.force_release(now);
            l.boot_id = None;
        }
        l.migration = None;
        l.gate = false;
        if static_off {
            l.policy.migration = false;
        }
        ((), true)
    });
    if req.force {
        enforce::resume(agent, vm);
    }
    r
}

fn run(agent: &Agent, vm: &Vm, req: &MigrateRequest, qmp: &Monitor, p: Progress<'_>) -> Reply {
    let name = req.vm.as_str();
    let events = qmp.subscribe();
    let Settings {
        plan,
        auto_converge,
        preempt_on,
    } = match settings(agent, vm, req, qmp, p) {
        Ok(s) => s,
        Err(e) => return err(format!("setting up the migration: {e:#}")),
    };
    let choice = match (req.mode, &plan) {
        (Mode::Auto, Some(plan)) => plan.choice,
        (Mode::Postcopy, _) => Choice::Postcopy,
        (Mode::PrecopyThenPostcopy, _) => Choice::PrecopyThenPostcopy,
        _ => Choice::Precopy,
    };
    let (choice, qemu) = match fenced(agent, name, req, qmp, choice, p) {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    if let Err(e) = postcopy_cap(qmp, &qemu, choice, req, p) {
        return err(format!("setting up the migration: {e:#}"));
    }
    // QEMU stops at "pre-switchover" with the guest's vCPUs paused and waits
    // for migrate-continue: the one moment the lock can be checked without a
    // race, since a paused guest cannot take a new lock.
    let mut caps = vec![
        json!({"capability": "events", "state": true}),
        json!({"capability": "pause-before-switchover", "state": true}),
    ];
    if choice != Choice::Precopy {
        caps.push(json!({"capability": "postcopy-ram", "state": true}));
    }
    let preempt = req.postcopy_preempt && choice != Choice::Precopy;
    if preempt {
        if let Some(why) = fence::preempt_refused(&qemu) {
            return Reply::error(ErrorClass::Refused, why);
        }
        caps.push(json!({"capability": "postcopy-preempt", "state": true}));
    } else if preempt_on {
        // QEMU keeps a capability from the last migration; the destination
        // of this one did not agree to it.
        caps.push(json!({"capability": "postcopy-preempt", "state": false}));
    }
    // Set either way where QEMU has it: QEMU keeps a capability from one
    // migration to the next, and one asked for earlier must not throttle
    // a migration that did not ask.
    if let Some(on) = auto_converge {
        caps.push(json!({"capability": "auto-converge", "state": on}));
    }
    let started = Instant::now();
    let setup = qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": caps })),
    );
    // A lock granted while the migration was being prepared stops it here
    // (QEMU's blocker would too, with a less helpful message).
    let relocked = {
        let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        (!req.force && l.locked(now)).then(|| l.reasons(now))
    };
    if let Some(reasons) = relocked {
        return refused_locked(agent, name, "locked while preparing", "is locked", &reasons);
    }
    let setup = setup
        .map_err(|e| e.to_string())
        .and_then(|_| enforce::lift_lingering(agent, vm, qmp))
        .and_then(|_| {
            qmp.execute("migrate", Some(json!({ "uri": req.to })))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = setup {
        agent
            .audit
            .record(name, "migrate-failed", json!({"error": e.to_string()}));
        return err(format!("QEMU refused the migration: {e}"));
    }
    agent.audit.record(
        name,
        "migrate-start",
        json!({"to": req.to, "mode": req.mode, "runs": choice, "forced": req.force, "auto_converge": req.auto_converge, "plan": plan}),
    );
    // The most auto-converge throttled the guest's vCPUs (QEMU reports it
    // only while the migration is active).
    let mut throttle: Option<u64> = None;
    let mut postcopy_asked = false;
    // QEMU leaves "pre-switchover" a moment after migrate-continue: a query
    // in that moment must not continue (and fail, and call off) it again.
    let mut continued = false;
    if choice == Choice::Postcopy {
        let _ = qmp.execute("migrate-start-postcopy", None);
        postcopy_asked = true;
    }
    loop {
        // Any event, or none within a while, is a reason to look again.
        let (q, status) = match crate::blocker::next_look(qmp, &events, Duration::from_millis(250))
        {
            Ok(look) => look,
            Err(e) => return err(format!("query-migrate: {e}")),
        };
        if let Some(t) = q["cpu-throttle-percentage"].as_u64() {
            throttle = Some(throttle.unwrap_or(0).max(t));
        }
        match status.as_str() {
            "completed" => return done(agent, name, &q, started, plan.as_ref(), choice, throttle),
            "failed" | "cancelled" => {
                agent.audit.record(
                    name,
                    "migrate-failed",
                    json!({"status": status, "error": q["error-desc"]}),
                );
                return ended_badly("migration", &status, &q);
            }
            "pre-switchover" if continued => {}
            "pre-switchover" => {
                let go = agent.update(vm, |l, now| {
                    let go = req.force || !l.locked(now);
                    if go {
                        // From here on, new locks are refused.
                        l.migration = Some(Migration::AfterSwitchover);
                        agent.audit.record(name, "migrate-switchover", json!({}));
                    }
                    (go, false)
                });
                if !go {
                    return cancel(agent, vm, qmp, "guest locked before the switchover", None);
                }
                if let Err(e) =
                    qmp.execute("migrate-continue", Some(json!({"state": "pre-switchover"})))
                {
                    return err(format!("migrate-continue: {e}"));
                }
                continued = true;
            }
            "postcopy-paused" => return postcopy_paused(agent, name, &q, End::Source),
            "postcopy-active" | "device" => {}
            s => {
                // Still copying: a new lock cancels now rather than at the switchover.
                let relock = agent.update(vm, |l, now| (!req.force && l.locked(now), false));
                if relock {
                    return cancel(agent, vm, qmp, "guest locked during the copy", None);
                }
                // The first pass is done once QEMU synced the dirty log again.
                let passes = q["ram"]["dirty-sync-count"].as_u64().unwrap_or(0);
                if choice == Choice::PrecopyThenPostcopy && !postcopy_asked && passes >= 2 {
                    postcopy_asked = true;
                    say(p, "first pre-copy pass done: switching to post-copy".into());
                    let _ = qmp.execute("migrate-start-postcopy", None);
                }
                if let Some(limit) = req.timeout_ms {
                    if !postcopy_asked && started.elapsed() > Duration::from_millis(limit) {
                        let why = format!(
                            "still copying after {limit} ms ({passes} dirty syncs): pre-copy is not converging"
                        );
                        return cancel(agent, vm, qmp, &why, Some(&q));
                    }
                }
                let (sent, left) = (mib(&q["ram"]["transferred"]), mib(&q["ram"]["remaining"]));
                let _ = p(&Reply::Progress {
                    message: format!("{s}: {sent:.1} MiB sent, {left:.1} MiB remaining"),
                    migration: Some(progress(s, &q, started)),
                });
            }
        }
    }
}

/// The mode to run on this QEMU, and the QEMU: an asked mode that would
/// corrupt the guest here is refused; `auto` picks a safe one instead.
fn fenced(
    agent: &Agent,
    name: &str,
    req: &MigrateRequest,
    qmp: &Monitor,
    choice: Choice,
    p: Progress<'_>,
) -> Result<(Choice, fence::Qemu), Reply> {
    let qemu = fence::Qemu::query(qmp).map_err(err)?;
    if agent.planner.allow_fenced {
        return Ok((choice, qemu));
    }
    if req.mode == Mode::Auto {
        let (safe, why) = fence::safe(&qemu, choice);
        if let Some(why) = why {
            say(p, format!("plan: {why}"));
            agent.audit.record(
                name,
                "migrate-fenced",
                json!({"planned": choice, "runs": safe, "why": why}),
            );
        }
        return Ok((safe, qemu));
    }
    fence::check(&qemu, choice)
        .map(|()| (choice, qemu))
        .map_err(|why| {
            agent
                .audit
                .record(name, "migrate-refused", json!({"why": why}));
            refused(format!("refused: {why}"))
        })
}

/// What [`settings`] decided beside the parameters it set.
struct Settings {
    /// The plan, for `auto`.
    plan: Option<Plan>,
    /// The `auto-converge` capability's state to set, where this QEMU
    /// offers it (`None`: it does not).
    auto_converge: Option<bool>,
    /// Whether `postcopy-preempt` is on now (left from a migration before).
    preempt_on: bool,
}

/// `cap`'s state in a `query-migrate-capabilities` answer (`None`: this
/// QEMU does not offer it).
fn capability(caps: &Value, cap: &str) -> Option<bool> {
    caps.as_array()?
        .iter()
        .find(|c| c["capability"] == cap)
        .map(|c| c["state"] == true)
}

/// Checks that QEMU offers what the request asks for, applies the
/// request's bandwidth and downtime limit and, for `auto`, plans from the
/// guest's latest hints; says what it chose and why.
fn settings(
    agent: &Agent,
    vm: &Vm,
    req: &MigrateRequest,
    qmp: &Monitor,
    p: Progress<'_>,
) -> anyhow::Result<Settings> {
    let caps = qmp.execute("query-migrate-capabilities", None)?;
    let auto_converge = capability(&caps, "auto-converge").map(|_| req.auto_converge);
    if req.auto_converge && auto_converge.is_none() {
        anyhow::bail!(
            "--auto-converge: this QEMU does not offer the auto-converge migration capability"
        );
    }
    let params = qmp.execute("query-migrate-parameters", None)?;
    let bandwidth = req
        .bandwidth
        .or_else(|| params["max-bandwidth"].as_u64())
        .unwrap_or(128 << 20);
    let downtime_limit_ms = req
        .downtime_limit_ms
        .or_else(|| params["downtime-limit"].as_u64())
        .unwrap_or(300);
    let plan = if req.mode == Mode::Auto {
        let ram_bytes = qmp.execute("query-memory-size-summary", None)?["base-memory"]
            .as_u64()
            .unwrap_or(0);
        let workload = {
            let link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
            link.hints.latest.as_ref().and_then(|b| b.workload)
        };
        let plan = planner::plan(&planner::Input {
            ram_bytes,
            workload,
            bandwidth,
            downtime_limit_ms,
            options: agent.planner,
        });
        say(p, format!("plan: {:?}: {}", plan.choice, plan.why));
        agent
            .audit
            .record(&vm.config.name, "migrate-plan", json!(plan));
        Some(plan)
    } else {
        None
    };
    let (bw, dl) = plan.as_ref().map_or((bandwidth, downtime_limit_ms), |p| {
        (p.max_bandwidth, p.downtime_limit_ms)
    });
    // The post-copy phase's cap is set once the mode is known
    // (`postcopy_cap`): it depends on the mode and on the QEMU.
    let set = json!({"max-bandwidth": bw, "downtime-limit": dl});
    qmp.execute("migrate-set-parameters", Some(set))?;
    Ok(Settings {
        plan,
        auto_converge,
        preempt_on: capability(&caps, "postcopy-preempt") == Some(true),
    })
}

/// Sets the post-copy phase's bandwidth cap for `choice` on `qemu`. The
/// link is the link: an explicit cap holds for post-copy too, except in
/// pre-copy then post-copy on a QEMU where its post-copy phase was proven
/// correct uncapped (10.0 and later). It was QEMU 7.2 that corrupted a
/// write-heavy guest's memory when that phase ran uncapped; capped at the
/// link it verified on both versions (`fence::postcopy_cap`,
/// Documentation/host-agent.rst).
fn postcopy_cap(
    qmp: &Monitor,
    qemu: &fence::Qemu,
    choice: Choice,
    req: &MigrateRequest,
    p: Progress<'_>,
) -> anyhow::Result<()> {
    if choice == Choice::Precopy {
        return Ok(());
    }
    let Some(cap) = fence::postcopy_cap(qemu, choice, req.postcopy_bandwidth, req.bandwidth) else {
        return Ok(());
    };
    if cap == 0 && req.postcopy_bandwidth.is_some() {
        say(p, "post-copy phase uncapped, as asked".into());
    } else if cap == 0 && req.bandwidth.is_some() {
        say(
            p,
            "post-copy phase uncapped: proven correct on this QEMU after a pre-copy pass".into(),
        );
    }
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-postcopy-bandwidth": cap })),
    )?;
    Ok(())
}

/// Cancels the migration; `q`, the last `query-migrate`, adds how far it
/// got to the audit record.
fn cancel(agent: &Agent, vm: &Vm, qmp: &Monitor, why: &str, q: Option<&Value>) -> Reply {
    // Returns once QEMU has let the migration go: the next one can start.
    let ended = enforce::cancel(qmp, &qmp.subscribe());
    let reasons = vm.reasons_now();
    let ended = ended.unwrap_or_else(|e| format!("unconfirmed: {e}"));
    let mut rec = json!({"why": why, "locks": reasons, "ended": ended});
    if let Some(q) = q {
        rec["transferred_bytes"] = q["ram"]["transferred"].clone();
        rec["dirty_sync_count"] = q["ram"]["dirty-sync-count"].clone();
        rec["zero_pages"] = q["ram"]["duplicate"].clone();
        rec["normal_pages"] = q["ram"]["normal"].clone();
    }
    agent
        .audit
        .record(&vm.config.name, "migrate-cancelled", rec);
    let message = if reasons.is_empty() {
        format!("cancelled: {why}")
    } else {
        format!("cancelled: {why}: {}", reasons.join("; "))
    };
    Reply::error(ErrorClass::Cancelled, message)
}

/// The figures of a `query-migrate` answer a progress bar needs.
pub(crate) fn progress(status: &str, q: &Value, started: Instant) -> MigrationProgress {
    let ram = &q["ram"];
    let bytes = |k: &str| ram[k].as_u64().unwrap_or(0);
    MigrationProgress {
        status: status.to_string(),
        total_bytes: bytes("total"),
        transferred_bytes: bytes("transferred"),
        remaining_bytes: bytes("remaining"),
        // QEMU says megabits per second.
        rate_bytes_per_s: (ram["mbps"].as_f64().unwrap_or(0.0) * 1e6 / 8.0) as u64,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

fn mib(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1048576.0
}

fn done(
    agent: &Agent,
    name: &str,
    q: &Value,
    started: Instant,
    plan: Option<&Plan>,
    ran: Choice,
    throttle: Option<u64>,
) -> Reply {
    let stats = json!({
        "cpu_throttle_max_pct": throttle,
        "plan": plan,
        "ran": ran,
        "total_time_ms": q["total-time"],
        "downtime_ms": q["downtime"],
        "transferred_bytes": q["ram"]["transferred"],
        "dirty_sync_count": q["ram"]["dirty-sync-count"],
        "postcopy_requests": q["ram"]["postcopy-requests"],
        // All-zero pages cost QEMU a header only: simulators need the split.
        "zero_pages": q["ram"]["duplicate"],
        "normal_pages": q["ram"]["normal"],
        "wall_ms": started.elapsed().as_millis() as u64,
    });
    agent.audit.record(name, "migrate-done", stats.clone());
    Reply::Ok { data: stats }
}
