// SPDX-License-Identifier: GPL-2.0

//! The append-only audit log: one JSON object per line, synced to disk
//! before the decision it records takes effect elsewhere.

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The audit log and its live watchers.
pub struct Audit {
    file: Mutex<File>,
    watchers: Mutex<Vec<Sender<Value>>>,
}

impl Audit {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> Result<Audit> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        Ok(Audit {
            file: Mutex::new(file),
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// Records `event` for `vm` with `fields`; returns the record.
    pub fn record(&self, vm: &str, event: &str, fields: Value) -> Value {
        let mut rec = Map::new();
        rec.insert("ts_ms".into(), json!(now_ms()));
        rec.insert("vm".into(), json!(vm));
        rec.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            rec.extend(f);
        }
        let rec = Value::Object(rec);
        {
            let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
            // A failing disk must not take the agent down; it is reported.
            if writeln!(f, "{rec}").and_then(|()| f.sync_data()).is_err() {
                eprintln!("miglockd: cannot write the audit log");
            }
        }
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| w.send(rec.clone()).is_ok());
        rec
    }

    /// Sends every later record to `w`.
    pub fn watch(&self, w: Sender<Value>) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }
}
