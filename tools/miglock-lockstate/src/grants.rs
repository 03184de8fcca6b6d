// SPDX-License-Identifier: GPL-2.0

//! What the host holds for the guest, as far as the guest can tell, and what
//! it must hear next, in order.
//!
//! A hold the host granted stays on the host until the guest says it ended
//! or its lease runs out there. Two things follow:
//!
//! - **Cover**: a new hold whose lease ends no later than that of a granted
//!   hold its owner still holds changes nothing the host enforces (the VM is
//!   locked all along), so the guest may take it at once and tell the host
//!   afterwards (a `Held` frame), if the host said it accepts that.
//! - **Linger**: when an owner lets go of a granted hold, the guest may keep
//!   it on the host a little longer; if the same owner locks again for the
//!   same reason and label meanwhile, it takes the hold back without asking.
//!   A burst of lock/unlock pairs costs the host one decision.
//!
//! Ends are in the guest's clock and count from before the request left, so
//! they are never later than the host's. A lease taken under a cover or back
//! from a linger is shortened to what is left of the grant, and only taken if
//! at least half the lease asked for is left (else the host is asked).
//!
//! [`Outbox`] keeps the frames the guest owes the host (`Held` frames and the
//! releases of lingering grants) in the order they were decided; every other
//! frame waits until they are out, so the host never hears of an unlock
//! before the hold it ends, nor of a covered hold after its cover ended.

use super::table::LABEL_LEN;

const NSEC_PER_MSEC: u64 = 1_000_000;

/// Most grants remembered at once. A grant beyond them is not remembered:
/// it covers nothing and is released at once, as without this module. Kept
/// small: the state lives in one allocation built on the kernel stack.
pub const MAX_GRANTS: usize = 16;

/// One hold the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The hold id the host knows it by.
    pub hold: u32,
    /// Its reason code.
    pub reason: u32,
    /// Its label.
    pub label: [u8; LABEL_LEN],
    /// The host keeps it at least until then (guest clock, ns).
    pub until: u64,
    /// Its owner let go; the host is told at this time (ns) unless the owner
    /// takes it back first.
    pub lingers_until: Option<u64>,
}

/// The holds the host has for this guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    slots: [Option<Grant>; MAX_GRANTS],
}

impl Default for Grants {
    fn default() -> Self {
        Self::new()
    }
}

/// The part of a grant left at `now`, as a lease in ms, if it is at least
/// half of `lease_ms`.
fn left_for(until: u64, lease_ms: u32, now: u64) -> Option<u32> {
    let left_ms = until.saturating_sub(now) / NSEC_PER_MSEC;
    let lease = u64::from(lease_ms);
    (lease > 0 && left_ms.saturating_mul(2) >= lease).then(|| left_ms.min(lease) as u32)
}

impl Grants {
    /// None.
    pub const fn new() -> Self {
        Grants {
            slots: [None; MAX_GRANTS],
        }
    }

    fn find(&self, hold: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|g| g.hold == hold))
    }

    /// The host granted `hold` (or was told of it under a cover) until
    /// `until`; its owner holds it. False if there is no room to remember it
    /// (it then covers nothing and does not linger).
    pub fn granted(&mut self, hold: u32, reason: u32, label: [u8; LABEL_LEN], until: u64) -> bool {
        let Some(i) = self
            .find(hold)
            .or_else(|| self.slots.iter().position(Option::is_none))
        else {
            return false;
        };
        self.slots[i] = Some(Grant {
            hold,
            reason,
            label,
            until,
            lingers_until: None,
        });
        true
    }

    /// The grant of `hold`.
    pub fn get(&self, hold: u32) -> Option<&Grant> {
        self.find(hold).and_then(|i| self.slots[i].as_ref())
    }

    /// The host no longer has `hold` (or the guest no longer trusts it to).
    pub fn forget(&mut self, hold: u32) {
        if let Some(i) = self.find(hold) {
            self.slots[i] = None;
        }
    }

    /// Forgets every grant.
    pub fn clear(&mut self) {
        self.slots = [None; MAX_GRANTS];
    }

    /// Forgets the grants whose end passed: the host ended them itself.
    pub fn expire(&mut self, now: u64) {
        for s in self.slots.iter_mut() {
            if s.is_some_and(|g| g.until <= now) {
                *s = None;
            }
        }
    }

    /// The lease (ms) a new hold asking for `lease_ms` may take at `now`
    /// without asking: what is left of the latest-ending grant whose owner
    /// still holds it, if at least half the lease asked for.
    pub fn cover(&self, lease_ms: u32, now: u64) -> Option<u32> {
        let until = self
            .slots
            .iter()
            .flatten()
            .filter(|g| g.lingers_until.is_none())
            .map(|g| g.until)
            .max()?;
        left_for(until, lease_ms, now)
    }

    /// `hold`'s owner let go at `now`: the grant lingers until `now +
    /// linger_ns` (or its end, if sooner) and that time is returned; `None`
    /// (and the grant is forgotten) if it would not outlive `now`, or there
    /// is no grant: the host must be told at once.
    pub fn let_go(&mut self, hold: u32, now: u64, linger_ns: u64) -> Option<u64> {
        let i = self.find(hold)?;
        let g = self.slots[i].as_mut()?;
        let due = now.saturating_add(linger_ns).min(g.until);
        if linger_ns == 0 || due <= now {
            self.slots[i] = None;
            return None;
        }
        g.lingers_until = Some(due);
        Some(due)
    }

    /// `hold`'s owner locks again: if its grant lingers with the same reason
    /// and label and enough of it is left (see [`Grants::cover`]), the owner
    /// holds it again and the lease it gets is returned. A lingering grant
    /// that does not fit is forgotten: the request about to be sent
    /// supersedes it on the host (the caller then owes the host an unlock if
    /// that request fails).
    pub fn take_back(
        &mut self,
        hold: u32,
        reason: u32,
        label: &[u8; LABEL_LEN],
        lease_ms: u32,
        now: u64,
    ) -> TakeBack {
        let Some(i) = self.find(hold) else {
            return TakeBack::Nothing;
        };
        let Some(g) = self.slots[i].as_mut() else {
            return TakeBack::Nothing;
        };
        if g.lingers_until.is_none() {
            return TakeBack::Nothing;
        }
        if g.reason == reason && g.label == *label {
            if let Some(lease) = left_for(g.until, lease_ms, now) {
                g.lingers_until = None;
                return TakeBack::Taken(lease);
            }
        }
        self.slots[i] = None;
        TakeBack::Superseded
    }

    /// How many grants linger.
    pub fn lingering(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|g| g.lingers_until.is_some())
            .count()
    }

    /// The earliest time a lingering grant is due.
    pub fn next_due(&self) -> Option<u64> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|g| g.lingers_until)
            .min()
    }

    /// Hands the hold id of each lingering grant due at `now` (each
    /// lingering one with `all`) to `due`, which arranges to tell the host,
    /// and forgets it if `due` returns true.
    pub fn take_due(&mut self, now: u64, all: bool, mut due: impl FnMut(u32) -> bool) {
        for s in self.slots.iter_mut() {
            if let Some(g) = s {
                if g.lingers_until.is_some_and(|t| all || t <= now) && due(g.hold) {
                    *s = None;
                }
            }
        }
    }
}

/// What [`Grants::take_back`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeBack {
    /// No lingering grant of that hold.
    Nothing,
    /// Taken back, with this lease (ms).
    Taken(u32),
    /// A lingering grant did not fit the request and is forgotten.
    Superseded,
}

/// A frame the guest owes the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owed {
    /// `Held`: a hold taken under a cover.
    Held {
        /// Hold id.
        hold: u32,
        /// Reason code.
        reason: u32,
        /// Lease taken (ms).
        lease_ms: u32,
        /// Label.
        label: [u8; LABEL_LEN],
    },
    /// `Unlock` of a grant whose linger ended.
    Release(u32),
}

/// Most owed frames at once: a `Held` per grant (a covered hold is taken
/// only once remembered as one) and a release per lingering grant.
pub const OUTBOX_LEN: usize = 2 * MAX_GRANTS;

/// Owed frames, oldest first.
#[derive(Clone, Debug)]
pub struct Outbox {
    ring: [Option<Owed>; OUTBOX_LEN],
    head: usize,
    len: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// Empty.
    pub const fn new() -> Self {
        Outbox {
            ring: [None; OUTBOX_LEN],
            head: 0,
            len: 0,
        }
    }

    /// Queues `o`; false (nothing queued) when full.
    pub fn push(&mut self, o: Owed) -> bool {
        if self.len == OUTBOX_LEN {
            return false;
        }
        self.ring[(self.head + self.len) % OUTBOX_LEN] = Some(o);
        self.len += 1;
        true
    }

    /// The oldest owed frame, removed.
    pub fn pop(&mut self) -> Option<Owed> {
        if self.len == 0 {
            return None;
        }
        let o = self.ring[self.head].take();
        self.head = (self.head + 1) % OUTBOX_LEN;
        self.len -= 1;
        o
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything owed (the host voided the guest's holds).
    pub fn clear(&mut self) {
        *self = Outbox::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NSEC_PER_MSEC;
    const A: [u8; LABEL_LEN] = [b'a'; LABEL_LEN];
    const B: [u8; LABEL_LEN] = [b'b'; LABEL_LEN];

    #[test]
    fn only_a_held_grant_covers_and_at_least_half_the_lease() {
        let mut g = Grants::new();
        assert_eq!(g.cover(100, 0), None);
        assert!(g.granted(1, 1, A, 1000 * MS));
        assert_eq!(g.cover(100, 0), Some(100));
        // What is left, once at least half is.
        assert_eq!(g.cover(1000, 500 * MS), Some(500));
        assert_eq!(g.cover(1000, 501 * MS), None);
        assert_eq!(g.cover(0, 0), None);
        // A lingering grant covers nothing.
        assert_eq!(g.let_go(1, 0, 20 * MS), Some(20 * MS));
        assert_eq!(g.cover(100, 0), None);
    }

    #[test]
    fn a_lingering_grant_is_taken_back_only_as_it_was() {
        let mut g = Grants::new();
        g.granted(7, 2, A, 10_000 * MS);
        assert_eq!(g.let_go(7, 0, 20 * MS), Some(20 * MS));
        assert_eq!(g.lingering(), 1);
        assert_eq!(g.take_back(7, 2, &A, 10_000, MS), TakeBack::Taken(9_999));
        assert_eq!(g.lingering(), 0);
        // Held again: nothing to take back.
        assert_eq!(g.take_back(7, 2, &A, 100, MS), TakeBack::Nothing);
        // Another label supersedes it.
        g.let_go(7, 2 * MS, 20 * MS);
        assert_eq!(g.take_back(7, 2, &B, 100, 3 * MS), TakeBack::Superseded);
        assert_eq!(g.get(7), None);
        // Too little left: superseded too.
        g.granted(8, 2, A, 100 * MS);
        g.let_go(8, 90 * MS, 20 * MS);
        assert_eq!(g.take_back(8, 2, &A, 100, 95 * MS), TakeBack::Superseded);
    }

    #[test]
    fn a_linger_ends_by_the_grant_and_is_due_in_order() {
        let mut g = Grants::new();
        g.granted(1, 1, A, 10 * MS);
        g.granted(2, 1, A, 1000 * MS);
        g.granted(3, 1, A, 1000 * MS);
        // Nothing left to linger for: told at once.
        assert_eq!(g.let_go(1, 10 * MS, 20 * MS), None);
        assert_eq!(g.get(1), None);
        assert_eq!(g.let_go(2, 0, 0), None);
        assert_eq!(g.let_go(3, 0, 20 * MS), Some(20 * MS));
        assert_eq!(g.let_go(9, 0, 20 * MS), None);
        assert_eq!(g.next_due(), Some(20 * MS));
        let mut due = [0u32; 2];
        let mut n = 0;
        g.take_due(19 * MS, false, |h| {
            due[n] = h;
            n += 1;
            true
        });
        assert_eq!(n, 0);
        // Not taken: still due.
        g.take_due(20 * MS, false, |_| false);
        assert_eq!(g.next_due(), Some(20 * MS));
        g.take_due(20 * MS, false, |h| {
            due[n] = h;
            n += 1;
            true
        });
        assert_eq!((n, due[0]), (1, 3));
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn grants_are_bounded_and_expire() {
        let mut g = Grants::new();
        for h in 0..MAX_GRANTS as u32 {
            assert!(g.granted(h, 1, A, 10 * MS));
        }
        assert!(!g.granted(1000, 1, A, 10 * MS));
        // Updating one that is there needs no room.
        assert!(g.granted(5, 1, B, 20 * MS));
        g.expire(10 * MS);
        assert_eq!(g.get(5).map(|x| x.label), Some(B));
        assert_eq!(g.get(4), None);
        g.clear();
        assert_eq!(g.get(5), None);
    }

    #[test]
    fn the_outbox_keeps_order_and_bounds() {
        let mut o = Outbox::new();
        assert!(o.is_empty());
        for h in 0..OUTBOX_LEN as u32 {
            assert!(o.push(Owed::Release(h)));
        }
        assert!(!o.push(Owed::Release(9999)));
        assert_eq!(o.pop(), Some(Owed::Release(0)));
        assert!(o.push(Owed::Release(9999)));
        for h in 1..OUTBOX_LEN as u32 {
            assert_eq!(o.pop(), Some(Owed::Release(h)));
        }
        assert_eq!(o.pop(), Some(Owed::Release(9999)));
        assert_eq!(o.pop(), None);
        o.push(Owed::Release(1));
        o.clear();
        assert!(o.is_empty());
    }
}
