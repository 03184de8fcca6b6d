// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer`: samples which guest-physical frames are accessed (idle
//! page tracking) and dirtied (soft-dirty bits), keeps a bounded model of hot
//! frames, sends ranked hint ranges to `/dev/mld`, records `.mltrace` files
//! and, on post-copy, touches the hot pages early. `Documentation/tracer.rst`
//! describes it.
//!
//! Every procfs/sysfs path goes through [`Roots`] so tests can point the
//! sampler at a fake tree.

use std::path::{Path, PathBuf};

pub mod bench;
pub mod bitset;
pub mod cli;
pub mod cpu;
pub mod eval;
pub mod hints;
pub mod idle;
pub mod lru;
pub mod model;
pub mod pagemap;
pub mod prefetch;
pub mod procs;
pub mod rmap;
pub mod run;
pub mod sampler;
pub mod show;
pub mod sysmem;

/// Where procfs and sysfs are mounted.
#[derive(Clone, Debug)]
pub struct Roots {
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Normally `/sys`.
    pub sysfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
        }
    }
}

impl Roots {
    /// A file under the procfs root.
    pub fn proc(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.procfs.join(rel)
    }

    /// The idle page tracking bitmap.
    pub fn idle_bitmap(&self) -> PathBuf {
        self.sysfs.join("kernel/mm/page_idle/bitmap")
    }
}

/// The page size of the running kernel.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}
