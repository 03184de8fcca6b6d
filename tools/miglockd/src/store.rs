// SPDX-License-Identifier: GPL-2.0

//! The agent's state file: every VM's ledger, written atomically (temporary
//! file, fsync, rename, fsync of the directory) so a crash leaves either the
//! old or the new state, never a torn one.

use crate::ledger::Ledger;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Every VM's ledger by name.
pub type Ledgers = BTreeMap<String, Ledger>;

/// Loads the state; an absent file is an empty state.
pub fn load(path: &Path) -> Result<Ledgers> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledgers::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves the state atomically.
pub fn save(path: &Path, ledgers: &Ledgers) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(ledgers)?)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Policy;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("miglockd-store-{}", std::process::id()));
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_empty());
        let mut l = Ledgers::new();
        l.insert("vm1".into(), Ledger::new(Policy::default()));
        l.get_mut("vm1").unwrap().lock(3, 1, "x", 1000, 5);
        save(&path, &l).unwrap();
        assert_eq!(load(&path).unwrap(), l);
        fs::remove_dir_all(dir).unwrap();
    }
}
