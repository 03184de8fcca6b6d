// SPDX-License-Identifier: GPL-2.0

//! What QEMU says about a VM, followed for as long as it runs: every
//! migration, whoever started it (our CLI, libvirt, any QMP client), is
//! observed and audited and moves the ledger's view of it; the VM resuming
//! here (boot, or the end of an incoming migration) makes the agent
//! announce itself so the guest resends its state, and a VM that arrived
//! by migration is told so (`Migrated`); a migration another client starts
//! is announced to the guest, and its failure too; and the blocker is kept
//! in step with the lock ([`crate::enforce::reconcile`]).

use crate::agent::{Agent, Vm};
use crate::clock::now_ms;
use crate::dial::Dial;
use crate::enforce;
use crate::ledger::Migration;
use crate::pause;
use crate::session::REDIAL;
use miglock_abi::wire::Notice;
use miglock_qmp::{Event, Monitor};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Longest time between two looks at the ledger (leases end on their own).
const TICK: Duration = Duration::from_millis(500);

/// Which way a migration QEMU reports goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// The VM leaves this host.
    Out,
    /// The VM arrives here.
    In,
}

/// Follows `vm`'s QEMU until `stop` is set: dial, follow, redial.
pub fn run(agent: Arc<Agent>, vm: Arc<Vm>, stop: Arc<AtomicBool>) {
    if vm.config.qmp.is_none() {
        return;
    }
    let name = vm.config.name.clone();
    let mut dial = Dial::default();
    while !stop.load(Ordering::Relaxed) {
        let mon = match agent.monitor(&vm) {
            Ok(m) => m,
            Err(e) => {
                // Said once per outage (and error), not every redial.
                if dial.failed(&e, Instant::now()) {
                    warn!(vm = name, error = e, "cannot dial the QMP socket; retrying");
                    agent.audit.record(
                        &name,
                        "qmp-link",
                        json!({"state": "unreachable", "error": e}),
                    );
                }
                std::thread::sleep(REDIAL); // redial pacing, not synchronisation
                continue;
            }
        };
        match dial.connected(Instant::now()) {
            Some(after) => info!(vm = name, down_for = ?after, "QMP reachable again"),
            None => info!(vm = name, "QMP connected"),
        }
        agent
            .audit
            .record(&name, "qmp-link", json!({"state": "connected"}));
        follow(&agent, &vm, &mon, &stop);
    }
}

/// Follows one QMP connection until it closes or `stop`.
fn follow(agent: &Agent, vm: &Vm, mon: &Monitor, stop: &AtomicBool) {
    let events = agent.take_events(vm).unwrap_or_else(|| mon.subscribe());
    let status = on_connect(agent, vm, mon);
    // A QEMU started to receive a VM says so until it has: what it reports
    // of a migration until then is the VM arriving.
    let mut direction = enforce::incoming(mon).then_some(Direction::In);
    let mut follows = Follows {
        last_status: String::new(),
        arriving: direction.is_some(),
        announced: false,
        checkpoint: false,
        orphan: pause::Orphan::default(),
    };
    follows.orphan.seen(&status, Instant::now());
    let grace = Duration::from_millis(agent.switchover.orphan_continue_ms);
    while !stop.load(Ordering::Relaxed) {
        let due = enforce::reconcile(agent, vm);
        orphaned(agent, vm, mon, direction, &mut follows, grace);
        let next_end = {
            let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            l.live_holds(now)
                .map(|(_, h)| h.until_ms)
                .chain([l.reported.until_ms])
                .filter(|&t| t > now)
                .min()
                .map(|t| Instant::now() + Duration::from_millis(t - now))
        };
        let wake = [due, next_end, follows.orphan.next(grace)]
            .into_iter()
            .flatten()
            .min()
            .map_or(TICK, |t| {
                t.saturating_duration_since(Instant::now()).min(TICK)
            });
        match events.recv_timeout(wake) {
            Ok(ev) => on_event(agent, vm, mon, &ev, &mut direction, &mut follows),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let why = mon.closed().unwrap_or_default();
                info!(vm = vm.config.name, why, "QMP link ended");
                agent.audit.record(
                    &vm.config.name,
                    "qmp-link",
                    json!({"state": "disconnected", "why": why}),
                );
                return;
            }
        }
    }
}

/// A new connection: events on, the migration QEMU runs learnt, and the
/// blocker adopted. Returns the migration's status (a pause a dead agent
/// left is ended by the loop, see [`orphaned`]).
fn on_connect(agent: &Agent, vm: &Vm, mon: &Monitor) -> String {
    // MIGRATION events are what every later step follows; QEMU takes the
    // capability only between migrations, and keeps it.
    let _ = mon.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
    );
    // Where a migration is belongs to the QEMU process: learn it afresh
    // (asked before taking the ledger: no QMP under its lock).
    let status = crate::blocker::migration_status(mon).unwrap_or_default();
    let left = enforce::past_switchover(&status) && !enforce::running(mon);
    let outgoing = enforce::in_flight(&status) && !enforce::incoming(mon);
    agent.update(vm, |l, _| {
        l.migration = if left {
            Some(Migration::AfterSwitchover)
        } else if outgoing {
            Some(Migration::BeforeSwitchover)
        } else {
            None
        };
        ((), false)
    });
    enforce::adopt(agent, vm, mon);
    status
}

/// A migration paused at "pre-switchover" that no live gate owns (an agent
/// that died while its gate waited, or a client that went away) is ended
/// ([`pause::settle`]). Seen by its MIGRATION event, at connect, or by
/// asking while another client's migration copies (an event can be lost).
fn orphaned(
    agent: &Agent,
    vm: &Vm,
    mon: &Monitor,
    direction: Option<Direction>,
    f: &mut Follows,
    grace: Duration,
) {
    if f.checkpoint || direction == Some(Direction::In) {
        return;
    }
    let (gate, locked, copying) = {
        let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let copying = l.migration == Some(Migration::BeforeSwitchover);
        (l.gate, l.locked(now_ms()), copying)
    };
    if !gate && copying && !f.orphan.paused() {
        if let Ok(status) = crate::blocker::migration_status(mon) {
            f.orphan.seen(&status, Instant::now());
        }
    }
    if f.orphan.due(gate, locked, Instant::now(), grace) {
        let why = "found paused before the switchover, owned by no gate";
        if pause::settle(agent, vm, mon, why).is_some() {
            info!(vm = vm.config.name, "ended a pause before the switchover");
        }
        f.orphan.ended();
    }
}

/// What one QMP connection's watcher remembers between events.
struct Follows {
    /// The last migration status seen.
    last_status: String,
    /// A migration is bringing the VM here: the next RESUME is its arrival.
    arriving: bool,
    /// The guest was told of the outgoing migration under way (one another
    /// client started).
    announced: bool,
    /// The migration QEMU runs is a checkpoint (background snapshot): the
    /// VM stays, so none of it is an outgoing migration.
    checkpoint: bool,
    /// A pause at "pre-switchover" seen, and since when.
    orphan: pause::Orphan,
}

/// Whether QEMU's migration is a background snapshot (a checkpoint).
fn snapshotting(mon: &Monitor) -> bool {
    mon.execute("query-migrate-capabilities", None)
        .ok()
        .and_then(|caps| {
            caps.as_array()?
                .iter()
                .find(|c| c["capability"] == "background-snapshot")
                .map(|c| c["state"] == true)
        })
        .unwrap_or(false)
}

fn on_event(
    agent: &Agent,
    vm: &Vm,
    mon: &Monitor,
    ev: &Event,
    direction: &mut Option<Direction>,
    f: &mut Follows,
) {
    let name = vm.config.name.as_str();
    match ev.name.as_str() {
        "RESUME" => {
            // Running here: whatever migration there was is over for us.
            agent.update(vm, |l, _| {
                let was = l.migration.take();
                ((), was.is_some())
            });
            let told = agent.announce(vm);
            agent
                .audit
                .record(name, "vm-resumed", json!({"guest_told": told}));
            if std::mem::take(&mut f.arriving) {
                let restored = agent.update(vm, |l, _| (std::mem::take(&mut l.restoring), false));
                // After the announce: the guest resyncs with this host first.
                if restored {
                    let told = agent.notify_or_owe(vm, Notice::Restored);
                    agent
                        .audit
                        .record(name, "guest-restored", json!({"guest_told": told}));
                } else {
                    let told = agent.notify_or_owe(vm, Notice::Migrated);
                    agent
                        .audit
                        .record(name, "guest-migrated", json!({"guest_told": told}));
                }
            }
        }
        "MIGRATION" => {
            let status = ev.data["status"].as_str().unwrap_or("").to_string();
            if status == f.last_status {
                return;
            }
            f.last_status = status.clone();
            f.orphan.seen(&status, Instant::now());
            if !f.checkpoint && direction.is_none() && !enforce::incoming(mon) {
                let ours = vm
                    .ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .checkpoint;
                f.checkpoint = ours || (enforce::in_flight(&status) && snapshotting(mon));
            }
            if f.checkpoint {
                agent
                    .audit
                    .record(name, "checkpoint-observed", json!({"status": status}));
                if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                    f.checkpoint = false;
                }
                return;
            }
            if direction.is_none() {
                *direction = Some(if enforce::incoming(mon) {
                    // The VM starts arriving: its next RESUME is the arrival.
                    f.arriving = true;
                    Direction::In
                } else {
                    Direction::Out
                });
            }
            // A source is paused once it completed; a VM running here after
            // "completed" arrived (a watcher that joined late can tell).
            if status == "completed" && *direction == Some(Direction::Out) && enforce::running(mon)
            {
                *direction = Some(Direction::In);
            }
            if *direction == Some(Direction::In) {
                agent
                    .audit
                    .record(name, "incoming-observed", json!({"status": status}));
                match status.as_str() {
                    "failed" | "cancelled" => {
                        f.arriving = false;
                        *direction = None;
                    }
                    "completed" => *direction = None,
                    _ => {}
                }
                return;
            }
            observed_outgoing(agent, vm, &status, &mut f.announced);
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                *direction = None;
            }
        }
        _ => {}
    }
}

/// An outgoing migration's new status: the ledger learns where it is (a
/// lock then cancels it, or is refused), and the audit log says so. One
/// that another client started is announced to the guest when first seen
/// (`announced`), and its failure too; the gate announces its own.
fn observed_outgoing(agent: &Agent, vm: &Vm, status: &str, announced: &mut bool) {
    let name = vm.config.name.as_str();
    let (by_agent, locked) = agent.update(vm, |l, now| {
        let locked = l.locked(now);
        let next = if enforce::past_switchover(status) {
            Some(Migration::AfterSwitchover)
        } else if enforce::in_flight(status) {
            Some(Migration::BeforeSwitchover)
        } else {
            None
        };
        // The gate marks its own switchover itself, before QEMU moves on.
        if l.migration != Some(Migration::AfterSwitchover) || next.is_none() {
            l.migration = next;
        }
        let changed = status == "completed" && (!l.holds.is_empty() || l.boot_id.is_some());
        if status == "completed" {
            // The guest now lives elsewhere: its lock state is the
            // destination agent's.
            l.force_release(now);
            l.boot_id = None;
        }
        ((l.gate, locked), changed)
    });
    if !by_agent && enforce::in_flight(status) && !*announced {
        // Under way already: no grace to give.
        *announced = agent.notify(vm, Notice::MigrationPending { deadline_ms: 0 });
    }
    if matches!(status, "failed" | "cancelled") && std::mem::take(announced) {
        agent.notify(vm, Notice::MigrationCancelled);
    }
    if status == "completed" {
        *announced = false;
    }
    let mut rec = json!({"status": status, "by_agent": by_agent});
    if locked && status == "completed" {
        // Never expected: the blocker stops such a migration. Loud if it
        // happens all the same (a forced one clears the lock first).
        rec["while_locked"] = json!(true);
    }
    agent.audit.record(name, "migrate-observed", rec);
}
