// SPDX-License-Identifier: GPL-2.0

//! Who holds the VM's migration lock, and until when.
//!
//! The VM is locked while any holder holds (or the static lock is set).
//! Every hold has a lease; time is a caller-supplied monotonic clock in
//! nanoseconds, so the logic is deterministic and testable. Memory is
//! bounded: at most [`MAX_HOLDERS`] holds at once. A failed operation leaves
//! the table exactly as it was.

/// Most holds at once; more is [`Error::Full`].
pub const MAX_HOLDERS: usize = 64;

/// Bytes of a hold's label, including the terminating NUL.
pub const LABEL_LEN: usize = 32;

const NSEC_PER_MSEC: u64 = 1_000_000;

/// Who owns a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// An open file of `/dev/mld` (by a unique id); released at close.
    File(u64),
    /// Not tied to a file (the paper's syscall and `set_migration_flag`):
    /// one shared hold, held until unlocked or its lease ends.
    Detached,
}

/// One hold on the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Its owner.
    pub owner: Owner,
    /// Reason code (validated by the caller against the ABI).
    pub reason: u32,
    /// NUL-padded label (validated by the caller).
    pub label: [u8; LABEL_LEN],
    /// Lease length asked for, in milliseconds.
    pub lease_ms: u32,
    /// When the lease ends, in the caller's clock (ns).
    pub expires_at: u64,
}

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// [`MAX_HOLDERS`] holds exist already.
    Full,
    /// The owner holds nothing (unlock or renew).
    NotHeld,
    /// A lease of zero.
    ZeroLease,
}

/// Whether an operation changed the VM-wide locked state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Still unlocked or still locked.
    None,
    /// It was unlocked and is now locked.
    Locked,
    /// It was locked and is now unlocked.
    Unlocked,
}

/// The lock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    slots: [Option<Hold>; MAX_HOLDERS],
    static_lock: bool,
}

impl Default for Table {
    fn default() -> Self {
        Self::new(false)
    }
}

fn expiry(now: u64, lease_ms: u32) -> u64 {
    now.saturating_add(u64::from(lease_ms).saturating_mul(NSEC_PER_MSEC))
}

impl Table {
    /// An empty table; `static_lock` is the paper's static lock (set at load).
    pub const fn new(static_lock: bool) -> Self {
        Table {
            slots: [None; MAX_HOLDERS],
            static_lock,
        }
    }

    /// Whether the VM is locked.
    pub fn locked(&self) -> bool {
        self.static_lock || self.holders() > 0
    }

    /// Whether the static lock is set.
    pub fn static_lock(&self) -> bool {
        self.static_lock
    }

    /// Number of holds.
    pub fn holders(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The hold of `owner`, if any.
    pub fn hold(&self, owner: Owner) -> Option<&Hold> {
        self.slots.iter().flatten().find(|h| h.owner == owner)
    }

    /// Every hold.
    pub fn iter(&self) -> impl Iterator<Item = &Hold> {
        self.slots.iter().flatten()
    }

    /// The earliest lease end among the holds.
    pub fn earliest_expiry(&self) -> Option<u64> {
        self.iter().map(|h| h.expires_at).min()
    }

    fn change<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> (R, Transition) {
        let before = self.locked();
        let r = f(self);
        let t = match (before, self.locked()) {
            (false, true) => Transition::Locked,
            (true, false) => Transition::Unlocked,
            _ => Transition::None,
        };
        (r, t)
    }

    /// Takes (or, for an owner that holds already, updates) a hold.
    pub fn lock(
        &mut self,
        owner: Owner,
        reason: u32,
        label: [u8; LABEL_LEN],
        lease_ms: u32,
        now: u64,
    ) -> Result<Transition, Error> {
        if lease_ms == 0 {
            return Err(Error::ZeroLease);
        }
        let hold = Hold {
            owner,
            reason,
            label,
            lease_ms,
            expires_at: expiry(now, lease_ms),
        };
        let existing = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|h| h.owner == owner));
        let slot = match existing {
            Some(i) => i,
            None => self
                .slots
                .iter()
                .position(Option::is_none)
                .ok_or(Error::Full)?,
        };
        let ((), t) = self.change(|t| t.slots[slot] = Some(hold));
        Ok(t)
    }

    /// Drops `owner`'s hold.
    pub fn unlock(&mut self, owner: Owner) -> Result<Transition, Error> {
        let i = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|h| h.owner == owner))
            .ok_or(Error::NotHeld)?;
        let ((), t) = self.change(|t| t.slots[i] = None);
        Ok(t)
    }

    /// Drops `owner`'s hold if it has one (file close): never fails.
    pub fn release(&mut self, owner: Owner) -> Transition {
        self.unlock(owner).unwrap_or(Transition::None)
    }

    /// Clears the static lock.
    pub fn clear_static(&mut self) -> Transition {
        self.change(|t| t.static_lock = false).1
    }

    /// Sets the static lock.
    pub fn set_static(&mut self) -> Transition {
        self.change(|t| t.static_lock = true).1
    }

    /// Restarts `owner`'s lease with `lease_ms` from `now`; returns the new end.
    pub fn renew(&mut self, owner: Owner, lease_ms: u32, now: u64) -> Result<u64, Error> {
        if lease_ms == 0 {
            return Err(Error::ZeroLease);
        }
        let h = self
            .slots
            .iter_mut()
            .flatten()
            .find(|h| h.owner == owner)
            .ok_or(Error::NotHeld)?;
        h.lease_ms = lease_ms;
        h.expires_at = expiry(now, lease_ms);
        Ok(h.expires_at)
    }

    /// Drops every hold and the static lock; returns how many there were
    /// (the static lock counts as one).
    pub fn clear(&mut self) -> usize {
        let n = self.holders() + usize::from(self.static_lock);
        *self = Table::new(false);
        n
    }

    /// Drops every hold whose lease ended at or before `now`; calls
    /// `expired` for each. Returns the transition.
    pub fn expire(&mut self, now: u64, mut expired: impl FnMut(&Hold)) -> Transition {
        self.change(|t| {
            for s in t.slots.iter_mut() {
                if let Some(h) = s {
                    if h.expires_at <= now {
                        expired(h);
                        *s = None;
                    }
                }
            }
        })
        .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: [u8; LABEL_LEN] = [0; LABEL_LEN];

    #[test]
    fn two_holders_lock_until_both_release() {
        let mut t = Table::default();
        assert_eq!(
            t.lock(Owner::File(1), 1, L, 1000, 0),
            Ok(Transition::Locked)
        );
        assert_eq!(t.lock(Owner::File(2), 2, L, 1000, 0), Ok(Transition::None));
        assert_eq!(t.release(Owner::File(1)), Transition::None);
        assert!(t.locked());
        assert_eq!(t.unlock(Owner::File(2)), Ok(Transition::Unlocked));
        assert!(!t.locked());
    }

    #[test]
    fn relock_updates_instead_of_adding() {
        let mut t = Table::default();
        t.lock(Owner::File(1), 1, L, 1000, 0).unwrap();
        t.lock(Owner::File(1), 3, L, 5000, 10).unwrap();
        assert_eq!(t.holders(), 1);
        assert_eq!(t.hold(Owner::File(1)).map(|h| h.reason), Some(3));
    }

    #[test]
    fn lease_expiry_and_renew() {
        let mut t = Table::default();
        t.lock(Owner::File(1), 1, L, 10, 0).unwrap();
        assert_eq!(t.earliest_expiry(), Some(10 * NSEC_PER_MSEC));
        assert_eq!(
            t.renew(Owner::File(1), 20, 5 * NSEC_PER_MSEC),
            Ok(25 * NSEC_PER_MSEC)
        );
        let mut n = 0;
        assert_eq!(t.expire(24 * NSEC_PER_MSEC, |_| n += 1), Transition::None);
        assert_eq!(
            t.expire(25 * NSEC_PER_MSEC, |_| n += 1),
            Transition::Unlocked
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn static_lock_counts_but_is_no_holder() {
        let mut t = Table::new(true);
        assert!(t.locked());
        assert_eq!(t.holders(), 0);
        assert_eq!(t.clear_static(), Transition::Unlocked);
    }

    #[test]
    fn full_table_refuses_and_changes_nothing() {
        let mut t = Table::default();
        for i in 0..MAX_HOLDERS as u64 {
            t.lock(Owner::File(i), 1, L, 1, 0).unwrap();
        }
        let before = t.clone();
        assert_eq!(t.lock(Owner::File(999), 1, L, 1, 0), Err(Error::Full));
        assert_eq!(t, before);
        // An existing holder may still update its hold.
        assert!(t.lock(Owner::File(0), 2, L, 1, 0).is_ok());
    }

    #[test]
    fn clear_counts_everything() {
        let mut t = Table::new(true);
        t.lock(Owner::Detached, 1, L, 5, 0).unwrap();
        assert_eq!(t.clear(), 2);
        assert!(!t.locked());
    }

    #[test]
    fn huge_lease_saturates() {
        let mut t = Table::default();
        t.lock(Owner::Detached, 1, L, u32::MAX, u64::MAX - 1)
            .unwrap();
        assert_eq!(t.earliest_expiry(), Some(u64::MAX));
    }
}
