// SPDX-License-Identifier: GPL-2.0

//! Which processes to scan for soft-dirty pages.

use crate::Roots;
use anyhow::{Context, Result};
use std::fs;

/// Numeric entries of the procfs root, sorted, without `exclude`.
pub fn list_pids(roots: &Roots, exclude: u32) -> Result<Vec<u32>> {
    let dir = &roots.procfs;
    let mut pids: Vec<u32> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| p != exclude && p != 0)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_entries_only() {
        let d = tempfile::tempdir().unwrap();
        for n in ["12", "3", "self", "iomem", "99", "0x1"] {
            fs::create_dir(d.path().join(n)).unwrap();
        }
        let roots = Roots {
            procfs: d.path().into(),
            sysfs: d.path().into(),
        };
        assert_eq!(list_pids(&roots, 99).unwrap(), vec![3, 12]);
    }
}
