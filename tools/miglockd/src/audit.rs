// SPDX-License-Identifier: GPL-2.0

//! The append-only audit log: one JSON object per line, synced to disk
//! before the decision it records takes effect elsewhere.
//!
//! Each record is one `write(2)`, so a kill leaves at most one torn line at
//! the end (a record whose decision nobody saw: the agent answers after the
//! record is on disk). A starting agent cuts such a tail off and says so.
//! On SIGHUP the agent reopens the log (logrotate moved it); on SIGTERM it
//! writes its last record and never releases the log again, so no record
//! can be cut in half by the exit.

use crate::commit::Committer;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (the records' time; leases
/// run on `clock::now_ms`).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records a `miglockctl watch` client may fall behind by before it is
/// dropped: a stalled client must not grow the agent's memory.
pub const WATCH_QUEUE: usize = 1024;

/// The audit log and its live watchers.
pub struct Audit {
    path: PathBuf,
    file: Mutex<File>,
    watchers: Mutex<Vec<SyncSender<Value>>>,
    commit: Arc<Committer>,
}

/// Cuts a torn last line (no newline) off `f`; returns what it cut.
fn repair(f: &mut File) -> std::io::Result<Vec<u8>> {
    let len = f.metadata()?.len();
    // A record is far shorter than this: the last newline is in it.
    let tail_len = len.min(1 << 20);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    Read::by_ref(f).take(tail_len).read_to_end(&mut tail)?;
    if tail.last().is_none_or(|&b| b == b'\n') {
        return Ok(Vec::new());
    }
    let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn = tail.split_off(keep);
    f.set_len(len - torn.len() as u64)?;
    f.sync_data()?;
    Ok(torn)
}

/// Opens `path` for appending, creating it readable by its owner and group
/// only (it names VMs, holders and labels).
fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("opening audit log {}", path.display()))
}

/// One record: time, VM, event and `fields`.
fn line(vm: &str, event: &str, fields: Value) -> Value {
    let mut rec = Map::new();
    rec.insert("ts_ms".into(), json!(wall_ms()));
    // The lease clock too: a record's `until_ms` is on it.
    rec.insert("mono_ms".into(), json!(crate::clock::now_ms()));
    rec.insert("vm".into(), json!(vm));
    rec.insert("event".into(), json!(event));
    if let Value::Object(f) = fields {
        rec.extend(f);
    }
    Value::Object(rec)
}

/// Appends `rec` to `f` in one write(2) (the kernel has it: a kill loses
/// nothing), synced at once when `sync`. A failing disk must not take the
/// agent down: it is logged, and the caller decides (a decision that is
/// not recorded is refused).
fn write(f: &mut File, rec: &Value, sync: bool) -> std::io::Result<()> {
    let mut line = rec.to_string();
    line.push('\n');
    let r = f
        .write_all(line.as_bytes())
        .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
    if let Err(e) = &r {
        tracing::error!(error = %e, event = %rec["event"], "cannot write the audit log");
    }
    r
}

impl Audit {
    /// Opens (creating) the log for appending, cutting off a record a kill
    /// tore (and recording that it did).
    pub fn open(path: &Path, commit: Arc<Committer>) -> Result<Audit> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open(path)?;
        let torn = repair(&mut file).with_context(|| format!("repairing {}", path.display()))?;
        let audit = Audit {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            watchers: Mutex::new(Vec::new()),
            commit,
        };
        if !torn.is_empty() {
            let start: String = String::from_utf8_lossy(&torn).chars().take(120).collect();
            audit.record(
                "-",
                "audit-repaired",
                json!({"dropped_bytes": torn.len(), "torn_record_began": start}),
            );
        }
        Ok(audit)
    }

    /// Opens the log's path again, a new file if logrotate moved the old
    /// one away. Under the log's lock, so every later record goes to the
    /// new file and none is split between the two.
    pub fn reopen(&self) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *f = open(&self.path)?;
        Ok(())
    }

    /// Writes `event` as the last record and keeps the log locked for good:
    /// a thread that wants to record after it waits until the process has
    /// exited, so its decision is neither torn nor answered unrecorded.
    pub fn close(&self, event: &str, fields: Value) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write(&mut f, &line("-", event, fields), true);
        std::mem::forget(f);
    }

    /// Puts every record written so far on disk (the committer's call).
    pub fn sync(&self) {
        if let Err(e) = crate::commit::sync_data(&self.file) {
            tracing::error!(error = %e, "cannot sync the audit log");
        }
    }

    /// Records `event` for `vm` with `fields`; returns the record. A write
    /// that fails is logged: see [`Audit::try_record`] for decisions.
    pub fn record(&self, vm: &str, event: &str, fields: Value) -> Value {
        let (rec, _) = self.write(vm, event, fields);
        rec
    }

    /// [`Audit::record`], failing if the record is not written: a decision
    /// must not take effect unrecorded.
    pub fn try_record(&self, vm: &str, event: &str, fields: Value) -> std::io::Result<Value> {
        let (rec, written) = self.write(vm, event, fields);
        written.map(|()| rec)
    }

    fn write(&self, vm: &str, event: &str, fields: Value) -> (Value, std::io::Result<()>) {
        let rec = line(vm, event, fields);
        let written = write(
            &mut self.file.lock().unwrap_or_else(|e| e.into_inner()),
            &rec,
            self.commit.inline(),
        );
        if written.is_err() {
            return (rec, written);
        }
        self.commit.wrote();
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| match w.try_send(rec.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("a watch client fell {WATCH_QUEUE} records behind: dropped");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        (rec, Ok(()))
    }

    /// Every later record, until the reader falls [`WATCH_QUEUE`] behind.
    pub fn watch(&self) -> Receiver<Value> {
        let (tx, rx) = std::sync::mpsc::sync_channel(WATCH_QUEUE);
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Live watchers.
    pub fn watchers(&self) -> usize {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_record_is_cut_and_reported() {
        let dir = std::env::temp_dir().join(format!("miglockd-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{\"event\":\"lock\",\"hold\":1}\n{\"event\":\"unl").unwrap();
        let a = Audit::open(&path, Arc::new(Committer::new(std::time::Duration::ZERO))).unwrap();
        a.record("vm", "after", json!({}));
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is a whole record"))
            .collect();
        assert_eq!(recs.len(), 3, "{text}");
        assert_eq!(recs[0]["event"], "lock");
        assert_eq!(recs[1]["event"], "audit-repaired");
        assert_eq!(recs[1]["dropped_bytes"], 13);
        assert_eq!(recs[2]["event"], "after");
        // A whole log is left as it is.
        drop(a);
        let before = std::fs::read(&path).unwrap();
        drop(Audit::open(&path, Arc::new(Committer::new(std::time::Duration::ZERO))).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A watcher that stops reading is dropped once [`WATCH_QUEUE`] behind
    /// (its queue once grew without limit): it gets what was queued, then
    /// the end.
    #[test]
    fn a_stalled_watcher_is_dropped() {
        let dir = std::env::temp_dir().join(format!("miglockd-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Audit::open(
            &dir.join("audit.jsonl"),
            Arc::new(Committer::new(std::time::Duration::from_secs(60))),
        )
        .unwrap();
        let stalled = a.watch();
        for i in 0..WATCH_QUEUE + 100 {
            a.record("vm", "tick", json!({ "i": i }));
        }
        assert_eq!(a.watchers(), 0);
        assert_eq!(stalled.iter().count(), WATCH_QUEUE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// After logrotate moved the log away, a reopen sends later records to
    /// a new file at the same path, created 0640; the moved file keeps
    /// what it had.
    #[test]
    fn reopen_follows_a_rotation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("miglockd-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let a = Audit::open(&path, Arc::new(Committer::new(std::time::Duration::ZERO))).unwrap();
        a.record("vm", "before", json!({}));
        std::fs::rename(&path, dir.join("audit.jsonl.1")).unwrap();
        a.reopen().unwrap();
        a.record("vm", "after", json!({}));
        let old = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains("\"before\"") && !old.contains("\"after\""),
            "{old}"
        );
        assert!(
            new.contains("\"after\"") && !new.contains("\"before\""),
            "{new}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
