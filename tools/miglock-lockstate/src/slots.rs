// SPDX-License-Identifier: GPL-2.0

//! Requests waiting for the host's answer, one slot each.
//!
//! A request claims a slot before it is sent and gives it back when its
//! caller is done, answered or not. The receive side files an answer only
//! in the slot whose request it answers (by sequence number): an answer
//! can never overwrite another request's, and one that answers no waiting
//! request (late, duplicated, or for a request given up) is stale. With
//! every slot taken, [`Slots::claim`] fails and the caller waits for one:
//! the number of requests in flight is bounded by construction.

/// One slot.
#[derive(Clone, Copy, Debug)]
enum Slot<A> {
    /// Nobody's.
    Free,
    /// Claimed; waiting for the answer to this sequence number (0: not
    /// sent yet).
    Waiting(u32),
    /// Claimed and answered.
    Answered(A),
}

/// A claimed slot. Not `Copy`: [`Slots::release`] takes it back once.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket(usize);

/// `N` slots for answers of type `A`.
#[derive(Clone, Debug)]
pub struct Slots<A: Copy, const N: usize> {
    slots: [Slot<A>; N],
}

impl<A: Copy, const N: usize> Default for Slots<A, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Copy, const N: usize> Slots<A, N> {
    /// All slots free.
    pub const fn new() -> Self {
        Slots {
            slots: [Slot::Free; N],
        }
    }

    /// Claims a free slot; `None` while all `N` are taken.
    pub fn claim(&mut self) -> Option<Ticket> {
        let i = self.slots.iter().position(|s| matches!(s, Slot::Free))?;
        self.slots[i] = Slot::Waiting(0);
        Some(Ticket(i))
    }

    /// Records that `t`'s request went out (again) as `seq`: from now on
    /// only an answer to `seq` is filed there. An answer already filed
    /// stays.
    pub fn sent(&mut self, t: &Ticket, seq: u32) {
        if let Some(s @ Slot::Waiting(_)) = self.slots.get_mut(t.0) {
            *s = Slot::Waiting(seq);
        }
    }

    /// Files `answer` for the request sent as `reply_to`; false if no
    /// waiting request was sent as that (a stale answer, dropped).
    pub fn answer(&mut self, reply_to: u32, answer: A) -> bool {
        if reply_to == 0 {
            return false;
        }
        match self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Slot::Waiting(seq) if *seq == reply_to))
        {
            Some(s) => {
                *s = Slot::Answered(answer);
                true
            }
            None => false,
        }
    }

    /// `t`'s answer, if it came; the slot then waits for nothing.
    pub fn take(&mut self, t: &Ticket) -> Option<A> {
        match self.slots.get(t.0).copied() {
            Some(Slot::Answered(a)) => {
                self.slots[t.0] = Slot::Waiting(0);
                Some(a)
            }
            _ => None,
        }
    }

    /// Gives `t`'s slot back; an answer that comes later is stale.
    pub fn release(&mut self, t: Ticket) {
        if let Some(s) = self.slots.get_mut(t.0) {
            *s = Slot::Free;
        }
    }

    /// Slots claimed now.
    pub fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !matches!(s, Slot::Free))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_only_its_request() {
        let mut s: Slots<u32, 4> = Slots::new();
        let a = s.claim().unwrap();
        let b = s.claim().unwrap();
        s.sent(&a, 10);
        s.sent(&b, 11);
        assert!(s.answer(11, 111));
        assert_eq!(s.take(&a), None);
        assert_eq!(s.take(&b), Some(111));
        assert_eq!(s.take(&b), None, "an answer is taken once");
        assert!(s.answer(10, 110));
        assert_eq!(s.take(&a), Some(110));
        assert!(!s.answer(10, 1), "a second answer to 10 is stale");
    }

    #[test]
    fn claim_fails_when_all_are_taken_and_release_frees() {
        let mut s: Slots<u8, 2> = Slots::new();
        let a = s.claim().unwrap();
        let _b = s.claim().unwrap();
        assert_eq!(s.claim(), None);
        assert_eq!(s.in_use(), 2);
        s.release(a);
        assert_eq!(s.in_use(), 1);
        assert!(s.claim().is_some());
    }

    #[test]
    fn a_retry_forgets_the_old_sequence_number() {
        let mut s: Slots<u8, 2> = Slots::new();
        let a = s.claim().unwrap();
        s.sent(&a, 5);
        s.sent(&a, 6);
        assert!(!s.answer(5, 1));
        assert!(s.answer(6, 2));
        // An answer filed before a retry goes out is kept.
        s.sent(&a, 7);
        assert_eq!(s.take(&a), Some(2));
    }

    #[test]
    fn released_and_unsent_slots_take_no_answer() {
        let mut s: Slots<u8, 2> = Slots::new();
        let a = s.claim().unwrap();
        assert!(!s.answer(0, 1), "0 answers nothing");
        s.sent(&a, 3);
        s.release(a);
        assert!(!s.answer(3, 1));
        assert_eq!(s.in_use(), 0);
    }
}
