// SPDX-License-Identifier: GPL-2.0

//! One sample: idle bitmap → accessed frames, pagemap → dirtied frames and
//! the reverse map, then the model update.

use crate::bitset::Bitset;
use crate::idle::IdleBitmap;
use crate::lru::{accessed_from_idle, KpageFlags};
use crate::model::Model;
use crate::pagemap::{clear_soft_dirty, Scanner, Skip};
use crate::procs::list_pids;
use crate::rmap::Rmap;
use crate::sysmem::{self, SysMem};
use crate::Roots;
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::Duration;

/// Aging bits that make a frame worth reverse-mapping: accessed in one of
/// the last two samples.
const RMAP_HOT: u8 = 0xc0;

/// Sampler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// procfs and sysfs.
    pub roots: Roots,
    /// Processes to scan for soft-dirty pages; empty: all but kernel
    /// threads and this one.
    pub pids: Vec<u32>,
    /// Samples between `/proc/kpageflags` reads.
    pub lru_refresh: u32,
    /// Most frames in the reverse map.
    pub rmap_cap: usize,
    /// Working set window in samples (1–8); with `idle_share` > 1, in
    /// rounds of each part.
    pub wss_samples: u8,
    /// Idle bitmap parts (≥ 1): each sample reads and re-marks one of them
    /// in turn (part = sample index % `idle_share`), see
    /// [`IdleBitmap::part_words`]. 1: the whole bitmap every sample.
    pub idle_share: u32,
}

/// What one sample found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Frames accessed (idle bit cleared, or soft-dirty).
    pub accessed: u64,
    /// Frames dirtied (soft-dirty).
    pub dirtied: u64,
    /// Frames accessed in the last `wss_samples` samples.
    pub wss: u64,
    /// Pages dirtied per second (moving average).
    pub dirty_rate: f64,
    /// Processes scanned.
    pub procs: u32,
    /// Processes skipped (exited, unreadable).
    pub gone: u32,
}

/// The sampling state.
pub struct Sampler {
    cfg: Config,
    mem: SysMem,
    bitmap: IdleBitmap,
    kpf: Option<KpageFlags>,
    scanner: Scanner,
    self_pid: u32,
    idle: Bitset,
    lru: Bitset,
    accessed: Bitset,
    dirtied: Bitset,
    /// With `idle_share` > 1: frames accessed (dirtied, or read accessed)
    /// since their part's last model round; empty otherwise.
    pending: Bitset,
    model: Model,
    rmap: Arc<Rmap>,
    samples: u64,
    warnings: Vec<String>,
}

impl Sampler {
    /// Finds RAM, opens the bitmap and kpageflags, allocates the model.
    pub fn open(cfg: Config, page_size: u64) -> Result<Self> {
        let mem = sysmem::detect(&cfg.roots, page_size)?;
        let bitmap = IdleBitmap::open(&cfg.roots.idle_bitmap(), &mem.ram)?;
        let n = mem.pfn_limit;
        let mut warnings = Vec::new();
        let mut lru = Bitset::new(n);
        let kpf = match KpageFlags::open(&cfg.roots.proc("kpageflags")) {
            Ok(k) => Some(k),
            Err(e) => {
                warnings.push(format!(
                    "{e:#}: counting every non-idle RAM frame as accessed (non-LRU frames included)"
                ));
                for r in &mem.ram {
                    lru.set_range(r.start, r.end);
                }
                None
            }
        };
        Ok(Sampler {
            model: Model::new(n, cfg.wss_samples),
            rmap: Arc::new(Rmap::new(cfg.rmap_cap)),
            scanner: Scanner::new(page_size),
            self_pid: std::process::id(),
            idle: Bitset::new(n),
            accessed: Bitset::new(n),
            dirtied: Bitset::new(n),
            pending: Bitset::new(if cfg.idle_share > 1 { n } else { 0 }),
            lru,
            cfg,
            mem,
            bitmap,
            kpf,
            samples: 0,
            warnings,
        })
    }

    /// The RAM layout.
    pub fn mem(&self) -> &SysMem {
        &self.mem
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Parts the idle bitmap is shared over (`Config::idle_share`, ≥ 1).
    pub fn idle_share(&self) -> u64 {
        u64::from(self.cfg.idle_share.max(1))
    }

    /// Frames accessed in the last sample: with an idle share of N > 1,
    /// those whose idle bit was read clear in this sample's part (accessed
    /// at some point in the last N intervals), plus this interval's dirtied
    /// frames (anywhere).
    pub fn accessed(&self) -> &Bitset {
        &self.accessed
    }

    /// Frames dirtied in the last sample.
    pub fn dirtied(&self) -> &Bitset {
        &self.dirtied
    }

    /// The reverse map of the last sample.
    pub fn rmap(&self) -> Arc<Rmap> {
        self.rmap.clone()
    }

    /// Notes for the user gathered since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        w.append(&mut self.bitmap.warnings);
        w
    }

    fn pids(&self) -> Result<Vec<u32>> {
        if self.cfg.pids.is_empty() {
            list_pids(&self.cfg.roots, self.self_pid)
        } else {
            Ok(self.cfg.pids.clone())
        }
    }

    /// Starts the first interval: marks all frames idle and clears every
    /// scanned process's soft-dirty bits, so sample 1 covers one interval.
    pub fn arm(&mut self) -> Result<()> {
        self.refresh_lru();
        self.bitmap.mark_all_idle();
        for pid in self.pids()? {
            // Kernel threads refuse clear_refs; exited processes are gone.
            let _ = clear_soft_dirty(&self.cfg.roots, pid);
        }
        Ok(())
    }

    fn refresh_lru(&mut self) {
        if let Some(k) = &mut self.kpf {
            if let Err(e) = k.read_lru(&self.mem.ram, &mut self.lru) {
                self.warnings.push(format!(
                    "{e:#}: kpageflags unusable, counting every non-idle RAM frame as accessed"
                ));
                self.kpf = None;
                for r in &self.mem.ram {
                    self.lru.set_range(r.start, r.end);
                }
            }
        }
    }

    /// Takes a sample covering the `dt` since the previous one.
    pub fn sample(&mut self, dt: Duration) -> Result<Summary> {
        let parts = self.idle_share();
        let part = self.samples % parts;
        self.bitmap.sample_part(&mut self.idle, part, parts);
        if self.samples % u64::from(self.cfg.lru_refresh.max(1)) == 0 {
            self.refresh_lru();
        }
        accessed_from_idle(&self.idle, &self.lru, &mut self.accessed);

        let pids = self.pids()?;
        let mut sum = Summary::default();
        self.dirtied.clear();
        let rmap = match Arc::get_mut(&mut self.rmap) {
            Some(r) => r,
            None => {
                // The prefetcher still holds the last one.
                self.rmap = Arc::new(Rmap::new(self.cfg.rmap_cap));
                Arc::get_mut(&mut self.rmap).expect("fresh Arc is unique")
            }
        };
        rmap.clear();
        let (mut present, mut hidden) = (0u64, 0u64);
        for pid in pids {
            let (dirtied, accessed, model) = (&mut self.dirtied, &self.accessed, &self.model);
            let r = self.scanner.scan(&self.cfg.roots, pid, |pfn, vaddr, sd| {
                if sd {
                    dirtied.set(pfn);
                }
                if sd || accessed.get(pfn) || model.age(pfn) & RMAP_HOT != 0 {
                    rmap.insert(pfn, pid, vaddr);
                }
            });
            match r {
                Ok(st) => {
                    sum.procs += 1;
                    present += st.present;
                    hidden += st.hidden_pfn;
                    if clear_soft_dirty(&self.cfg.roots, pid).is_err() {
                        sum.gone += 1;
                    }
                }
                Err(Skip::NoMm) => {}
                Err(Skip::Gone(_)) => sum.gone += 1,
            }
        }
        if present > 0 && hidden == present {
            bail!(
                "/proc/PID/pagemap hides frame numbers: run miglock-tracer as root (CAP_SYS_ADMIN)"
            );
        }
        rmap.finish();
        self.accessed.union_with(&self.dirtied);

        if parts == 1 {
            let up = self.model.update(&self.accessed);
            sum.accessed = up.accessed;
            sum.wss = up.wss;
        } else {
            // Dirtied frames of other parts wait for their part's round,
            // where they count as accessed (their access, like the idle
            // bits read then, happened within that round).
            self.pending.union_with(&self.accessed);
            let words = self.bitmap.part_words(part, parts);
            let up = self
                .model
                .update_part(&self.pending, part as usize, parts as usize, &words);
            let pw = self.pending.words_mut();
            let n = pw.len();
            for &(a, b) in &words {
                pw[(a as usize).min(n)..(b as usize).min(n)].fill(0);
            }
            sum.accessed = self.accessed.count();
            sum.wss = up.wss;
        }
        sum.dirtied = self.dirtied.count();
        sum.dirty_rate = self.model.note_dirty(sum.dirtied, dt);
        self.samples += 1;
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagemap::{PM_PRESENT, PM_SOFT_DIRTY};
    use std::fs;

    /// 256 frames of RAM; process 5 maps pages 1..4 at the given entries.
    fn tree(entries: [u64; 3]) -> (tempfile::TempDir, Config) {
        let d = tempfile::tempdir().unwrap();
        let (proc, sys) = (d.path().join("proc"), d.path().join("sys"));
        fs::create_dir_all(sys.join("kernel/mm/page_idle")).unwrap();
        fs::create_dir_all(proc.join("5")).unwrap();
        fs::write(proc.join("iomem"), "00000000-000fffff : System RAM\n").unwrap();
        // No kpageflags: every non-idle RAM frame counts (with a warning).
        fs::write(sys.join("kernel/mm/page_idle/bitmap"), [0u8; 32]).unwrap();
        fs::write(proc.join("5/maps"), "1000-4000 rw-p 0 0:0 0\n").unwrap();
        let mut pm = [0u64; 4];
        pm[1..].copy_from_slice(&entries);
        let b: Vec<u8> = pm.iter().flat_map(|e| e.to_ne_bytes()).collect();
        fs::write(proc.join("5/pagemap"), b).unwrap();
        fs::write(proc.join("5/clear_refs"), "").unwrap();
        let cfg = Config {
            roots: Roots {
                procfs: proc,
                sysfs: sys,
            },
            pids: vec![],
            lru_refresh: 4,
            rmap_cap: 100,
            wss_samples: 4,
            idle_share: 1,
        };
        (d, cfg)
    }

    #[test]
    fn dirtied_frames_feed_model_and_rmap() {
        let (_d, cfg) = tree([
            PM_PRESENT | PM_SOFT_DIRTY | 200,
            PM_PRESENT | 201,
            PM_PRESENT | PM_SOFT_DIRTY | 9999, // beyond pfn_limit: ignored
        ]);
        let mut s = Sampler::open(cfg, 4096).unwrap();
        assert_eq!(s.mem().pfn_limit, 256);
        assert!(s.take_warnings()[0].contains("kpageflags"));
        s.arm().unwrap();
        // After arm the (fake) bitmap is all ones: only soft-dirty counts.
        let sum = s.sample(Duration::from_secs(2)).unwrap();
        assert_eq!(
            (sum.accessed, sum.dirtied, sum.wss, sum.procs),
            (1, 1, 1, 1)
        );
        assert_eq!(sum.dirty_rate, 0.5);
        assert_eq!(s.model().age(200), 0x80);
        let r = s.rmap();
        assert_eq!(r.lookup(200).map(|m| (m.pid, m.vaddr)), Some((5, 0x1000)));
        assert_eq!(r.lookup(201), None, "clean and cold: not worth mapping");
    }

    #[test]
    fn hidden_frame_numbers_are_an_error() {
        let (_d, cfg) = tree([PM_PRESENT, PM_PRESENT | PM_SOFT_DIRTY, 0]);
        let mut s = Sampler::open(cfg, 4096).unwrap();
        s.arm().unwrap();
        let e = s.sample(Duration::from_secs(1)).unwrap_err().to_string();
        assert!(e.contains("run miglock-tracer as root"), "{e}");
    }

    /// A 4-way idle share over 4 words (one per part): frames 64..128 are
    /// accessed before every sample, 128..192 only before the first, and
    /// frame 200 is dirtied every interval.
    #[test]
    fn shared_idle_sampling_keeps_hot_frames_hot() {
        let (d, mut cfg) = tree([PM_PRESENT | PM_SOFT_DIRTY | 200, PM_PRESENT | 201, 0]);
        cfg.idle_share = 4;
        let bitmap = d.path().join("sys/kernel/mm/page_idle/bitmap");
        let f = fs::OpenOptions::new().write(true).open(&bitmap).unwrap();
        let mut s = Sampler::open(cfg, 4096).unwrap();
        assert_eq!(s.idle_share(), 4);
        s.arm().unwrap();
        for i in 0..12u64 {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&0u64.to_ne_bytes(), 8).unwrap();
            if i == 0 {
                f.write_all_at(&0u64.to_ne_bytes(), 16).unwrap();
            }
            let sum = s.sample(Duration::from_secs(1)).unwrap();
            let part = i % 4;
            let mut want = Bitset::new(256);
            if part == 1 {
                want.set_range(64, 128);
            }
            if i == 2 {
                want.set_range(128, 192);
            }
            want.set(200);
            assert_eq!(s.accessed(), &want, "sample {i}");
            assert_eq!(sum.accessed, want.count(), "sample {i}");
            assert_eq!(sum.dirtied, 1);
            let m = s.model();
            // Ages count rounds of the frame's own part.
            let rounds = |first: u64| if i < first { 0 } else { (i - first) / 4 + 1 };
            let ones = |n: u64| !(0xffu8 >> n.min(8));
            assert_eq!(m.age(70), ones(rounds(1)), "sample {i}: never decays");
            assert_eq!(m.age(127), ones(rounds(1)), "sample {i}");
            assert_eq!(m.age(200), ones(rounds(3)), "sample {i}: dirtied, kept");
            let once = match rounds(2) {
                0 => 0,
                r => 0x80 >> (r - 1),
            };
            assert_eq!(m.age(130), once, "sample {i}: aged only in its rounds");
            assert_eq!(m.age(10), 0);
            let wss = [0, 64, 128, 129][i.min(3) as usize];
            assert_eq!(sum.wss, wss, "sample {i}");
        }
    }
}
