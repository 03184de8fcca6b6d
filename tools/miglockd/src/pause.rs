// SPDX-License-Identifier: GPL-2.0

//! A migration paused before its switchover that nobody will continue.
//!
//! The gate turns on `pause-before-switchover`: QEMU stops the guest's
//! vCPUs at "pre-switchover" and waits for `migrate-continue`. An agent
//! that stops (SIGTERM on an upgrade, a crash) while its gate follows a
//! migration leaves nobody to send it, and the guest stays paused for
//! ever. So the agent ends every pause no live gate owns: continued if the
//! VM is unlocked (the migration asked for completes), cancelled if it is
//! locked (the guest runs on here), audited either way. On SIGTERM it ends
//! its own gates' migrations the same way before it exits ([`on_stop`]).

use crate::agent::{Agent, Vm};
use crate::blocker;
use crate::enforce;
use crate::ledger::Migration;
use miglock_qmp::Monitor;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a pause ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `migrate-continue`: the VM was unlocked.
    Continue,
    /// `migrate_cancel`: the VM was locked.
    Cancel,
}

/// The rule: a locked VM never passes its switchover unforced.
pub fn decide(locked: bool) -> End {
    if locked {
        End::Cancel
    } else {
        End::Continue
    }
}

/// Ends the pause of `vm`'s migration if QEMU still reports one; `why` goes
/// to the audit record. What it did, if anything. Bounded by the QMP
/// deadlines and [`enforce::CANCEL_WAIT`]; no lock is held across QMP.
pub fn settle(agent: &Agent, vm: &Vm, mon: &Monitor, why: &str) -> Option<End> {
    let name = vm.config.name.as_str();
    if blocker::migration_status(mon).ok()? != "pre-switchover" {
        return None;
    }
    // Decided and marked under one lock, as the gate does: once continued,
    // new locks are refused (the guest is on its way). One the gate (or an
    // earlier settle) already continued is on its way: QEMU shows
    // "pre-switchover" a moment after migrate-continue.
    let end = agent.update(vm, |l, now| {
        if l.migration == Some(Migration::AfterSwitchover) {
            return (None, false);
        }
        let end = decide(l.locked(now));
        if end == End::Continue {
            l.migration = Some(Migration::AfterSwitchover);
        }
        (Some(end), false)
    })?;
    match end {
        End::Continue => {
            let r = mon.execute("migrate-continue", Some(json!({"state": "pre-switchover"})));
            let error = r.err().map(|e| e.to_string());
            agent.audit.record(
                name,
                "migrate-continued",
                json!({"why": why, "found": "pre-switchover", "error": error}),
            );
        }
        End::Cancel => {
            let ended = cancel(mon);
            agent.audit.record(
                name,
                "migrate-cancelled",
                json!({"why": why, "found": "pre-switchover", "ended": ended,
                    "locks": vm.reasons_now()}),
            );
        }
    }
    Some(end)
}

/// Cancels the migration; how it ended, for the audit. Later migrations by
/// other clients must not stop at the switchover again: the capability the
/// gate turned on goes off.
fn cancel(mon: &Monitor) -> String {
    let ended =
        enforce::cancel(mon, &mon.subscribe()).unwrap_or_else(|e| format!("unconfirmed: {e}"));
    let _ = mon.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [
            {"capability": "pause-before-switchover", "state": false}]})),
    );
    ended
}

/// Longest the agent spends ending its gates' migrations on SIGTERM.
pub const STOP_WAIT: Duration = Duration::from_secs(15);

/// The agent stops: each migration its gate follows is ended now, or it
/// would wait at its switchover with nobody to continue it. Paused there:
/// [`settle`]d. Still copying: cancelled (the operator's command ends with
/// the agent anyway). A pause no gate owns is settled too, without waiting
/// out its grace: an agent restarted faster than the grace would otherwise
/// keep the guest paused for ever. All VMs at once, for at most `within`.
pub fn on_stop(agent: &Arc<Agent>, signal: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut running = 0;
    for vm in agent.vms.values() {
        let gated = vm.ledger.lock().unwrap_or_else(|e| e.into_inner()).gate;
        if vm.config.qmp.is_none() {
            continue;
        }
        running += 1;
        let (agent, vm, tx) = (agent.clone(), vm.clone(), tx.clone());
        let why = if gated {
            format!("the agent stops ({signal}) while its gate follows this migration")
        } else {
            format!(
                "the agent stops ({signal}); found paused before the switchover, owned by no gate"
            )
        };
        std::thread::spawn(move || {
            if gated {
                end_gated(&agent, &vm, &why);
            } else if let Ok(mon) = agent.monitor(&vm) {
                settle(&agent, &vm, &mon, &why);
            }
            let _ = tx.send(());
        });
    }
    while running > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            tracing::error!("{signal}: gated migrations not ended within {within:?}; exiting");
            return;
        }
        running -= 1;
    }
}

fn end_gated(agent: &Agent, vm: &Vm, why: &str) {
    let name = vm.config.name.as_str();
    let mon = match agent.monitor(vm) {
        Ok(m) => m,
        Err(e) => {
            agent.audit.record(
                name,
                "migrate-left",
                json!({"why": why, "error": e, "then": "the next agent ends its pause"}),
            );
            return;
        }
    };
    let status = blocker::migration_status(&mon).unwrap_or_default();
    if status == "pre-switchover" {
        settle(agent, vm, &mon, why);
    } else if blocker::migrating(&status) && !enforce::past_switchover(&status) {
        let ended = cancel(&mon);
        agent.audit.record(
            name,
            "migrate-cancelled",
            json!({"why": why, "found": status, "ended": ended}),
        );
    }
}

/// What the watcher of one QMP connection tracks of a pause: since when
/// QEMU has been seen paused at "pre-switchover".
#[derive(Debug, Default)]
pub struct Orphan {
    since: Option<Instant>,
}

impl Orphan {
    /// QEMU reported `status` at `now`.
    pub fn seen(&mut self, status: &str, now: Instant) {
        if status != "pre-switchover" {
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// Whether the pause should end now: no live gate owns it, and the VM
    /// is locked (cancelled at once) or the pause has lasted `grace`
    /// (another client, libvirt say, continues its own pauses well within).
    pub fn due(&self, gate: bool, locked: bool, now: Instant, grace: Duration) -> bool {
        match self.since {
            Some(since) => !gate && (locked || now.saturating_duration_since(since) >= grace),
            None => false,
        }
    }

    /// When [`Orphan::due`] turns true for an unlocked VM.
    pub fn next(&self, grace: Duration) -> Option<Instant> {
        self.since.map(|s| s + grace)
    }

    /// Whether a pause is being watched.
    pub fn paused(&self) -> bool {
        self.since.is_some()
    }

    /// The pause ended (settled, or QEMU moved on).
    pub fn ended(&mut self) {
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_vm_is_cancelled_at_once_an_unlocked_one_continued_after_the_grace() {
        let grace = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut o = Orphan::default();
        assert!(!o.due(false, true, t0, grace), "nothing paused");
        o.seen("active", t0);
        assert!(!o.paused());
        o.seen("pre-switchover", t0);
        o.seen("pre-switchover", t0 + Duration::from_secs(1));
        assert_eq!(o.next(grace), Some(t0 + grace), "timed from first sight");
        assert!(o.due(false, true, t0, grace), "locked: at once");
        assert!(!o.due(false, false, t0 + Duration::from_secs(4), grace));
        assert!(o.due(false, false, t0 + grace, grace));
        assert!(!o.due(true, true, t0 + grace, grace), "a live gate owns it");
        o.seen("completed", t0 + grace);
        assert!(!o.due(false, true, t0 + grace, grace));
        assert_eq!(decide(true), End::Cancel);
        assert_eq!(decide(false), End::Continue);
    }
}
