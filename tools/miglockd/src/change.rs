// SPDX-License-Identifier: GPL-2.0

//! What one decision changed in a ledger: the journal's line. A change
//! names only what differs (holds put or ended, usage spans put, the
//! policy, the report, the boot id), so a line stays small however long
//! the ledger's history.
//!
//! Pure, like the ledger. Applying a change sets what it names, so
//! replaying the changes made after a snapshot onto that snapshot, or onto
//! any later one (a compaction takes its snapshot while changes go on),
//! ends in the same ledger.

use crate::ledger::{Hold, Ledger, Policy, Reported};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One ledger change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Change {
    /// The new policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// The config file's policy the agent last started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_policy: Option<Policy>,
    /// The host boot the times count on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_boot: Option<String>,
    /// Holds granted or changed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub put: BTreeMap<u32, Hold>,
    /// Holds that ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<u32>,
    /// The guest's new report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Reported>,
    /// The guest's new boot id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<u64>,
    /// The boot id was forgotten (the guest left).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub boot_forgotten: bool,
    /// Usage spans that are new; each replaces the spans it overlaps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<(u64, u64)>,
    /// Spans ending at or before this left the quota window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<u64>,
}

fn meet(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

impl Change {
    /// What turned `before` into `after`.
    pub fn between(before: &Ledger, after: &Ledger) -> Change {
        let spans: Vec<(u64, u64)> = after
            .usage
            .iter()
            .filter(|s| before.usage.binary_search(s).is_err())
            .copied()
            .collect();
        // Spans that went without being merged into a new one were pruned.
        let prune = before
            .usage
            .iter()
            .filter(|s| after.usage.binary_search(s).is_err())
            .filter(|&&s| !spans.iter().any(|&p| meet(s, p)))
            .map(|s| s.1)
            .max();
        Change {
            policy: (before.policy != after.policy).then(|| after.policy.clone()),
            config_policy: (before.config_policy != after.config_policy)
                .then(|| after.config_policy.clone())
                .flatten(),
            host_boot: (before.host_boot != after.host_boot)
                .then(|| after.host_boot.clone())
                .flatten(),
            put: after
                .holds
                .iter()
                .filter(|(id, h)| before.holds.get(id) != Some(h))
                .map(|(id, h)| (*id, h.clone()))
                .collect(),
            ended: before
                .holds
                .keys()
                .filter(|id| !after.holds.contains_key(id))
                .copied()
                .collect(),
            reported: (before.reported != after.reported).then_some(after.reported),
            boot_id: after.boot_id.filter(|_| before.boot_id != after.boot_id),
            boot_forgotten: before.boot_id.is_some() && after.boot_id.is_none(),
            spans,
            prune,
        }
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }

    /// Sets in `l` what this change names.
    pub fn apply(&self, l: &mut Ledger) {
        if let Some(p) = &self.policy {
            l.policy = p.clone();
        }
        if let Some(p) = &self.config_policy {
            l.config_policy = Some(p.clone());
        }
        if let Some(b) = &self.host_boot {
            l.host_boot = Some(b.clone());
        }
        for id in &self.ended {
            l.holds.remove(id);
        }
        l.holds
            .extend(self.put.iter().map(|(id, h)| (*id, h.clone())));
        if let Some(r) = self.reported {
            l.reported = r;
        }
        if self.boot_forgotten {
            l.boot_id = None;
        }
        if self.boot_id.is_some() {
            l.boot_id = self.boot_id;
        }
        if let Some(t) = self.prune {
            l.usage.retain(|s| s.1 > t);
        }
        for &p in &self.spans {
            let u = &mut l.usage;
            let first = u.partition_point(|&(_, e)| e < p.0);
            let end = first + u[first..].partition_point(|&(s, _)| s <= p.1);
            u.splice(first..end, [p]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Policy, MAX_SPANS, REPORTED_HOLD};
    use proptest::prelude::*;

    /// One thing that happens to a ledger.
    #[derive(Clone, Debug)]
    enum Op {
        Lock(u32, u32),
        Held(u32, u32),
        Unlock(u32),
        Report(u32, bool, u32),
        Expire,
        Force,
        Revoke(u32),
        Hello(u64),
        Leave,
        Quota(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let hold = prop_oneof![1u32..6, Just(REPORTED_HOLD)];
        prop_oneof![
            4 => (hold.clone(), 0u32..2000).prop_map(|(h, l)| Op::Lock(h, l)),
            1 => (hold.clone(), 0u32..2000).prop_map(|(h, l)| Op::Held(h, l)),
            3 => hold.clone().prop_map(Op::Unlock),
            1 => (0u32..3, any::<bool>(), 0u32..3000).prop_map(|(n, s, e)| Op::Report(n, s, e)),
            1 => Just(Op::Expire),
            1 => Just(Op::Force),
            1 => hold.prop_map(Op::Revoke),
            1 => (1u64..3).prop_map(Op::Hello),
            1 => Just(Op::Leave),
            1 => (500u64..5000).prop_map(Op::Quota),
        ]
    }

    fn run(l: &mut Ledger, op: &Op, now: u64) {
        match *op {
            Op::Lock(h, lease) => {
                l.lock(h, 1, "x", lease, now);
            }
            Op::Held(h, lease) => {
                l.held(h, 2, "y", lease, now);
            }
            Op::Unlock(h) => {
                l.unlock(h, now);
            }
            Op::Report(n, s, e) => {
                l.report(n, s, e, now);
            }
            Op::Expire => l.expire(now),
            Op::Force => {
                l.force_release(now);
            }
            Op::Revoke(h) => l.revoke(h),
            Op::Hello(b) => l.boot_id = Some(b),
            Op::Leave => l.boot_id = None,
            Op::Quota(q) => l.policy.quota_ms = q,
        }
    }

    /// What the journal keeps of a ledger.
    fn saved(l: &Ledger) -> serde_json::Value {
        serde_json::to_value(l).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Replaying the changes (through their JSON lines) onto the first
        /// state gives every later state, and so does replaying them onto
        /// any later snapshot (a compaction's race).
        #[test]
        fn replay_of_the_changes_is_the_ledger(
            ops in proptest::collection::vec((op(), 0u64..400), 1..200),
            cut in any::<proptest::sample::Index>(),
        ) {
            let policy = Policy {
                max_lease_ms: 1500,
                quota_ms: 4000,
                window_ms: 6000,
                ..Policy::default()
            };
            let mut live = Ledger::new(policy.clone());
            let mut replayed = Ledger::new(policy);
            let mut states = vec![live.clone()];
            let mut lines = Vec::new();
            let mut now = 0;
            for (op, dt) in &ops {
                now += dt;
                let before = live.clone();
                run(&mut live, op, now);
                let c = Change::between(&before, &live);
                let line = serde_json::to_string(&c).unwrap();
                let back: Change = serde_json::from_str(&line).unwrap();
                back.apply(&mut replayed);
                prop_assert_eq!(saved(&replayed), saved(&live), "after {:?}: {}", op, line);
                prop_assert!(live.usage.len() <= MAX_SPANS);
                lines.push(back);
                states.push(live.clone());
            }
            // A snapshot taken after change j, replayed from change k <= j.
            let j = cut.index(states.len());
            let k = j / 2;
            let mut l = states[j].clone();
            for c in &lines[k..] {
                c.apply(&mut l);
            }
            prop_assert_eq!(saved(&l), saved(&live));
        }
    }

    #[test]
    fn a_lock_and_an_unlock_are_small_lines() {
        let mut l = Ledger::new(Policy::default());
        for i in 0..100_000u64 {
            let before = l.clone();
            l.lock(1 + (i % 8) as u32, 2, "scale", 60_000, i * 3);
            let lock = serde_json::to_string(&Change::between(&before, &l)).unwrap();
            let before = l.clone();
            l.unlock(1 + (i % 8) as u32, i * 3 + 1);
            let unlock = serde_json::to_string(&Change::between(&before, &l)).unwrap();
            assert!(lock.len() < 200 && unlock.len() < 200, "{lock} {unlock}");
        }
        assert!(l.usage.len() <= MAX_SPANS, "{}", l.usage.len());
    }
}
