// SPDX-License-Identifier: GPL-2.0

//! `MLD_IOC_STATUS` and `poll()` for one open file: the VM-wide state, and
//! what happened since this file last looked.

use super::notices::{Gens, Notices};
use super::table::{Owner, Table};
use crate::abi::types::*;

const NSEC_PER_MSEC: u64 = 1_000_000;

/// VM-wide facts beside the table and the notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// A host channel is connected.
    pub channel: bool,
    /// The host released the lock by force (until the next lock).
    pub forced_release: bool,
    /// The last `MLD_DECISION_*`.
    pub last_decision: u32,
    /// The host's reason with the last refusal, 0 if none.
    pub last_refusal: u32,
    /// The longest lease.
    pub max_lease_ms: u32,
}

/// What one open file has seen; its status call brings it up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The file took a hold and has not seen it end yet.
    pub expect_hold: bool,
    /// The file's last successful lock or renewal was decided locally.
    pub local: bool,
    /// The announcements it has seen.
    pub gens: Gens,
}

/// Milliseconds from `now` until `t`, rounded up.
pub fn ms_until(t: u64, now: u64) -> u64 {
    t.saturating_sub(now).div_ceil(NSEC_PER_MSEC)
}

/// Whether `owner`'s file has something to react to: its hold ended
/// without it unlocking (a lease expiry, a forced release), or the host
/// announced something it has not seen.
pub fn has_event(t: &Table, n: &Notices, owner: Owner, seen: &Seen) -> bool {
    (seen.expect_hold && t.hold(owner).is_none()) || n.gens().since(&seen.gens).any()
}

/// The status of `owner`'s file at `now`; `seen` is brought up to date,
/// so each event is reported once.
pub fn status(
    t: &Table,
    n: &Notices,
    f: &Facts,
    owner: Owner,
    seen: &mut Seen,
    now: u64,
) -> MldStatus {
    let mine = t.hold(owner);
    let news = n.gens().since(&seen.gens);
    let lease_ended = mine.is_none() && seen.expect_hold;
    let mut flags = 0;
    for (set, bit) in [
        (f.channel, MLD_ST_CHANNEL),
        (n.pending(), MLD_ST_MIGRATION_PENDING),
        (f.forced_release, MLD_ST_FORCED_RELEASE),
        (t.locked(), MLD_ST_LOCKED),
        (t.static_lock(), MLD_ST_STATIC),
        (mine.is_some(), MLD_ST_HELD_BY_ME),
        (t.hold(Owner::Detached).is_some(), MLD_ST_DETACHED),
        (lease_ended, MLD_ST_LEASE_EXPIRED),
        (news.postcopy, MLD_ST_POSTCOPY),
        (news.cancelled, MLD_ST_MIGRATION_CANCELLED),
        (news.migrated, MLD_ST_MIGRATED),
        (seen.local, MLD_ST_LOCAL_DECISION),
        (n.checkpointing(), MLD_ST_CHECKPOINT),
        (news.checkpoint_done, MLD_ST_CHECKPOINT_DONE),
        (news.restored, MLD_ST_RESTORED),
    ] {
        if set {
            flags |= bit;
        }
    }
    if mine.is_none() {
        seen.expect_hold = false;
    }
    seen.gens = n.gens();
    let gens = n.gens();
    MldStatus {
        flags,
        holders: t.holders() as u32,
        earliest_expiry_ms: t.earliest_expiry().map_or(0, |e| ms_until(e, now)),
        own_expiry_ms: mine.map_or(0, |h| ms_until(h.expires_at, now)),
        last_decision: f.last_decision,
        last_refusal: f.last_refusal,
        max_lease_ms: f.max_lease_ms,
        postcopy_gen: gens.postcopy,
        pending_deadline_ms: n.deadline_left_ms(now),
        migration_gen: gens.migrated,
        reserved: [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::wire::Notice;
    use crate::table::LABEL_LEN;

    const MS: u64 = NSEC_PER_MSEC;
    const FACTS: Facts = Facts {
        channel: true,
        forced_release: false,
        last_decision: MLD_DECISION_GRANTED,
        last_refusal: 0,
        max_lease_ms: 1000,
    };

    #[test]
    fn a_lease_expiry_is_reported_once() {
        let mut t = Table::default();
        let me = Owner::File(3);
        t.lock(me, 1, [0; LABEL_LEN], 10, 0).unwrap();
        let mut seen = Seen {
            expect_hold: true,
            ..Seen::default()
        };
        let n = Notices::new();
        let st = status(&t, &n, &FACTS, me, &mut seen, 4 * MS);
        assert_eq!(st.flags & MLD_ST_HELD_BY_ME, MLD_ST_HELD_BY_ME);
        assert_eq!(st.own_expiry_ms, 6);
        assert!(!has_event(&t, &n, me, &seen));
        t.expire(10 * MS, |_| {});
        assert!(has_event(&t, &n, me, &seen));
        let st = status(&t, &n, &FACTS, me, &mut seen, 10 * MS);
        assert_eq!(st.flags & MLD_ST_LEASE_EXPIRED, MLD_ST_LEASE_EXPIRED);
        assert!(!has_event(&t, &n, me, &seen));
        let st = status(&t, &n, &FACTS, me, &mut seen, 10 * MS);
        assert_eq!(st.flags & MLD_ST_LEASE_EXPIRED, 0);
    }

    #[test]
    fn every_file_sees_every_notice_once_with_the_deadline() {
        let t = Table::default();
        let mut n = Notices::new();
        let (a, b) = (Owner::File(1), Owner::File(2));
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        n.apply(Notice::MigrationPending { deadline_ms: 3000 }, 0);
        for (o, s) in [(a, &mut sa), (b, &mut sb)] {
            assert!(has_event(&t, &n, o, s));
            let st = status(&t, &n, &FACTS, o, s, 1000 * MS);
            assert_eq!(
                st.flags & MLD_ST_MIGRATION_PENDING,
                MLD_ST_MIGRATION_PENDING
            );
            assert_eq!(st.pending_deadline_ms, 2000);
            assert!(!has_event(&t, &n, o, s));
        }
        n.apply(Notice::MigrationCancelled, 2000 * MS);
        let st = status(&t, &n, &FACTS, a, &mut sa, 2000 * MS);
        assert_eq!(
            st.flags & (MLD_ST_MIGRATION_PENDING | MLD_ST_MIGRATION_CANCELLED),
            MLD_ST_MIGRATION_CANCELLED
        );
        assert_eq!(st.pending_deadline_ms, 0);
        n.apply(Notice::Migrated, 3000 * MS);
        // b missed the cancellation and sees it with the arrival.
        let st = status(&t, &n, &FACTS, b, &mut sb, 3000 * MS);
        assert_eq!(
            st.flags & (MLD_ST_MIGRATION_CANCELLED | MLD_ST_MIGRATED),
            MLD_ST_MIGRATION_CANCELLED | MLD_ST_MIGRATED
        );
        assert_eq!(st.migration_gen, 1);
        let st = status(&t, &n, &FACTS, b, &mut sb, 3000 * MS);
        assert_eq!(st.flags & MLD_ST_MIGRATED, 0);
        assert_eq!(st.migration_gen, 1);
    }

    #[test]
    fn a_checkpoint_shows_while_it_runs_and_its_end_once() {
        let t = Table::default();
        let mut n = Notices::new();
        let me = Owner::File(1);
        let mut seen = Seen::default();
        n.apply(Notice::CheckpointStarted, 0);
        assert!(has_event(&t, &n, me, &seen));
        let st = status(&t, &n, &FACTS, me, &mut seen, 0);
        assert_eq!(st.flags & MLD_ST_CHECKPOINT, MLD_ST_CHECKPOINT);
        assert!(!has_event(&t, &n, me, &seen));
        n.apply(Notice::CheckpointDone { saved: true }, 0);
        assert!(has_event(&t, &n, me, &seen));
        let st = status(&t, &n, &FACTS, me, &mut seen, 0);
        let both = MLD_ST_CHECKPOINT | MLD_ST_CHECKPOINT_DONE;
        assert_eq!(st.flags & both, MLD_ST_CHECKPOINT_DONE);
        let st = status(&t, &n, &FACTS, me, &mut seen, 0);
        assert_eq!(st.flags & both, 0);
        n.apply(Notice::Restored, 0);
        let st = status(&t, &n, &FACTS, me, &mut seen, 0);
        assert_eq!(st.flags & MLD_ST_RESTORED, MLD_ST_RESTORED);
        let st = status(&t, &n, &FACTS, me, &mut seen, 0);
        assert_eq!(st.flags & MLD_ST_RESTORED, 0);
    }

    #[test]
    fn local_decisions_and_vm_facts_show() {
        let t = Table::new(true);
        let mut seen = Seen {
            local: true,
            ..Seen::default()
        };
        let f = Facts {
            channel: false,
            forced_release: true,
            last_decision: MLD_DECISION_LOCAL,
            last_refusal: 0,
            max_lease_ms: 5,
        };
        let st = status(&t, &Notices::new(), &f, Owner::File(1), &mut seen, 0);
        assert_eq!(
            st.flags,
            MLD_ST_LOCKED | MLD_ST_STATIC | MLD_ST_FORCED_RELEASE | MLD_ST_LOCAL_DECISION
        );
        assert_eq!((st.last_decision, st.max_lease_ms), (MLD_DECISION_LOCAL, 5));
    }
}
