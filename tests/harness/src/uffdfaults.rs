// SPDX-License-Identifier: GPL-2.0

//! Counts the copy-on-write faults of a real QEMU background snapshot.
//!
//! QEMU reports no such count: `query-migrate` has none, and its trace
//! points miss the path. But the fault path is visible from outside, with
//! the kernel's trace points, in a private tracefs instance (its own buffer
//! and filters, removed afterwards: nothing global changes). The harness
//! starts QEMU with `-name ...,debug-threads=on`, so its threads have names.
//!
//! - **Writes that hit a protected page** (`exceptions:page_fault_user` of
//!   the vCPU threads, `CPU n/TCG`, with the error code's present and write
//!   bits set): the snapshot write-protects guest memory with userfaultfd,
//!   and a vCPU writing a page not yet saved blocks in such a fault until
//!   the page is in the image. That is a copy-on-write page in the paper's
//!   sense and migsim's (`cow_faults`: a write to a page not yet copied
//!   out). The kernel lifts the protection with the page writable (it
//!   upgrades exclusive anonymous pages), so a page faults at most once.
//! - **Pages served out of order** (`syscalls:sys_exit_read` of the
//!   snapshot thread, `mig/snapshot`, returning one 32-byte `uffd_msg`):
//!   QEMU reads a blocked write's message between two pages
//!   (`poll_fault_page`), saves that page first and goes on from there. A
//!   write blocked on the very page the scan is saving is woken by its
//!   un-protect and the kernel drops its message unread: those are not
//!   counted here. Its empty polls return -EAGAIN; it reads nothing else.
//! - **How long a served write waited**: from its fault to the snapshot
//!   thread's next `UFFDIO_WRITEPROTECT` after reading it (the un-protect
//!   that wakes it, `syscalls:sys_enter_ioctl`). QEMU looks for faults only
//!   between two pages of the image, and writing a page blocks while the
//!   link's buffer is full, so this is far longer than the page's own time
//!   on the link.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The counts and waits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
    /// vCPU writes that hit a write-protected page.
    pub blocked_writes: u64,
    /// Fault messages QEMU's snapshot thread read and served.
    pub served: u64,
    /// Median wait of a served write, fault to un-protect, seconds.
    pub wait_median_s: Option<f64>,
    /// Mean of the same.
    pub wait_mean_s: Option<f64>,
}

/// The events and their filters.
const EVENTS: [(&str, &str); 3] = [
    (
        "exceptions/page_fault_user",
        "error_code & 1 && error_code & 2 && comm ~ \"CPU *\"",
    ),
    (
        "syscalls/sys_exit_read",
        "ret == 32 && comm == \"mig/snapshot\"",
    ),
    (
        // UFFDIO_WRITEPROTECT = _IOWR(0xAA, 0x06, struct uffdio_writeprotect).
        "syscalls/sys_enter_ioctl",
        "cmd == 0xc018aa06 && comm == \"mig/snapshot\"",
    ),
];

/// A running count; [`UffdFaults::stop`] ends it.
pub struct UffdFaults {
    instance: PathBuf,
    /// tracefs mounted by us, unmounted at the end.
    mounted: Option<PathBuf>,
}

/// Where tracefs is, mounting it under `scratch` if it is nowhere.
fn tracefs(scratch: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("instances").is_dir() {
            return Ok((PathBuf::from(p), None));
        }
    }
    let at = scratch.join("tracefs");
    std::fs::create_dir_all(&at).context("tracefs mount point")?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(&at)
        .status()
        .context("mount -t tracefs")?
        .success();
    if !ok {
        bail!("cannot mount tracefs");
    }
    Ok((at.clone(), Some(at)))
}

impl UffdFaults {
    /// Starts counting (before the checkpoint starts).
    pub fn start(scratch: &Path) -> Result<UffdFaults> {
        let (root, mounted) = tracefs(scratch)?;
        let instance = root
            .join("instances")
            .join(format!("miglock-uffd-{}", std::process::id()));
        let mut me = UffdFaults {
            instance: PathBuf::new(),
            mounted,
        };
        std::fs::create_dir(&instance)
            .with_context(|| format!("tracefs instance {}", instance.display()))?;
        me.instance = instance;
        std::fs::write(me.instance.join("buffer_size_kb"), "16384\n").context("buffer size")?;
        for (ev, filter) in EVENTS {
            let ev = me.instance.join("events").join(ev);
            std::fs::write(ev.join("filter"), format!("{filter}\n"))
                .with_context(|| format!("{} filter", ev.display()))?;
            std::fs::write(ev.join("enable"), "1\n")
                .with_context(|| format!("enabling {}", ev.display()))?;
        }
        Ok(me)
    }

    fn disable(&self) {
        for (ev, _) in EVENTS {
            let _ = std::fs::write(self.instance.join("events").join(ev).join("enable"), "0\n");
        }
    }

    /// Stops counting; what happened meanwhile.
    pub fn stop(self) -> Result<Counts> {
        self.disable();
        let text = std::fs::read_to_string(self.instance.join("trace")).context("trace")?;
        let overrun = std::fs::read_dir(self.instance.join("per_cpu"))
            .context("per_cpu")?
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("stats")).ok())
            .any(|s| {
                s.lines()
                    .any(|l| l.starts_with("overrun:") && l.trim_end() != "overrun: 0")
            });
        if overrun {
            bail!("the trace buffer overran: the count would be short");
        }
        Ok(count(&text))
    }
}

/// An event of the trace.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ev {
    Fault,
    Read,
    Unprotect,
}

/// The time and kind of a `trace` line: `COMM-PID [CPU] FLAGS TS: EVENT...`
/// (COMM may hold spaces: "CPU 0/TCG").
fn parse(line: &str) -> Option<(f64, Ev)> {
    if line.starts_with('#') {
        return None;
    }
    let rest = &line[line.find("] ")? + 2..];
    let mut w = rest.split_whitespace();
    let _flags = w.next()?;
    let ts: f64 = w.next()?.strip_suffix(':')?.parse().ok()?;
    let ev = match w.next()? {
        "page_fault_user:" => Ev::Fault,
        "sys_read" => Ev::Read,
        e if e.starts_with("sys_ioctl(") => Ev::Unprotect,
        _ => return None,
    };
    Some((ts, ev))
}

/// The counts and waits of a tracefs `trace` text (lines in time order).
fn count(trace: &str) -> Counts {
    let evs: Vec<(f64, Ev)> = trace.lines().filter_map(parse).collect();
    let n = |e: Ev| evs.iter().filter(|x| x.1 == e).count() as u64;
    // A served write: the last fault before the read, woken by the first
    // un-protect after it.
    let mut waits = Vec::new();
    let mut fault = None;
    let mut read = None;
    for &(ts, e) in &evs {
        match e {
            Ev::Fault => fault = Some(ts),
            Ev::Read => read = fault.take(),
            Ev::Unprotect => {
                if let Some(f) = read.take() {
                    waits.push(ts - f);
                }
            }
        }
    }
    waits.sort_by(f64::total_cmp);
    Counts {
        blocked_writes: n(Ev::Fault),
        served: n(Ev::Read),
        wait_median_s: waits.get(waits.len() / 2).copied(),
        wait_mean_s: (!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64),
    }
}

impl Drop for UffdFaults {
    fn drop(&mut self) {
        if !self.instance.as_os_str().is_empty() {
            self.disable();
            let _ = std::fs::remove_dir(&self.instance);
        }
        if let Some(at) = &self.mounted {
            let _ = std::process::Command::new("umount").arg(at).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_not_comments() {
        let t = "# tracer: nop\n#\n#           TASK-PID     CPU#  ||||   TIMESTAMP  FUNCTION\n\
                 CPU 0/TCG-810 [000] d.... 10.000000: page_fault_user: address=0x7f00 ip=0x55 error_code=0x7\n\
                 mig/snapshot-812 [001] ..... 10.001000: sys_read -> 0x20\n\
                 mig/snapshot-812 [001] ..... 10.003000: sys_ioctl(fd: 1d, cmd: c018aa06, arg: 7ffc)\n\
                 mig/snapshot-812 [001] ..... 10.003500: sys_ioctl(fd: 1d, cmd: c018aa06, arg: 7ffc)\n\
                 CPU 1/TCG-811 [001] d.... 10.010000: page_fault_user: address=0x7f10 ip=0x55 error_code=0x7\n\
                 CPU 0/TCG-810 [000] d.... 10.020000: page_fault_user: address=0x7f20 ip=0x55 error_code=0x7\n\
                 mig/snapshot-812 [000] ..... 10.021000: sys_read -> 0x20\n\
                 mig/snapshot-812 [000] ..... 10.026000: sys_ioctl(fd: 1d, cmd: c018aa06, arg: 7ffc)\n";
        let c = count(t);
        assert_eq!((c.blocked_writes, c.served), (3, 2));
        // Waits: 3 ms and 6 ms (the fault at 10.010 was woken unread).
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(c.wait_median_s, 0.006), "{c:?}");
        assert!(close(c.wait_mean_s, 0.0045), "{c:?}");
        let none = count("# tracer: nop\n#\n");
        assert_eq!((none.blocked_writes, none.served), (0, 0));
        assert_eq!(none.wait_median_s, None);
    }
}
