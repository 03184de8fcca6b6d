// SPDX-License-Identifier: GPL-2.0

//! Run-ahead prefetch for post-copy: when the host says the VM now runs on
//! the destination, touch the hinted hot pages in hint order, one byte per
//! page through `/proc/PID/mem` at a reverse-mapped address. Each touch of a
//! page not yet migrated makes QEMU fetch it from the source now rather
//! than when the workload faults on it. Runs on its own thread so sampling
//! goes on meanwhile.

use crate::rmap::Rmap;
use crate::Roots;
use miglock_abi::types::{MldHintRange, MLD_HINT_SCORE_RECENT};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One prefetch pass.
pub struct Job {
    /// Ranges, hottest first.
    pub ranges: Vec<MldHintRange>,
    /// Where their frames are mapped.
    pub rmap: Arc<Rmap>,
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pages read.
    pub touched: u64,
    /// Frames with no known mapping, or whose read failed.
    pub skipped: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Of `ranges` (hottest first, as `hints::rank` gives them), those of the
/// working set now: frames accessed in one of the last two samples. A
/// frame last touched earlier (memory the workload filled once, a phase
/// that ended) would cost a round trip on the link the workload's own
/// faults wait on, for a page it may not touch again: in `bench-hints` the
/// run-ahead touched every page of the workload's 128 MiB, most of them
/// written once at its start, to prefetch a 32 MiB hot set. A range's
/// frames are all of one age class (`hints::class`), so its mean score
/// says its age.
pub fn recent(ranges: Vec<MldHintRange>) -> Vec<MldHintRange> {
    ranges
        .into_iter()
        .filter(|r| r.score >= MLD_HINT_SCORE_RECENT)
        .collect()
}

/// Touches the frames of `job` in order; stops early when `stop` is set.
pub fn touch(roots: &Roots, job: &Job, stop: &AtomicBool) -> Outcome {
    let t0 = Instant::now();
    let mut out = Outcome::default();
    // One open mem file per process; None once it failed to open.
    let mut files: HashMap<u32, Option<File>> = HashMap::new();
    let mut byte = [0u8; 1];
    for r in &job.ranges {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for pfn in r.start_pfn..r.start_pfn + u64::from(r.pages) {
            let Some(m) = job.rmap.lookup(pfn) else {
                out.skipped += 1;
                continue;
            };
            let f = files
                .entry(m.pid)
                .or_insert_with(|| File::open(roots.proc(format!("{}/mem", m.pid))).ok());
            match f.as_ref().map(|f| f.read_at(&mut byte, m.vaddr)) {
                Some(Ok(1)) => out.touched += 1,
                _ => out.skipped += 1,
            }
        }
    }
    out.elapsed = t0.elapsed();
    out
}

/// The prefetch thread.
pub struct Prefetcher {
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
}

impl Prefetcher {
    /// Starts the thread; it prints one line per pass.
    pub fn spawn(roots: Roots) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                crate::run::block_stop_signals();
                let mut done = Vec::new();
                while let Ok(job) = rx.recv() {
                    let o = touch(&roots, &job, &st);
                    println!(
                        "prefetch: touched {} pages ({} skipped) in {:.1} ms",
                        o.touched,
                        o.skipped,
                        o.elapsed.as_secs_f64() * 1e3
                    );
                    done.push(o);
                }
                done
            })?;
        Ok(Prefetcher {
            tx: Some(tx),
            handle: Some(handle),
            stop,
        })
    }

    /// Queues a pass.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }

    /// Waits for queued passes (or with `abort` abandons them) and returns
    /// the passes done.
    pub fn finish(mut self, abort: bool) -> Vec<Outcome> {
        self.stop.store(abort, Ordering::Relaxed);
        self.tx = None;
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetches_only_the_working_set_of_the_last_two_samples() {
        let ages: Vec<u8> = vec![0x80, 0x80, 0x40, 0x20, 0x10, 0xC0, 0, 0x01];
        let freqs = vec![9u8; ages.len()];
        let ranked = crate::hints::rank_frames(&ages, &freqs, usize::MAX);
        let kept = recent(ranked.clone());
        let pfns: Vec<u64> = kept
            .iter()
            .flat_map(|r| r.start_pfn..r.start_pfn + u64::from(r.pages))
            .collect();
        let mut sorted = pfns.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 5]);
        // Still hottest first.
        assert_eq!(kept, ranked[..kept.len()]);
    }

    #[test]
    fn touches_mapped_frames_in_order() {
        let d = tempfile::tempdir().unwrap();
        let roots = Roots {
            procfs: d.path().into(),
            sysfs: d.path().into(),
        };
        // A fake /proc/7/mem: reading at the mapped address works.
        std::fs::create_dir(d.path().join("7")).unwrap();
        std::fs::write(d.path().join("7/mem"), vec![1u8; 3 * 4096]).unwrap();
        let mut rmap = Rmap::new(10);
        rmap.insert(100, 7, 0);
        rmap.insert(101, 7, 4096);
        rmap.insert(102, 7, 1 << 40); // beyond the file: read fails
        rmap.insert(200, 8, 0); // process without a mem file
        rmap.finish();
        let job = Job {
            ranges: vec![
                MldHintRange {
                    start_pfn: 100,
                    pages: 4,
                    score: 9,
                },
                MldHintRange {
                    start_pfn: 200,
                    pages: 1,
                    score: 1,
                },
            ],
            rmap: Arc::new(rmap),
        };
        let o = touch(&roots, &job, &AtomicBool::new(false));
        assert_eq!((o.touched, o.skipped), (2, 3));
        let o = touch(&roots, &job, &AtomicBool::new(true));
        assert_eq!((o.touched, o.skipped), (0, 0));
        let p = Prefetcher::spawn(roots).unwrap();
        p.submit(job);
        let done = p.finish(false);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].touched, 2);
    }
}
