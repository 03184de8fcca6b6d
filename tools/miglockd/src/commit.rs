// SPDX-License-Identifier: GPL-2.0

//! Group commit for the agent's files (the audit log and the state
//! journal).
//!
//! Every record is handed to the kernel at once, in one `write(2)`, before
//! anyone hears of the decision it records: an agent that is killed loses
//! none of it. What a write still owes is the disk: `fdatasync` costs a few
//! milliseconds, so paying it per decision made every guest of the host
//! wait for the disk in turn. Instead the committer syncs whatever was
//! written, at most `delay` after the first write of a batch; a power loss
//! can take back at most that much. With a delay of zero every write is
//! synced before it returns, as before.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// `[storage]` in the configuration.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Longest time a written record waits for `fdatasync`, ms; 0: sync
    /// each record before the decision is answered.
    pub commit_ms: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage { commit_ms: 10 }
    }
}

/// Says when there is something to sync, and syncs it in batches.
pub struct Committer {
    dirty: Mutex<bool>,
    wrote: Condvar,
    delay: Duration,
}

impl Committer {
    /// A committer that syncs at most `delay` after a write.
    pub fn new(delay: Duration) -> Committer {
        Committer {
            dirty: Mutex::new(false),
            wrote: Condvar::new(),
            delay,
        }
    }

    /// Whether writes must sync themselves (no batching).
    pub fn inline(&self) -> bool {
        self.delay.is_zero()
    }

    /// Something was written that is not on disk yet.
    pub fn wrote(&self) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if !*d {
            *d = true;
            self.wrote.notify_one();
        }
    }

    /// The committer's thread: waits for a write, lets the batch gather for
    /// `delay`, then runs `sync` (which syncs everything written so far).
    pub fn run(&self, sync: impl Fn()) {
        loop {
            {
                let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
                while !*d {
                    d = self.wrote.wait(d).unwrap_or_else(|e| e.into_inner());
                }
            }
            // The batch window: the bound on how long a record waits for
            // the disk, not a wait for some event.
            std::thread::sleep(self.delay);
            // Cleared before syncing: a write during the sync is the next
            // batch's, and is synced then.
            *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = false;
            sync();
        }
    }
}

/// Puts what was written to `file` on disk. The sync runs on a clone of
/// the descriptor, outside the lock, so writers go on meanwhile.
pub fn sync_data(file: &Mutex<std::fs::File>) -> std::io::Result<()> {
    let f = file.lock().unwrap_or_else(|e| e.into_inner()).try_clone()?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_burst_of_writes_costs_one_sync_within_the_delay() {
        let c = Arc::new(Committer::new(Duration::from_millis(20)));
        let syncs = Arc::new(AtomicUsize::new(0));
        let (c2, s2) = (c.clone(), syncs.clone());
        std::thread::spawn(move || {
            c2.run(|| {
                s2.fetch_add(1, Ordering::SeqCst);
            })
        });
        let t = Instant::now();
        for _ in 0..1000 {
            c.wrote();
        }
        while syncs.load(Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "no sync");
            std::thread::yield_now();
        }
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        assert!(!c.inline());
        assert!(Committer::new(Duration::ZERO).inline());
    }
}
