// SPDX-License-Identifier: GPL-2.0

//! What the host announced, as every open file of `/dev/mld` sees it.
//!
//! Every announcement counts up a generation; a file remembers the
//! generations it last saw (in its status call), so each file is woken by
//! each announcement once, whether it holds a lock or not, and an
//! application that reads its status late still learns what it missed.
//! A pending migration also has a deadline: the grace the host gave, kept
//! as an absolute time so that every reader sees the same clock run down.

use crate::abi::wire::Notice;

const NSEC_PER_MSEC: u64 = 1_000_000;

/// How many announcements of each kind there were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gens {
    /// Pending migrations announced.
    pub announced: u32,
    /// Pending migrations called off.
    pub cancelled: u32,
    /// Arrivals here by live migration.
    pub migrated: u32,
    /// Post-copy phases announced (the VM runs on the destination).
    pub postcopy: u32,
    /// Forced releases of the lock.
    pub forced: u32,
    /// Checkpoints begun.
    pub checkpoints: u32,
    /// Checkpoints ended (written or given up).
    pub checkpoints_done: u32,
    /// Restores from a checkpoint.
    pub restored: u32,
}

/// What changed between two [`Gens`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct News {
    /// A migration was announced.
    pub announced: bool,
    /// A pending migration was called off.
    pub cancelled: bool,
    /// The VM arrived here.
    pub migrated: bool,
    /// Post-copy started.
    pub postcopy: bool,
    /// The host released the lock by force.
    pub forced: bool,
    /// A checkpoint began.
    pub checkpoint: bool,
    /// A checkpoint ended.
    pub checkpoint_done: bool,
    /// The VM was restored from a checkpoint.
    pub restored: bool,
}

impl News {
    /// Whether anything happened.
    pub fn any(&self) -> bool {
        self.announced
            || self.cancelled
            || self.migrated
            || self.postcopy
            || self.forced
            || self.checkpoint
            || self.checkpoint_done
            || self.restored
    }
}

impl Gens {
    /// What happened since `seen`.
    pub fn since(&self, seen: &Gens) -> News {
        News {
            announced: self.announced != seen.announced,
            cancelled: self.cancelled != seen.cancelled,
            migrated: self.migrated != seen.migrated,
            postcopy: self.postcopy != seen.postcopy,
            forced: self.forced != seen.forced,
            checkpoint: self.checkpoints != seen.checkpoints,
            checkpoint_done: self.checkpoints_done != seen.checkpoints_done,
            restored: self.restored != seen.restored,
        }
    }
}

/// The host's announcements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notices {
    /// The deadline of the migration pending now (caller's clock, ns).
    pending_until: Option<u64>,
    /// A checkpoint is being taken.
    checkpointing: bool,
    gens: Gens,
}

impl Notices {
    /// Nothing announced yet.
    pub const fn new() -> Self {
        Notices {
            pending_until: None,
            checkpointing: false,
            gens: Gens {
                announced: 0,
                cancelled: 0,
                migrated: 0,
                postcopy: 0,
                forced: 0,
                checkpoints: 0,
                checkpoints_done: 0,
                restored: 0,
            },
        }
    }

    /// Takes in notice `n`, received at `now`; returns whether open files
    /// have something new to see (and so must be woken).
    pub fn apply(&mut self, n: Notice, now: u64) -> bool {
        let g = &mut self.gens;
        match n {
            Notice::MigrationPending { deadline_ms } => {
                let left = u64::from(deadline_ms).saturating_mul(NSEC_PER_MSEC);
                self.pending_until = Some(now.saturating_add(left));
                g.announced = g.announced.wrapping_add(1);
            }
            Notice::MigrationCancelled => {
                self.pending_until = None;
                g.cancelled = g.cancelled.wrapping_add(1);
            }
            Notice::Migrated => {
                // Whatever was pending has happened.
                self.pending_until = None;
                g.migrated = g.migrated.wrapping_add(1);
            }
            Notice::PostcopyStarted => g.postcopy = g.postcopy.wrapping_add(1),
            Notice::ForcedRelease { .. } => g.forced = g.forced.wrapping_add(1),
            Notice::CheckpointStarted => {
                self.checkpointing = true;
                g.checkpoints = g.checkpoints.wrapping_add(1);
            }
            Notice::CheckpointDone { .. } => {
                self.checkpointing = false;
                g.checkpoints_done = g.checkpoints_done.wrapping_add(1);
            }
            Notice::Restored => {
                // The image may hold a checkpoint under way (it began
                // then); for the restored VM it is over.
                self.checkpointing = false;
                self.pending_until = None;
                g.restored = g.restored.wrapping_add(1);
            }
            Notice::PolicyChange { .. } => return false,
        }
        true
    }

    /// Whether a migration is pending.
    pub fn pending(&self) -> bool {
        self.pending_until.is_some()
    }

    /// Whether a checkpoint is being taken.
    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Milliseconds until the pending migration's deadline, rounded up; 0
    /// if none is pending or the deadline passed.
    pub fn deadline_left_ms(&self, now: u64) -> u32 {
        self.pending_until.map_or(0, |t| {
            let ms = t.saturating_sub(now).div_ceil(NSEC_PER_MSEC);
            ms.min(u64::from(u32::MAX)) as u32
        })
    }

    /// The generations so far.
    pub fn gens(&self) -> Gens {
        self.gens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NSEC_PER_MSEC;

    #[test]
    fn pending_runs_down_and_ends_with_cancel_or_arrival() {
        let mut n = Notices::new();
        assert!(n.apply(Notice::MigrationPending { deadline_ms: 3000 }, 10 * MS));
        assert!(n.pending());
        assert_eq!(n.deadline_left_ms(10 * MS), 3000);
        assert_eq!(n.deadline_left_ms(1010 * MS), 2000);
        assert_eq!(n.deadline_left_ms(1010 * MS + 1), 2000);
        assert_eq!(n.deadline_left_ms(9000 * MS), 0);
        assert!(
            n.pending(),
            "a passed deadline is still a pending migration"
        );
        assert!(n.apply(Notice::MigrationCancelled, 9000 * MS));
        assert!(!n.pending());
        n.apply(Notice::MigrationPending { deadline_ms: 0 }, 0);
        assert!(n.pending());
        n.apply(Notice::Migrated, 1);
        assert!(!n.pending());
        assert_eq!(n.deadline_left_ms(1), 0);
    }

    #[test]
    fn each_file_sees_each_announcement_once() {
        let mut n = Notices::new();
        let seen = n.gens();
        assert!(!n.gens().since(&seen).any());
        n.apply(Notice::MigrationPending { deadline_ms: 5 }, 0);
        n.apply(Notice::MigrationCancelled, 0);
        let news = n.gens().since(&seen);
        assert!(news.announced && news.cancelled && !news.migrated);
        let seen = n.gens();
        n.apply(Notice::Migrated, 0);
        n.apply(Notice::PostcopyStarted, 0);
        n.apply(Notice::ForcedRelease { reason: 1 }, 0);
        let news = n.gens().since(&seen);
        assert!(news.migrated && news.postcopy && news.forced && !news.announced);
        assert_eq!(n.gens().migrated, 1);
    }

    #[test]
    fn a_checkpoint_runs_until_done_or_restored() {
        let mut n = Notices::new();
        let seen = n.gens();
        assert!(n.apply(Notice::CheckpointStarted, 0));
        assert!(n.checkpointing());
        let news = n.gens().since(&seen);
        assert!(news.checkpoint && !news.checkpoint_done && !news.restored);
        let seen = n.gens();
        assert!(n.apply(Notice::CheckpointDone { saved: true }, 0));
        assert!(!n.checkpointing());
        assert!(n.gens().since(&seen).checkpoint_done);
        // A restored image was taken while a checkpoint ran, and a
        // migration may have been pending then: both are over.
        n.apply(Notice::CheckpointStarted, 0);
        n.apply(Notice::MigrationPending { deadline_ms: 9 }, 0);
        let seen = n.gens();
        assert!(n.apply(Notice::Restored, 0));
        assert!(!n.checkpointing() && !n.pending());
        let news = n.gens().since(&seen);
        assert!(news.restored && !news.checkpoint_done && !news.migrated);
        assert_eq!(n.gens().checkpoints, 2);
        assert_eq!(n.gens().checkpoints_done, 1);
    }

    #[test]
    fn a_policy_change_wakes_no_one() {
        let mut n = Notices::new();
        assert!(!n.apply(Notice::PolicyChange { max_lease_ms: 1 }, 0));
        assert_eq!(n, Notices::new());
    }

    #[test]
    fn huge_deadlines_saturate() {
        let mut n = Notices::new();
        n.apply(
            Notice::MigrationPending {
                deadline_ms: u32::MAX,
            },
            u64::MAX - 1,
        );
        assert_eq!(n.deadline_left_ms(0), u32::MAX);
        assert_eq!(n.deadline_left_ms(u64::MAX), 0);
    }
}
