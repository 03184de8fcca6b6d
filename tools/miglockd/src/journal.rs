// SPDX-License-Identifier: GPL-2.0

//! The agent's state on disk: a snapshot (`state.json`, written atomically
//! by `store.rs`) and a journal beside it (`state.json.journal`).
//!
//! Every change appends what it changed (`change.rs`: a change record, not
//! the whole ledger, so a line stays small) as one line, in one `write(2)`,
//! before the decision is answered, so an agent kill loses no lock (the
//! committer puts it on disk in batches, `commit.rs`). Rewriting every
//! VM's state per decision made every decision wait for the disk. Loading
//! replays the journal over the snapshot (a torn last line is cut; lines
//! of an older agent, each a whole ledger, are read too). When the journal grows, it is moved
//! aside, the current state becomes the snapshot, and the old journal goes.

use crate::change::Change;
use crate::commit::Committer;
use crate::ledger::Ledger;
use crate::store::{self, Ledgers};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Lines after which the journal is folded into the snapshot.
pub const COMPACT_AFTER: usize = 4096;

#[derive(Deserialize)]
struct Entry {
    vm: String,
    #[serde(default)]
    change: Option<Change>,
    /// An older agent's line: the VM's whole ledger.
    #[serde(default)]
    ledger: Option<Ledger>,
}

#[derive(Serialize)]
struct Line<'a> {
    vm: &'a str,
    change: &'a Change,
}

/// The journal of ledger changes.
pub struct Journal {
    /// What replaying it on open found wrong (torn or skipped lines), for
    /// the audit log.
    pub problems: Vec<String>,
    snapshot: PathBuf,
    path: PathBuf,
    file: Mutex<File>,
    lines: AtomicUsize,
    commit: Arc<Committer>,
}

fn journal_path(snapshot: &Path, suffix: &str) -> PathBuf {
    let mut p = snapshot.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Applies the whole lines of `path` (if it exists) to `ledgers`; a torn
/// last line (a kill mid-write) is cut off the file. A whole line that
/// does not parse (a disk error, a hand edit) is skipped, kept in
/// `<journal>.rejected` and returned as a problem: one bad record must not
/// keep the agent, and every VM's lock state with it, from starting.
fn replay(path: &Path, ledgers: &mut Ledgers) -> Result<Vec<String>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut problems = Vec::new();
    let mut rejected = Vec::new();
    let mut whole = 0u64;
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            if n > 0 {
                problems.push(format!(
                    "{}: a torn last line ({n} bytes) cut",
                    path.display()
                ));
            }
            break;
        }
        whole += n as u64;
        let e: Entry = match serde_json::from_slice(&line) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "{}: line {number} does not parse ({e}): skipped, kept in .rejected",
                    path.display()
                ));
                rejected.extend_from_slice(&line);
                continue;
            }
        };
        match (e.change, e.ledger) {
            (Some(c), _) => c.apply(ledgers.entry(e.vm).or_default()),
            (None, Some(l)) => {
                ledgers.insert(e.vm, l);
            }
            (None, None) => {}
        }
    }
    if !rejected.is_empty() {
        let mut keep = OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal_path(path, ".rejected"))?;
        keep.write_all(&rejected)?;
        keep.sync_data()?;
    }
    let f = OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() != whole {
        f.set_len(whole)?;
        f.sync_data()?;
    }
    Ok(problems)
}

impl Journal {
    /// Loads the state at `snapshot` (and its journals), folds it into a
    /// new snapshot and starts an empty journal.
    pub fn open(snapshot: &Path, commit: Arc<Committer>) -> Result<(Journal, Ledgers)> {
        let mut ledgers = store::load(snapshot)?;
        let path = journal_path(snapshot, ".journal");
        let old = journal_path(snapshot, ".journal.old");
        // A compaction cut short left the old journal: it is older.
        let mut problems = replay(&old, &mut ledgers)?;
        problems.extend(replay(&path, &mut ledgers)?);
        ledgers.values_mut().for_each(Ledger::normalize);
        store::save(snapshot, &ledgers)?;
        let _ = fs::remove_file(&old);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.sync_all()?;
        Ok((
            Journal {
                problems,
                snapshot: snapshot.to_path_buf(),
                path,
                file: Mutex::new(file),
                lines: AtomicUsize::new(0),
                commit,
            },
            ledgers,
        ))
    }

    /// Records a change of `vm`'s ledger. Called with that ledger locked,
    /// so lines of one VM are in the order of its changes. An error means
    /// the change is not recorded (and logged as such).
    pub fn append(&self, vm: &str, change: &Change) -> std::io::Result<()> {
        let mut line = serde_json::to_string(&Line { vm, change })?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let written = f.write_all(line.as_bytes()).and_then(|()| {
            if self.commit.inline() {
                f.sync_data()
            } else {
                Ok(())
            }
        });
        drop(f);
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), vm, "cannot write the state journal: {e}");
            return Err(e);
        }
        self.lines.fetch_add(1, Ordering::Relaxed);
        self.commit.wrote();
        Ok(())
    }

    /// Sends every later line to a full disk (`/dev/full`), for tests of
    /// what the agent does when it cannot record.
    #[cfg(test)]
    pub fn fill_disk(&self) {
        *self.file.lock().unwrap() = OpenOptions::new().write(true).open("/dev/full").unwrap();
    }

    /// Puts what was appended on disk.
    pub fn sync(&self) {
        if let Err(e) = crate::commit::sync_data(&self.file) {
            tracing::error!(path = %self.path.display(), "cannot sync the state journal: {e}");
        }
    }

    /// Whether the journal should be folded into the snapshot.
    pub fn long(&self) -> bool {
        self.lines.load(Ordering::Relaxed) >= COMPACT_AFTER
    }

    /// Folds the journal into the snapshot: the journal is moved aside (new
    /// lines go to a new one), `current` (taken after the move, so it holds
    /// everything the old journal does) becomes the snapshot, and the old
    /// journal goes.
    pub fn compact(&self, current: impl FnOnce() -> Ledgers) -> Result<()> {
        let old = journal_path(&self.snapshot, ".journal.old");
        {
            let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
            f.sync_data()?;
            fs::rename(&self.path, &old)?;
            *f = File::create(&self.path)?;
            self.lines.store(0, Ordering::Relaxed);
        }
        store::save(&self.snapshot, &current())?;
        fs::remove_file(&old)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Policy;
    use std::time::Duration;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("miglockd-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn committer() -> Arc<Committer> {
        Arc::new(Committer::new(Duration::from_millis(5)))
    }

    #[test]
    fn changes_survive_a_kill_and_a_torn_line_is_cut() {
        let d = dir("kill");
        let snap = d.join("state.json");
        let (j, l) = Journal::open(&snap, committer()).unwrap();
        assert!(l.is_empty());
        let mut a = Ledger::default();
        let before = a.clone();
        a.lock(1, 1, "a", 1000, 5);
        j.append("vm1", &Change::between(&before, &a)).unwrap();
        let before = a.clone();
        a.lock(2, 1, "b", 1000, 6);
        a.unlock(1, 7);
        j.append("vm1", &Change::between(&before, &a)).unwrap();
        j.append("vm2", &Change::default()).unwrap();
        // Killed: nothing synced, nothing folded; a last write torn.
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(journal_path(&snap, ".journal"))
            .unwrap();
        f.write_all(b"{\"vm\":\"vm1\",\"led").unwrap();
        let (_, back) = Journal::open(&snap, committer()).unwrap();
        assert_eq!(back["vm1"], a);
        assert!(back.contains_key("vm2"));
        // Folded into the snapshot on open: the journal starts empty.
        assert_eq!(store::load(&snap).unwrap()["vm1"], a);
        assert_eq!(
            fs::metadata(journal_path(&snap, ".journal")).unwrap().len(),
            0
        );
        fs::remove_dir_all(d).unwrap();
    }

    /// A line that does not parse in the middle is skipped, kept aside and
    /// reported; the lines around it count and the agent starts (it once
    /// refused to).
    #[test]
    fn a_corrupt_line_is_skipped_and_reported() {
        let d = dir("corrupt");
        let snap = d.join("state.json");
        let mut a = Ledger::default();
        a.lock(1, 1, "a", 1000, 5);
        let first = Change::between(&Ledger::default(), &a);
        let mut b = a.clone();
        b.lock(2, 1, "b", 1000, 6);
        let second = Change::between(&a, &b);
        let line = |c: &Change| format!("{}\n", serde_json::json!({"vm": "vm1", "change": c}));
        let mut text = line(&first).into_bytes();
        text.extend_from_slice(b"{\"vm\":\"vm1\",\"chan\xff\xfe garbage\n");
        text.extend_from_slice(line(&second).as_bytes());
        text.extend_from_slice(b"{\"vm\":\"vm1\",\"cha");
        fs::write(journal_path(&snap, ".journal"), &text).unwrap();
        let (j, back) = Journal::open(&snap, committer()).unwrap();
        assert_eq!(back["vm1"], b);
        assert_eq!(j.problems.len(), 2, "{:?}", j.problems);
        assert!(
            j.problems[0].contains("line 2 does not parse"),
            "{:?}",
            j.problems
        );
        assert!(j.problems[1].contains("torn"), "{:?}", j.problems);
        let kept = fs::read(journal_path(&snap, ".journal.rejected")).unwrap();
        assert!(kept.ends_with(b"garbage\n"));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn compaction_keeps_lines_written_meanwhile() {
        let d = dir("compact");
        let snap = d.join("state.json");
        let (j, _) = Journal::open(&snap, committer()).unwrap();
        let mut a = Ledger::default();
        a.lock(1, 1, "a", 1000, 5);
        j.append("vm1", &Change::between(&Ledger::default(), &a))
            .unwrap();
        let mut b = a.clone();
        b.lock(2, 1, "b", 1000, 6);
        // A change lands while the snapshot is being taken: it is in the
        // new journal, and so in the state after a reload.
        j.compact(|| {
            j.append("vm1", &Change::between(&a, &b)).unwrap();
            Ledgers::from([("vm1".to_string(), a.clone())])
        })
        .unwrap();
        assert!(!journal_path(&snap, ".journal.old").exists());
        drop(j);
        let (_, back) = Journal::open(&snap, committer()).unwrap();
        assert_eq!(back["vm1"], b);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_interrupted_compaction_loses_nothing() {
        let d = dir("interrupted");
        let snap = d.join("state.json");
        let mut a = Ledger::new(Policy::default());
        a.lock(7, 1, "x", 1000, 5);
        store::save(&snap, &Ledgers::new()).unwrap();
        // The old journal was moved aside, the snapshot never written.
        fs::write(
            journal_path(&snap, ".journal.old"),
            format!("{}\n", serde_json::json!({"vm": "vm1", "ledger": a})),
        )
        .unwrap();
        let (_, back) = Journal::open(&snap, committer()).unwrap();
        assert_eq!(back["vm1"], a);
        fs::remove_dir_all(d).unwrap();
    }
}
