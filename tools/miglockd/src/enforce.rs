// SPDX-License-Identifier: GPL-2.0

//! The lock, enforced in QEMU for every initiator.
//!
//! A guest is told "granted" only once its VM's QEMU carries the migration
//! blocker ([`ensure`]). A migration that another client started and that
//! is still copying when the guest locks is cancelled first, and the lock
//! granted once QEMU confirms it; one past its switchover makes the lock
//! refused (the guest is leaving). [`reconcile`] keeps the blocker in step
//! with the ledger when nothing asks: leases that end, the static policy,
//! a restored or resynced state, the linger after the last unlock.

use crate::agent::{Agent, Vm};
use crate::blocker::{self, Blocker, InstallError, Step};
use crate::clock::now_ms;
use miglock_abi::wire;
use miglock_qmp::{Event, Monitor};
use serde_json::json;
use std::sync::mpsc::Receiver;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Longest wait for QEMU to confirm a cancellation.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// QEMU migration states in which the guest is already on its way out: a
/// cancellation can no longer keep it here.
pub fn past_switchover(status: &str) -> bool {
    matches!(
        status,
        "device" | "postcopy-active" | "postcopy-paused" | "postcopy-recover" | "completed"
    )
}

/// QEMU migration states of a migration that is still copying.
pub fn in_flight(status: &str) -> bool {
    matches!(
        status,
        "setup" | "active" | "pre-switchover" | "cancelling" | "wait-unplug"
    )
}

/// Why a lock is not enforced.
#[derive(Debug)]
pub enum NotEnforced {
    /// The guest is leaving (a migration past its switchover, or a forced
    /// one): `REFUSE_MIGRATING`.
    Leaving(String),
    /// QEMU cannot be reached or refused: `REFUSE_UNENFORCEABLE`.
    Unreachable(String),
    /// The guest caused blocker installs faster than `[limits]
    /// blocker_rate`: `REFUSE_RATE` (the application gets EAGAIN).
    TooFast,
}

impl NotEnforced {
    /// The refusal the guest gets.
    pub fn reason(&self) -> u32 {
        match self {
            NotEnforced::Leaving(_) => wire::REFUSE_MIGRATING,
            NotEnforced::Unreachable(_) => wire::REFUSE_UNENFORCEABLE,
            NotEnforced::TooFast => wire::REFUSE_RATE,
        }
    }

    fn text(&self) -> &str {
        match self {
            NotEnforced::Leaving(t) | NotEnforced::Unreachable(t) => t,
            NotEnforced::TooFast => "blocker installs over [limits] blocker_rate",
        }
    }
}

/// `vm`'s blocker, held across the QMP calls that change it; what it
/// leaves is shown to `status` when released (`Vm::shown_blocker`).
fn blocker_of(vm: &Vm) -> BlockerGuard<'_> {
    BlockerGuard {
        vm,
        b: vm.blocker.lock().unwrap_or_else(|e| e.into_inner()),
    }
}

struct BlockerGuard<'a> {
    vm: &'a Vm,
    b: MutexGuard<'a, Blocker>,
}

impl std::ops::Deref for BlockerGuard<'_> {
    type Target = Blocker;
    fn deref(&self) -> &Blocker {
        &self.b
    }
}

impl std::ops::DerefMut for BlockerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Blocker {
        &mut self.b
    }
}

impl Drop for BlockerGuard<'_> {
    fn drop(&mut self) {
        *self
            .vm
            .shown_blocker
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.b.node.clone();
    }
}

/// [`ensure`] for a guest's lock request: a blocker install is what a lock
/// costs the host, so the installs one guest causes are paced; a lock in a
/// VM already blocked (or whose blocker lingers) costs nothing.
pub fn ensure_paced(agent: &Agent, vm: &Vm, why: &str) -> Result<(), NotEnforced> {
    let installs = vm.config.qmp.is_some() && blocker_of(vm).node.is_none();
    if installs && !vm.installs.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(NotEnforced::TooFast);
    }
    ensure(agent, vm, why)
}

/// Makes sure `vm`'s QEMU carries a blocker before a lock is granted. No
/// QMP call when it already does (a VM already locked). A VM without a QMP
/// socket cannot be enforced in QEMU; its grants are only recorded.
pub fn ensure(agent: &Agent, vm: &Vm, why: &str) -> Result<(), NotEnforced> {
    if vm.config.qmp.is_none() {
        return Ok(());
    }
    let mut b = blocker_of(vm);
    if b.suspended {
        return Err(NotEnforced::Leaving(
            "a forced migration of this VM is running".into(),
        ));
    }
    if b.node.is_some() {
        b.relocked();
        return Ok(());
    }
    if checkpointing(vm) {
        // During a checkpoint QEMU takes no blocker, but it runs no other
        // migration either; the blocker follows once it has ended, before
        // anyone is told it did (`checkpoint.rs`).
        return Ok(());
    }
    let mon = agent.monitor(vm).map_err(NotEnforced::Unreachable)?;
    // A VM that left (or is leaving) takes a blocker all the same once its
    // migration is over: the status says whether the guest is still here.
    let status = blocker::migration_status(&mon).map_err(NotEnforced::Unreachable)?;
    if past_switchover(&status) && !running(&mon) {
        return Err(leaving(agent, &vm.config.name, &status));
    }
    install(agent, vm, &mon, &mut b, &blocker::node_name(why))
}

/// Whether the VM runs in this QEMU.
pub fn running(mon: &Monitor) -> bool {
    mon.execute("query-status", None)
        .is_ok_and(|s| s["status"] == "running")
}

/// Adds the blocker; a migration in flight is cancelled first.
fn install(
    agent: &Agent,
    vm: &Vm,
    mon: &Monitor,
    b: &mut Blocker,
    node: &str,
) -> Result<(), NotEnforced> {
    let name = vm.config.name.as_str();
    let t = Instant::now();
    let fdset = match blocker::install(mon, node) {
        Ok(f) => f,
        Err(InstallError::MigrationInProgress) => {
            cancel_in_flight(agent, vm, mon)?;
            blocker::install(mon, node)
                .map_err(|e| NotEnforced::Unreachable(format!("adding the blocker: {e}")))?
        }
        Err(e) => {
            let e = NotEnforced::Unreachable(format!("adding the blocker: {e}"));
            agent.audit.record(
                name,
                "blocker-failed",
                json!({"node": node, "error": e.text()}),
            );
            return Err(e);
        }
    };
    b.installed(node.to_string(), Some(fdset));
    vm.blocked(true);
    agent.audit.record(
        name,
        "blocker",
        json!({"state": "added", "node": node, "us": t.elapsed().as_micros() as u64}),
    );
    Ok(())
}

/// Cancels the migration QEMU is running (whoever started it) and waits
/// until QEMU confirms; fails if it is past its switchover.
fn cancel_in_flight(agent: &Agent, vm: &Vm, mon: &Monitor) -> Result<(), NotEnforced> {
    let name = vm.config.name.as_str();
    let events = mon.subscribe();
    let status = blocker::migration_status(mon).map_err(NotEnforced::Unreachable)?;
    if past_switchover(&status) {
        return Err(leaving(agent, name, &status));
    }
    if incoming(mon) {
        // Arriving here: nothing to cancel, and nothing to lock until it has.
        return Err(NotEnforced::Leaving(
            "the VM is still arriving on this host".into(),
        ));
    }
    let found = status;
    let status = cancel(mon, &events).map_err(NotEnforced::Unreachable)?;
    if past_switchover(&status) {
        return Err(leaving(agent, name, &status));
    }
    let why = if found == "pre-switchover" {
        // A pause ended as `pause::settle` ends one: later migrations by
        // other clients must not stop there again.
        let _ = mon.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [
                {"capability": "pause-before-switchover", "state": false}]})),
        );
        let gate = vm.ledger.lock().unwrap_or_else(|e| e.into_inner()).gate;
        if gate {
            "locked while paused before the switchover"
        } else {
            "found paused before the switchover, owned by no gate"
        }
    } else {
        "the guest locked while a migration was copying"
    };
    let reasons = vm.reasons_now();
    agent.audit.record(
        name,
        "migrate-cancelled",
        json!({"why": why, "found": found, "status": status, "ended": status, "locks": reasons}),
    );
    Ok(())
}

/// Cancels the migration QEMU runs and waits (at most [`CANCEL_WAIT`])
/// until it has ended; returns how (`cancelled`, or `completed` if it was
/// too late). `events` is a subscription taken before, so no MIGRATION
/// event between is missed.
pub fn cancel(mon: &Monitor, events: &Receiver<Event>) -> Result<String, String> {
    let _ = mon.execute("migrate_cancel", None);
    let until = Instant::now() + CANCEL_WAIT;
    loop {
        let status = blocker::migration_status(mon)?;
        if !in_flight(&status) && !matches!(status.as_str(), "device" | "postcopy-active") {
            return Ok(status);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "QEMU did not confirm the cancellation within {CANCEL_WAIT:?} (status {status})"
            ));
        }
        // Any event (MIGRATION, or none within a while) is a reason to look.
        let _ = events.recv_timeout(left.min(Duration::from_millis(100)));
    }
}

fn leaving(agent: &Agent, name: &str, status: &str) -> NotEnforced {
    agent.audit.record(
        name,
        "lock-too-late",
        json!({"why": "a migration is past its switchover", "status": status}),
    );
    NotEnforced::Leaving(format!("the migration is past its switchover ({status})"))
}

/// Whether this QEMU is the destination of a migration under way.
pub fn incoming(mon: &Monitor) -> bool {
    mon.execute("query-status", None)
        .is_ok_and(|s| s["status"] == "inmigrate")
}

/// Brings the blocker in line with the ledger: added while the VM is
/// locked (a migration in flight is cancelled, unless it is forced),
/// lifted once it has been unlocked for the linger. Returns when it may
/// next have something to do without a change of the ledger.
pub fn reconcile(agent: &Agent, vm: &Vm) -> Option<Instant> {
    // No QMP socket: nothing to enforce in.
    vm.config.qmp.as_ref()?;
    if checkpointing(vm) {
        // QEMU takes no blocker meanwhile; the checkpoint reconciles at its end.
        return Some(Instant::now() + Duration::from_millis(200));
    }
    // The blocker first, then the ledger (the order a lock decision takes
    // them): a lock granted after this read waits for the step below.
    let mut b = blocker_of(vm);
    let (locked, why) = {
        let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        (l.locked(now), l.blocker_reason(now))
    };
    let linger = Duration::from_millis(agent.blocker.linger_ms);
    let step = b.step(locked, why, Instant::now(), linger);
    let name = vm.config.name.as_str();
    match step {
        Step::Keep => {}
        Step::Install(node) => {
            let Ok(mon) = agent.monitor(vm) else {
                return Some(Instant::now() + Duration::from_secs(1));
            };
            if let Err(e) = install(agent, vm, &mon, &mut b, &node) {
                agent.audit.record(
                    name,
                    "blocker-failed",
                    json!({"node": node, "error": e.text()}),
                );
                return Some(Instant::now() + Duration::from_secs(1));
            }
        }
        Step::Remove => {
            let node = b.node.clone().unwrap_or_default();
            let removed = agent
                .monitor(vm)
                .and_then(|mon| blocker::remove(&mon, &node, b.fdset));
            match removed {
                Ok(()) => {
                    b.removed();
                    vm.blocked(false);
                    agent
                        .audit
                        .record(name, "blocker", json!({"state": "removed", "node": node}));
                }
                Err(e) => {
                    agent.audit.record(
                        name,
                        "blocker-failed",
                        json!({"node": node, "error": e, "removing": true}),
                    );
                    return Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
    b.due(linger)
}

/// A new QMP connection (agent start, or a new QEMU process): adopts the
/// blocker an earlier agent left, removes strays, and reconciles.
pub fn adopt(agent: &Agent, vm: &Vm, mon: &Monitor) {
    let name = vm.config.name.as_str();
    // Held across the query: a lock granted meanwhile installs its node
    // either before (found here) or after (nothing to adopt), never between.
    let mut b = blocker_of(vm);
    let Ok((nodes, fdsets)) = blocker::find(mon) else {
        return;
    };
    b.removed();
    let mut kept = None;
    for node in nodes {
        if kept.is_none() {
            kept = Some(node);
        } else {
            let _ = blocker::remove(mon, &node, None);
        }
    }
    // A node keeps its own dup of the image: the sets can go.
    for id in fdsets {
        let _ = mon.execute("remove-fd", Some(json!({ "fdset-id": id })));
    }
    vm.blocked(kept.is_some());
    if let Some(node) = kept {
        agent
            .audit
            .record(name, "blocker", json!({"state": "found", "node": node}));
        b.installed(node, None);
    }
    drop(b);
    reconcile(agent, vm);
}

/// The gate migrates an unlocked VM now: a blocker still lingering after
/// the last unlock goes at once rather than at the end of the linger.
pub fn lift_lingering(agent: &Agent, vm: &Vm, mon: &Monitor) -> Result<(), String> {
    let mut b = blocker_of(vm);
    let Some(node) = b.node.clone() else {
        return Ok(());
    };
    let locked = vm
        .ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .locked(now_ms());
    if locked {
        return Ok(()); // QEMU will refuse, as it must
    }
    blocker::remove(mon, &node, b.fdset)?;
    b.removed();
    vm.blocked(false);
    agent.audit.record(
        &vm.config.name,
        "blocker",
        json!({"state": "removed", "node": node, "why": "migration requested"}),
    );
    Ok(())
}

/// Whether the agent is taking a checkpoint of `vm`.
fn checkpointing(vm: &Vm) -> bool {
    vm.ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .checkpoint
}

/// A checkpoint is about to start: QEMU refuses it while it carries the
/// blocker, so the blocker goes for its duration (the checkpoint keeps
/// every migration out meanwhile) and [`reconcile`] puts it back after.
pub fn lift_for_checkpoint(agent: &Agent, vm: &Vm, mon: &Monitor) -> Result<(), String> {
    let mut b = blocker_of(vm);
    let Some(node) = b.node.clone() else {
        return Ok(());
    };
    blocker::remove(mon, &node, b.fdset)?;
    b.removed();
    agent.audit.record(
        &vm.config.name,
        "blocker",
        json!({"state": "lifted for a checkpoint", "node": node}),
    );
    Ok(())
}

/// A forced migration is about to start: lift the blocker for it alone.
pub fn suspend(agent: &Agent, vm: &Vm, mon: &Monitor) -> Result<(), String> {
    let mut b = blocker_of(vm);
    b.suspended = true;
    if let Some(node) = b.node.clone() {
        blocker::remove(mon, &node, b.fdset)?;
        b.removed();
        b.suspended = true;
        vm.blocked(false);
        agent.audit.record(
            &vm.config.name,
            "blocker",
            json!({"state": "lifted for a forced migration", "node": node}),
        );
    }
    Ok(())
}

/// The forced migration has ended (either way).
pub fn resume(agent: &Agent, vm: &Vm) {
    blocker_of(vm).suspended = false;
    reconcile(agent, vm);
}
