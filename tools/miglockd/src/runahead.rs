// SPDX-License-Identifier: GPL-2.0

//! Run-ahead from the destination host: once the guest runs here under
//! post-copy, read one byte of each of its hot pages in QEMU's memory
//! (`process_vm_readv`), so that QEMU fetches them from the source before
//! the workload faults on them.
//!
//! The guest's own run-ahead (the tracer's `--prefetch`) came too late to
//! help: after the switchover its vCPU, its pages and the guest kernel's
//! are all on the source, so it reached its first page a second or more
//! in. This one needs no guest vCPU and keeps many pages asked for at
//! once. The hot pages are the guest's hints (guest-physical frames,
//! hottest first) as the source agent holds them: `miglockctl --json hints
//! VM --all` there, `miglockctl incoming VM --prefetch FILE` here.
//!
//! A read of a page QEMU has not placed yet waits in the kernel's
//! userfaultfd until QEMU has fetched it. Before QEMU registered its
//! memory with userfaultfd the same read would map an empty page under it
//! and break the migration, so reading starts only once the guest runs
//! here (QEMU registers at the post-copy "listen" command, before the
//! guest is started).

use miglock_control::PrefetchRange;
use miglock_qmp::Monitor;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use serde_json::json;
use std::io::IoSliceMut;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Guest page size (the hints are 4 KiB frames on every guest we run).
const PAGE: u64 = 4096;

/// Most pages one run-ahead reads (16 GiB of guest memory): far above
/// a hot set, and a bound on what a guest's hints can make us resolve.
pub const MAX_PAGES: u64 = 1 << 22;

/// Most `gpa2hva` questions one plan asks QEMU: two per range, and one per
/// page of a range that is not contiguous in QEMU's memory.
const MAX_LOOKUPS: usize = 8192;

/// Pages asked for at once: one reader thread each.
pub const READERS: usize = 16;

/// Where each hinted page is in QEMU's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Host virtual addresses in QEMU, hottest page first.
    pub addrs: Vec<u64>,
    /// Hinted pages QEMU maps no RAM at (or left out past the bounds).
    pub unmapped: u64,
}

/// The address `gpa2hva` printed, from its one line ("Host virtual address
/// for 0x1000 (pc.ram) is 0x7f...").
pub fn parse_gpa2hva(out: &str) -> Option<u64> {
    let (_, tail) = out.split_once(") is 0x")?;
    let hex: String = tail.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// Where QEMU holds the guest-physical address `gpa`, or `None` if no RAM
/// is there.
fn gpa2hva(qmp: &Monitor, gpa: u64) -> Result<Option<u64>, String> {
    let out = qmp
        .execute(
            "human-monitor-command",
            Some(json!({"command-line": format!("gpa2hva {gpa:#x}")})),
        )
        .map_err(|e| format!("gpa2hva: {e}"))?;
    Ok(out.as_str().and_then(parse_gpa2hva))
}

/// Resolves `ranges` (hottest first) to QEMU's addresses with `lookup`
/// (guest-physical → host virtual, `None`: not RAM). A range whose first
/// and last pages are as far apart in QEMU as in the guest is taken as one
/// block; otherwise its pages are looked up one by one.
pub fn plan_with(
    ranges: &[PrefetchRange],
    mut lookup: impl FnMut(u64) -> Result<Option<u64>, String>,
) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let mut lookups = 0usize;
    for r in ranges {
        let pages = u64::from(r.pages);
        let room = MAX_PAGES - plan.addrs.len() as u64;
        let first = r.start_pfn.checked_mul(PAGE);
        let Some(first) = first.filter(|f| f.checked_add(pages * PAGE).is_some()) else {
            plan.unmapped += pages;
            continue;
        };
        if pages == 0 || pages > room || lookups + 2 > MAX_LOOKUPS {
            plan.unmapped += pages;
            continue;
        }
        let last = first + (pages - 1) * PAGE;
        lookups += 2;
        match (lookup(first)?, lookup(last)?) {
            (Some(a), Some(b)) if b.checked_sub(a) == Some(last - first) => {
                plan.addrs.extend((0..pages).map(|i| a + i * PAGE));
            }
            _ => {
                let n = pages.min((MAX_LOOKUPS - lookups) as u64);
                lookups += n as usize;
                for i in 0..n {
                    match lookup(first + i * PAGE)? {
                        Some(a) => plan.addrs.push(a),
                        None => plan.unmapped += 1,
                    }
                }
                plan.unmapped += pages - n;
            }
        }
    }
    Ok(plan)
}

/// [`plan_with`] asking QEMU through `qmp` (HMP `gpa2hva`).
pub fn plan(qmp: &Monitor, ranges: &[PrefetchRange]) -> Result<Plan, String> {
    plan_with(ranges, |gpa| gpa2hva(qmp, gpa))
}

/// What a run-ahead did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pages read.
    pub read: u64,
    /// Reads that failed.
    pub failed: u64,
    /// From the start to the last reader's end.
    pub elapsed: Duration,
}

/// Reads one byte at `addr` in `pid`.
fn read_byte(pid: Pid, addr: u64) -> nix::Result<usize> {
    let mut byte = [0u8; 1];
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: 1,
    }];
    process_vm_readv(pid, &mut [IoSliceMut::new(&mut byte)], &remote)
}

/// Readers at work.
pub struct Runahead {
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<(u64, u64, Instant)>>,
    started: Instant,
    /// The plan's pages, and those it left out.
    pages: usize,
    unmapped: u64,
}

impl Runahead {
    /// Starts [`READERS`] threads reading `plan`'s pages in `pid`, in
    /// order, each taking the next page not taken yet.
    pub fn start(pid: u32, plan: Plan) -> std::io::Result<Self> {
        let (pages, unmapped) = (plan.addrs.len(), plan.unmapped);
        let addrs = Arc::new(plan.addrs);
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let pid = Pid::from_raw(pid as i32);
        let started = Instant::now();
        let mut readers = Vec::new();
        for i in 0..READERS.min(addrs.len()) {
            let (stop, next, addrs) = (stop.clone(), next.clone(), addrs.clone());
            let t = std::thread::Builder::new()
                .name(format!("runahead-{i}"))
                .spawn(move || {
                    let (mut read, mut failed) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        let Some(&a) = addrs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        match read_byte(pid, a) {
                            Ok(1) => read += 1,
                            // QEMU is gone: nothing more to read.
                            Err(nix::errno::Errno::ESRCH) => break,
                            _ => failed += 1,
                        }
                    }
                    (read, failed, Instant::now())
                })?;
            readers.push(t);
        }
        Ok(Runahead {
            stop,
            readers,
            started,
            pages,
            unmapped,
        })
    }

    /// Waits for the readers and says what they did. Without `wait` (the
    /// migration failed: a read may wait on a page that never comes) the
    /// readers are told to stop and left to end on their own.
    pub fn finish(self, wait: bool) -> Outcome {
        let mut out = Outcome::default();
        if !wait {
            self.stop.store(true, Ordering::Relaxed);
            return out;
        }
        let mut end = self.started;
        for t in self.readers {
            if let Ok((read, failed, at)) = t.join() {
                out.read += read;
                out.failed += failed;
                end = end.max(at);
            }
        }
        out.elapsed = end - self.started;
        out
    }

    /// Waits for the readers (as [`Runahead::finish`]) and reports them as
    /// the incoming reply and the audit log carry it.
    pub fn report(self) -> serde_json::Value {
        let (pages, unmapped) = (self.pages, self.unmapped);
        let o = self.finish(true);
        json!({
            "pages": pages,
            "unmapped": unmapped,
            "read": o.read,
            "failed": o.failed,
            "ms": o.elapsed.as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemus_answer() {
        assert_eq!(
            parse_gpa2hva("Host virtual address for 0x1000 (pc.ram) is 0x7f1234567000\r\n"),
            Some(0x7f12_3456_7000)
        );
        assert_eq!(
            parse_gpa2hva("No memory is mapped at address 0x10000000000\r\n"),
            None
        );
        assert_eq!(
            parse_gpa2hva("Memory at address 0xfee00000 is not RAM\r\n"),
            None
        );
        assert_eq!(parse_gpa2hva(""), None);
    }

    fn r(start_pfn: u64, pages: u32) -> PrefetchRange {
        PrefetchRange { start_pfn, pages }
    }

    /// pc.ram: 0..0xa0 at 0x1000_0000, a hole, 0x100.. at 0x1000_0000 +
    /// 0x100 pages; nothing at or above 0x8000.
    fn qemu(gpa: u64) -> Result<Option<u64>, String> {
        let pfn = gpa / PAGE;
        Ok(match pfn {
            0..0xa0 | 0x100..0x8000 => Some(0x1000_0000 + gpa),
            _ => None,
        })
    }

    #[test]
    fn resolves_ranges_in_hint_order() {
        let p = plan_with(&[r(0x200, 3), r(0x10, 1)], qemu).unwrap();
        assert_eq!(
            p.addrs,
            [0x1020_0000, 0x1020_1000, 0x1020_2000, 0x1001_0000]
        );
        assert_eq!(p.unmapped, 0);
    }

    #[test]
    fn pages_without_ram_are_counted_not_read() {
        // Across the hole: looked up page by page.
        let p = plan_with(&[r(0x9e, 4), r(0x7fff, 2)], qemu).unwrap();
        assert_eq!(p.addrs, [0x1009_e000, 0x1009_f000, 0x17ff_f000]);
        assert_eq!(p.unmapped, 3);
    }

    #[test]
    fn hostile_ranges_cost_bounded_work() {
        // Empty, overflowing, and past every bound.
        let p = plan_with(&[r(0x10, 0), r(u64::MAX / 2, 5), r(u64::MAX - 1, 2)], qemu).unwrap();
        assert!(p.addrs.is_empty());
        assert_eq!(p.unmapped, 7);
        // A range that is not RAM anywhere is looked up page by page, but
        // never more than MAX_LOOKUPS times in all.
        let mut asked = 0;
        let p = plan_with(&[r(0x9000, u32::MAX), r(0x9000, 100_000)], |g| {
            asked += 1;
            qemu(g)
        })
        .unwrap();
        assert!(p.addrs.is_empty());
        assert!(asked <= MAX_LOOKUPS, "{asked}");
        // An error from QEMU is the plan's error.
        assert!(plan_with(&[r(1, 1)], |_| Err("gone".into())).is_err());
    }

    #[test]
    fn readers_read_every_page_of_a_live_process() {
        // This process stands in for QEMU.
        let mem = vec![7u8; 8 * PAGE as usize];
        let plan = |addrs| Plan { addrs, unmapped: 2 };
        let addrs: Vec<u64> = (0..8).map(|i| mem.as_ptr() as u64 + i * PAGE).collect();
        let r = Runahead::start(std::process::id(), plan(addrs)).unwrap();
        let o = r.finish(true);
        assert_eq!((o.read, o.failed), (8, 0));
        // An unmapped address fails and is counted.
        let r = Runahead::start(std::process::id(), plan(vec![8])).unwrap();
        let v = r.report();
        assert_eq!(
            (&v["pages"], &v["unmapped"], &v["read"], &v["failed"]),
            (&json!(1), &json!(2), &json!(0), &json!(1))
        );
    }
}
