// SPDX-License-Identifier: GPL-2.0

//! One VM's lock state as the host sees it, and the policy decisions on it.
//!
//! Pure: time (lease-clock milliseconds, `clock.rs`: the boot clock, so
//! state survives an agent restart and no clock step moves a lease) is
//! passed in, and nothing here does I/O.

use miglock_abi::wire;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most holds the host keeps for one VM (as many as the guest can have).
pub const MAX_HOLDS: usize = miglock_lockstate::table::MAX_HOLDERS;

/// Most usage spans kept (past the cap the two closest merge, the gap
/// between them counted as locked): the ledger, and so each decision's
/// cost, stays bounded however often a guest locks.
pub const MAX_SPANS: usize = 128;

/// The hold that stands for holds a guest reports (`State`) beyond those
/// this host granted: decided like a lock, never taken on the guest's word.
pub const REPORTED_HOLD: u32 = u32::MAX;

/// [`REPORTED_HOLD`]'s label.
pub const REPORTED_LABEL: &str = "reported by the guest";

/// A VM's policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The paper's static setting at VM creation: `false` is "migration =
    /// no", a lock that only an administrator lifts.
    pub migration: bool,
    /// Whether the guest may lock at all.
    pub guest_locks: bool,
    /// Longest lease granted, ms.
    pub max_lease_ms: u32,
    /// Locked time allowed per window (the paper's time slot), ms.
    pub quota_ms: u64,
    /// The quota window, ms.
    pub window_ms: u64,
    /// How long a pending-migration notice gives the guest, ms.
    pub grace_ms: u32,
    /// Whether a live checkpoint of the VM may be taken while it is locked
    /// (it does not move the VM, so by default it may).
    pub checkpoint_locked: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            migration: true,
            guest_locks: true,
            max_lease_ms: 300_000,
            quota_ms: 1_800_000,
            window_ms: 3_600_000,
            grace_ms: 30_000,
            checkpoint_locked: true,
        }
    }
}

/// A hold the host granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Reason code.
    pub reason: u32,
    /// Label (printable ASCII).
    pub label: String,
    /// When it was granted.
    pub since_ms: u64,
    /// When its lease ends.
    pub until_ms: u64,
}

/// What the guest last reported about itself (`State`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// Holds in the guest (including ones it took while disconnected).
    pub holders: u32,
    /// The guest's static lock (module parameter).
    pub static_lock: bool,
    /// When the report's lease would end (capped by the policy). The report
    /// itself locks nothing: only [`REPORTED_HOLD`], once granted, does.
    pub until_ms: u64,
}

/// Where a running migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Migration {
    /// Copying while the guest runs: a new lock cancels it.
    BeforeSwitchover,
    /// The guest is (being) moved: a new lock is refused.
    AfterSwitchover,
}

/// The answer to a lock or renew request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Granted for this lease.
    Granted(u32),
    /// Refused with a `wire::REFUSE_*` reason.
    Refused(u32),
}

/// One VM's lock state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    /// Policy.
    pub policy: Policy,
    /// Holds by guest hold id.
    pub holds: BTreeMap<u32, Hold>,
    /// The guest's last report.
    pub reported: Reported,
    /// Locked spans `[start, end)` in the quota window, for accounting:
    /// sorted, disjoint, not touching, at most [`MAX_SPANS`].
    pub usage: Vec<(u64, u64)>,
    /// The guest's boot id, once it said hello.
    pub boot_id: Option<u64>,
    /// The configuration file's policy as the agent last started with it:
    /// a restart finding the file unchanged keeps `policy` (runtime
    /// changes win), one finding it edited takes the file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_policy: Option<Policy>,
    /// The host boot whose lease clock the times here count on; `None`:
    /// an older agent's state, on the wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_boot: Option<String>,
    /// Where QEMU's outgoing migration is, if one runs (not persisted
    /// across restarts: QEMU tells a new agent).
    #[serde(skip)]
    pub migration: Option<Migration>,
    /// The agent's own gate runs a migration (one at a time).
    #[serde(skip)]
    pub gate: bool,
    /// The agent takes a live checkpoint (never beside a migration).
    #[serde(skip)]
    pub checkpoint: bool,
    /// The agent restores the VM from a checkpoint: its arrival is a
    /// restore, not a migration.
    #[serde(skip)]
    pub restoring: bool,
}

/// Length of the union of `intervals` clipped to `[from, to)`.
fn covered(intervals: impl Iterator<Item = (u64, u64)>, from: u64, to: u64) -> u64 {
    let mut v: Vec<(u64, u64)> = intervals
        .map(|(a, b)| (a.max(from), b.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    v.sort_unstable();
    let (mut total, mut end) = (0, from);
    for (a, b) in v {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

impl Ledger {
    /// A ledger under `policy`.
    pub fn new(policy: Policy) -> Self {
        Ledger {
            policy,
            ..Ledger::default()
        }
    }

    /// Holds whose lease has not ended.
    pub fn live_holds(&self, now: u64) -> impl Iterator<Item = (&u32, &Hold)> {
        self.holds.iter().filter(move |(_, h)| h.until_ms > now)
    }

    /// Whether the VM must not be migrated (unless forced). Only holds this
    /// host granted count, never what the guest merely reports.
    pub fn locked(&self, now: u64) -> bool {
        !self.policy.migration || self.live_holds(now).next().is_some()
    }

    /// The lease to ask for [`REPORTED_HOLD`] if the guest's last report
    /// describes holds this host did not grant (more holders than granted
    /// holds, or its static lock); `None` if the grants cover it.
    pub fn unbacked(&self, now: u64) -> Option<u32> {
        let granted = self
            .live_holds(now)
            .filter(|(&id, _)| id != REPORTED_HOLD)
            .count();
        let r = self.reported;
        if r.static_lock {
            return Some(self.policy.max_lease_ms);
        }
        let left = r.until_ms.saturating_sub(now).min(u64::from(u32::MAX)) as u32;
        (r.holders as usize > granted && left > 0).then_some(left)
    }

    /// Why it is locked, one line per reason (empty if it is not).
    pub fn reasons(&self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        if !self.policy.migration {
            out.push("policy: migration = no (static, set by the administrator)".to_string());
        }
        for (id, h) in self.live_holds(now) {
            let reason =
                miglock_abi::types::Reason::from_u32(h.reason).map_or("unknown", |r| r.name());
            out.push(format!(
                "guest hold {id}: {reason} \"{}\", {} s left",
                h.label,
                (h.until_ms - now).div_ceil(1000)
            ));
        }
        out
    }

    /// Why it is locked, in a word QEMU's blocker can carry (the first
    /// live hold's reason, or where the lock comes from).
    pub fn blocker_reason(&self, now: u64) -> &'static str {
        if let Some((_, h)) = self.live_holds(now).next() {
            return miglock_abi::types::Reason::from_u32(h.reason)
                .map_or("guest-lock", |r| r.name());
        }
        if !self.policy.migration {
            "static-policy"
        } else if self.reported.static_lock {
            "static-lock"
        } else {
            "guest-lock"
        }
    }

    /// Takes back a grant the host could not enforce, as if it had never
    /// been made.
    pub fn revoke(&mut self, hold: u32) {
        self.holds.remove(&hold);
    }

    /// Locked time used in the current quota window.
    pub fn used_ms(&self, now: u64) -> u64 {
        let from = now.saturating_sub(self.policy.window_ms);
        let open = self
            .holds
            .values()
            .map(|h| (h.since_ms, h.until_ms.min(now)));
        covered(self.usage.iter().copied().chain(open), from, now)
    }

    /// Adds `[a, b)` to the usage spans, merged with those it overlaps or
    /// touches; past [`MAX_SPANS`], the two spans with the smallest gap
    /// between them become one (the quota then counts that gap: it errs
    /// on the side of the host).
    pub fn add_usage(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let u = &mut self.usage;
        // Spans are sorted and apart: those touching [a, b] are a run.
        let first = u.partition_point(|&(_, e)| e < a);
        let end = first + u[first..].partition_point(|&(s, _)| s <= b);
        let (mut a, mut b) = (a, b);
        if first < end {
            a = a.min(u[first].0);
            b = b.max(u[end - 1].1);
        }
        u.splice(first..end, [(a, b)]);
        if u.len() > MAX_SPANS {
            let i = (0..u.len() - 1)
                .min_by_key(|&i| u[i + 1].0 - u[i].1)
                .unwrap_or(0);
            u[i].1 = u[i + 1].1;
            u.remove(i + 1);
        }
    }

    /// Brings usage kept by an older agent (one interval per lock, in
    /// any order) into spans.
    pub fn normalize(&mut self) {
        let old = std::mem::take(&mut self.usage);
        for (a, b) in old {
            self.add_usage(a, b);
        }
    }

    /// Drops what ended before `now`, keeping its time for the quota.
    pub fn expire(&mut self, now: u64) {
        let ended: Vec<u32> = self
            .holds
            .iter()
            .filter(|(_, h)| h.until_ms <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in ended {
            if let Some(h) = self.holds.remove(&id) {
                self.add_usage(h.since_ms, h.until_ms);
            }
        }
        let from = now.saturating_sub(self.policy.window_ms);
        let gone = self.usage.partition_point(|&(_, end)| end <= from);
        self.usage.drain(..gone);
    }

    /// Decides a lock (or renew) of `hold` for `lease_ms`, and records it.
    pub fn lock(
        &mut self,
        hold: u32,
        reason: u32,
        label: &str,
        lease_ms: u32,
        now: u64,
    ) -> Verdict {
        self.expire(now);
        if !self.policy.guest_locks {
            return Verdict::Refused(wire::REFUSE_POLICY);
        }
        if self.migration == Some(Migration::AfterSwitchover) {
            return Verdict::Refused(wire::REFUSE_MIGRATING);
        }
        if !self.holds.contains_key(&hold) && self.holds.len() >= MAX_HOLDS {
            return Verdict::Refused(wire::REFUSE_TOO_MANY);
        }
        // Time already inside this hold is counted; a renewal restarts it.
        let used = self.used_ms(now);
        let left = self.policy.quota_ms.saturating_sub(used);
        let already = self
            .holds
            .get(&hold)
            .map_or(0, |h| h.until_ms.saturating_sub(now));
        let left = left.saturating_add(already);
        let lease = u64::from(lease_ms.min(self.policy.max_lease_ms)).min(left);
        if lease == 0 {
            return Verdict::Refused(wire::REFUSE_QUOTA);
        }
        self.put(hold, reason, label, now, now + lease);
        Verdict::Granted(lease as u32)
    }

    /// Records `hold` from `now` to `until_ms`; an earlier interval of the
    /// same hold is closed at `now` (the renewed hold goes on from here).
    fn put(&mut self, hold: u32, reason: u32, label: &str, now: u64, until_ms: u64) {
        if let Some(old) = self.holds.get(&hold) {
            let since = old.since_ms;
            self.add_usage(since, now);
        }
        self.holds.insert(
            hold,
            Hold {
                reason,
                label: label.to_string(),
                since_ms: now,
                until_ms,
            },
        );
    }

    /// Records `hold`, which the guest took without asking (`Held`) inside
    /// a hold this host granted: kept until its lease or the covering hold
    /// ends, whichever comes first (the guest's own end is earlier still:
    /// it counted from before the frame left). False, recording nothing,
    /// if no live hold covers it or the hold limit is reached: the guest
    /// must then be asked to let go.
    pub fn held(&mut self, hold: u32, reason: u32, label: &str, lease_ms: u32, now: u64) -> bool {
        self.expire(now);
        let Some(cover) = self
            .holds
            .iter()
            .filter(|(&id, h)| id != hold && h.until_ms > now)
            .map(|(_, h)| h.until_ms)
            .max()
        else {
            return false;
        };
        if !self.holds.contains_key(&hold) && self.holds.len() >= MAX_HOLDS {
            return false;
        }
        let until_ms = now.saturating_add(u64::from(lease_ms)).min(cover);
        self.put(hold, reason, label, now, until_ms);
        true
    }

    /// Ends `hold` (guest unlock); false if unknown.
    pub fn unlock(&mut self, hold: u32, now: u64) -> bool {
        match self.holds.remove(&hold) {
            Some(h) => {
                self.add_usage(h.since_ms, h.until_ms.min(now));
                true
            }
            None => false,
        }
    }

    /// Records the guest's own report (it locks nothing by itself: see
    /// [`Ledger::unbacked`]). Returns the holds it ended (when the guest
    /// says it holds nothing).
    pub fn report(
        &mut self,
        holders: u32,
        static_lock: bool,
        expiry_ms: u32,
        now: u64,
    ) -> Vec<u32> {
        let lease = if static_lock {
            self.policy.max_lease_ms
        } else {
            expiry_ms.min(self.policy.max_lease_ms)
        };
        self.reported = Reported {
            holders,
            static_lock,
            until_ms: now + u64::from(lease),
        };
        if holders != 0 || static_lock {
            return Vec::new();
        }
        // The guest holds nothing: whatever the host remembers is over.
        let ended: Vec<u32> = self.holds.keys().copied().collect();
        for &id in &ended {
            self.unlock(id, now);
        }
        ended
    }

    /// Moves every saved time `by` ms earlier (a state an older agent kept
    /// on the wall clock, onto the lease clock).
    pub fn shift_back(&mut self, by: u64) {
        for h in self.holds.values_mut() {
            h.since_ms = h.since_ms.saturating_sub(by);
            h.until_ms = h.until_ms.saturating_sub(by);
        }
        for s in &mut self.usage {
            *s = (s.0.saturating_sub(by), s.1.saturating_sub(by));
        }
        self.usage.retain(|s| s.0 < s.1);
        self.reported.until_ms = self.reported.until_ms.saturating_sub(by);
    }

    /// Forgets what a state saved in another host boot says about the
    /// guest: its times are on that boot's clock, and its QEMU is gone.
    pub fn forget_boot(&mut self) {
        self.holds.clear();
        self.usage.clear();
        self.reported = Reported::default();
        self.boot_id = None;
    }

    /// Drops every hold (forced migration) and the guest's report.
    pub fn force_release(&mut self, now: u64) -> usize {
        let n = self.holds.len();
        for id in self.holds.keys().copied().collect::<Vec<_>>() {
            self.unlock(id, now);
        }
        self.reported = Reported::default();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_hold_lives_inside_the_one_that_covers_it() {
        let mut l = Ledger::new(Policy::default());
        // Nothing covers it: not recorded.
        assert!(!l.held(2, 1, "b", 5_000, 0));
        assert!(l.holds.is_empty());
        assert!(matches!(
            l.lock(1, 1, "a", 10_000, 0),
            Verdict::Granted(10_000)
        ));
        // Inside: kept for its lease; beyond: cut at the cover's end.
        assert!(l.held(2, 1, "b", 5_000, 100));
        assert_eq!(l.holds[&2].until_ms, 5_100);
        assert!(l.held(3, 1, "c", 60_000, 200));
        assert_eq!(l.holds[&3].until_ms, 10_000);
        // The covering hold ends: the covered ones keep the VM locked.
        assert!(l.unlock(1, 300));
        assert!(l.locked(9_999));
        assert!(!l.locked(10_000));
        // Inside nothing live: refused.
        assert!(!l.held(4, 1, "d", 1_000, 10_001));
        // A hold cannot cover itself.
        let mut l = Ledger::new(Policy::default());
        assert!(matches!(l.lock(1, 1, "a", 10_000, 0), Verdict::Granted(_)));
        assert!(!l.held(1, 1, "a", 1_000, 1));
    }

    fn small_quota() -> Policy {
        Policy {
            quota_ms: 1000,
            window_ms: 10_000,
            max_lease_ms: 800,
            ..Policy::default()
        }
    }

    #[test]
    fn grant_caps_lease_and_locks() {
        let mut l = Ledger::new(small_quota());
        assert_eq!(l.lock(1, 1, "a", 5000, 0), Verdict::Granted(800));
        assert!(l.locked(799));
        assert!(!l.locked(800));
    }

    #[test]
    fn quota_limits_total_locked_time() {
        let mut l = Ledger::new(small_quota());
        assert_eq!(l.lock(1, 1, "a", 800, 0), Verdict::Granted(800));
        assert!(l.unlock(1, 600));
        // 600 ms used, 400 left.
        assert_eq!(l.lock(2, 1, "b", 800, 1000), Verdict::Granted(400));
        assert_eq!(
            l.lock(3, 1, "c", 800, 1400),
            Verdict::Refused(wire::REFUSE_QUOTA)
        );
        // The window slides: after it, the quota is back.
        assert_eq!(l.lock(4, 1, "d", 800, 20_000), Verdict::Granted(800));
    }

    #[test]
    fn overlapping_holds_count_once() {
        let mut l = Ledger::new(small_quota());
        l.lock(1, 1, "a", 500, 0);
        l.lock(2, 1, "b", 500, 0);
        assert_eq!(l.used_ms(400), 400);
    }

    #[test]
    fn policy_and_migration_refusals() {
        let mut l = Ledger::new(Policy {
            guest_locks: false,
            ..Policy::default()
        });
        assert_eq!(
            l.lock(1, 1, "a", 10, 0),
            Verdict::Refused(wire::REFUSE_POLICY)
        );
        let mut l = Ledger::new(Policy::default());
        l.migration = Some(Migration::AfterSwitchover);
        assert_eq!(
            l.lock(1, 1, "a", 10, 0),
            Verdict::Refused(wire::REFUSE_MIGRATING)
        );
        assert!(Ledger::new(Policy {
            migration: false,
            ..Policy::default()
        })
        .locked(0));
    }

    /// A report locks nothing by itself (it once did, for every lease, with
    /// no policy or quota asked): it says what to ask for.
    #[test]
    fn a_report_locks_nothing_it_was_not_granted() {
        let mut l = Ledger::new(small_quota());
        l.report(2, false, 60_000, 0);
        assert!(!l.locked(0));
        assert!(l.reasons(0).is_empty());
        assert_eq!(l.unbacked(0), Some(800), "capped by max_lease_ms");
        // Granted holds cover as many holders as they are.
        assert!(matches!(l.lock(1, 1, "a", 500, 0), Verdict::Granted(_)));
        assert!(matches!(l.lock(2, 1, "b", 500, 0), Verdict::Granted(_)));
        assert_eq!(l.unbacked(10), None);
        assert_eq!(l.report(1, true, 0, 20), Vec::<u32>::new());
        assert_eq!(l.unbacked(20), Some(800), "a static lock is never backed");
        l.report(0, false, 0, 30);
        assert!(!l.locked(30));
        assert!(l.holds.is_empty());
    }

    #[test]
    fn usage_spans_merge_and_stay_bounded() {
        let mut l = Ledger::new(Policy::default());
        l.add_usage(10, 20);
        l.add_usage(30, 40);
        l.add_usage(20, 30); // touches both: one span
        assert_eq!(l.usage, [(10, 40)]);
        l.add_usage(0, 5);
        l.add_usage(50, 60);
        l.add_usage(35, 55);
        assert_eq!(l.usage, [(0, 5), (10, 60)]);
        // A guest locking a million times keeps at most MAX_SPANS spans,
        // never less locked time than it used.
        let mut l = Ledger::new(Policy {
            quota_ms: u64::MAX,
            window_ms: u64::MAX / 2,
            ..Policy::default()
        });
        for i in 0..1_000_000u64 {
            l.add_usage(i * 10, i * 10 + 3);
        }
        assert_eq!(l.usage.len(), MAX_SPANS);
        assert!(l.usage.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(l.used_ms(10_000_000) >= 3_000_000);
    }

    #[test]
    fn survives_serialization() {
        let mut l = Ledger::new(small_quota());
        l.lock(7, 2, "db", 500, 100);
        let s = serde_json::to_string(&l).unwrap();
        let back: Ledger = serde_json::from_str(&s).unwrap();
        assert_eq!(back, l);
        assert!(back.locked(300));
    }
}
