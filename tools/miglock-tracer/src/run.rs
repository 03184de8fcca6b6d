// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer run`: the sampling loop, hints, recording, and waiting
//! on the device for post-copy between samples.

use crate::cpu;
use crate::hints::rank;
use crate::model::Model;
use crate::prefetch::{Job, Prefetcher};
use crate::sampler::{self, Sampler, Summary};
use anyhow::{Context, Result};
use miglock_abi::types::MldHintRange;
use miglock_dev::{Device, HintBatch};
use miglock_trace::{Header, Sample, Writer};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::fs::File;
use std::io::BufWriter;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM end the run cleanly (the trace gets its end record).
/// No SA_RESTART, so a signal cuts the wait short.
pub fn install_stop_signals() -> Result<()> {
    let sa = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { signal::sigaction(s, &sa) }.context("installing signal handlers")?;
    }
    Ok(())
}

/// Keeps SIGINT/SIGTERM for the main thread (called by helper threads).
pub fn block_stop_signals() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// Whether a stop was requested.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// On a signal only.
    None,
    /// After this long.
    Duration(Duration),
    /// After this many samples.
    Samples(u64),
}

/// `run` settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Sampler settings.
    pub sampler: sampler::Config,
    /// Time between samples.
    pub interval: Duration,
    /// Trace file to write.
    pub record: Option<PathBuf>,
    /// Send hints to the device.
    pub hints: bool,
    /// Touch hot pages when post-copy starts.
    pub prefetch: bool,
    /// The device node.
    pub device: PathBuf,
    /// When to stop.
    pub limit: Limit,
    /// Most hint ranges per batch.
    pub max_hints: usize,
    /// No per-sample lines.
    pub quiet: bool,
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Samples taken.
    pub samples: u64,
    /// Hint batches accepted.
    pub hints_sent: u64,
    /// Hint batches refused over the rate (EAGAIN).
    pub hints_refused: u64,
    /// Hint batches that failed otherwise.
    pub hints_failed: u64,
    /// Prefetch passes started.
    pub prefetches: u64,
    /// Intervals missed because a sample overran.
    pub late: u64,
    /// CPU time (user + system, all threads) per sample.
    pub cpu_per_sample: Duration,
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Sleeps up to `d` (a signal ends it early).
fn nap(d: Duration) {
    let _ = poll(&mut [], Some(&timespec(d)));
}

struct Runner {
    cfg: Config,
    dev: Option<Device>,
    hints_on: bool,
    watch: bool,
    postcopy_gen: u32,
    prefetcher: Option<Prefetcher>,
    last_hints: Vec<MldHintRange>,
    rmap: std::sync::Arc<crate::rmap::Rmap>,
    report: Report,
    batch: u32,
}

impl Runner {
    /// Waits until `deadline`, watching the device for post-copy.
    fn wait_until(&mut self, deadline: Instant, model: &Model) {
        while !stopping() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let left = deadline - now;
            let Some(dev) = self.dev.as_ref().filter(|_| self.watch) else {
                nap(left);
                continue;
            };
            // SAFETY: the fd belongs to `dev`, which outlives this call.
            let fd = unsafe { BorrowedFd::borrow_raw(dev.as_raw_fd()) };
            let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::PRI)];
            match poll(&mut fds, Some(&timespec(left))) {
                Ok(n) if n > 0 => {}
                _ => continue, // timeout or signal
            }
            match dev.status() {
                Ok(st) if st.postcopy_gen() != self.postcopy_gen => {
                    self.postcopy_gen = st.postcopy_gen();
                    self.start_prefetch(model);
                }
                // Readable for another reason (a pending migration, an
                // arrival): reading the status took it in, once.
                Ok(_) => {}
                Err(e) => {
                    eprintln!("tracer: device status: {e}; no longer watching for post-copy");
                    self.watch = false;
                }
            }
        }
    }

    /// Touches every ranked range, not only the batch's `max_hints`: with
    /// a scattered working set 1024 ranges cover few pages.
    fn start_prefetch(&mut self, model: &Model) {
        if let Some(p) = &self.prefetcher {
            let ranked = rank(model, usize::MAX);
            let all = ranked.len();
            let ranges = crate::prefetch::recent(ranked);
            println!(
                "prefetch: post-copy announced (gen {}), touching {} ranges hottest first ({} older ones left out)",
                self.postcopy_gen,
                ranges.len(),
                all - ranges.len()
            );
            p.submit(Job {
                ranges,
                rmap: self.rmap.clone(),
            });
            self.report.prefetches += 1;
        }
    }

    fn send_hints(&mut self, s: &Summary, pfn_limit: u64) {
        let Some(dev) = self.dev.as_ref().filter(|_| self.hints_on) else {
            return;
        };
        self.batch = self.batch.wrapping_add(1);
        let b = HintBatch {
            batch: self.batch,
            ranges: std::mem::take(&mut self.last_hints),
            wss_pages: s.wss,
            dirty_pages_per_s: s.dirty_rate.round() as u64,
            pfn_limit,
            interval: self.cfg.interval,
        };
        let r = dev.hints(&b);
        self.last_hints = b.ranges;
        match r {
            Ok(()) => self.report.hints_sent += 1,
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => self.report.hints_refused += 1,
                Some(libc::EOPNOTSUPP) | Some(libc::EPERM) | Some(libc::EACCES) => {
                    eprintln!("tracer: hints: {e}; not sending any more");
                    self.hints_on = false;
                }
                _ => {
                    self.report.hints_failed += 1;
                    if self.report.hints_failed <= 3 {
                        eprintln!("tracer: hints batch {}: {e}", self.batch);
                    }
                }
            },
        }
    }
}

/// Runs the tracer until its limit or a signal.
pub fn run(cfg: Config) -> Result<Report> {
    STOP.store(false, Ordering::Relaxed);
    install_stop_signals()?;
    let page_size = crate::page_size();
    let mut sampler = Sampler::open(cfg.sampler.clone(), page_size)?;
    for w in sampler.take_warnings() {
        eprintln!("tracer: {w}");
    }
    let mem = sampler.mem().clone();

    let dev = if cfg.hints || cfg.prefetch {
        match Device::open_path(&cfg.device) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "tracer: {}: {e}; running without hints or prefetch",
                    cfg.device.display()
                );
                None
            }
        }
    } else {
        None
    };
    let mut watch = cfg.prefetch && dev.is_some();
    let mut postcopy_gen = 0;
    if let Some(d) = dev.as_ref().filter(|_| watch) {
        match d.status() {
            Ok(st) => postcopy_gen = st.postcopy_gen(),
            Err(e) => {
                eprintln!("tracer: device status: {e}; prefetch off");
                watch = false;
            }
        }
    }
    let prefetcher = if watch {
        Some(Prefetcher::spawn(cfg.sampler.roots.clone()).context("starting the prefetch thread")?)
    } else {
        None
    };

    let mut writer = match &cfg.record {
        Some(p) => {
            let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            let h = Header {
                page_size: page_size as u32,
                pfn_limit: mem.pfn_limit,
                interval_us: cfg.interval.as_micros().max(1) as u64,
            };
            Some(
                Writer::new(BufWriter::new(f), h)
                    .with_context(|| format!("writing {}", p.display()))?,
            )
        }
        None => None,
    };

    if !cfg.quiet {
        println!(
            "tracer: RAM {} MiB in {} ranges (pfn_limit {}, from {}), model {} KiB, interval {}, idle share 1/{}, hints {}, prefetch {}{}",
            (mem.ram_pages() * page_size) >> 20,
            mem.ram.len(),
            mem.pfn_limit,
            mem.source,
            sampler.model().memory_bytes() >> 10,
            humantime::format_duration(cfg.interval),
            sampler.idle_share(),
            if cfg.hints && dev.is_some() { "on" } else { "off" },
            if watch { "on" } else { "off" },
            cfg.record
                .as_ref()
                .map(|p| format!(", recording {}", p.display()))
                .unwrap_or_default(),
        );
    }

    let mut r = Runner {
        hints_on: cfg.hints && dev.is_some(),
        dev,
        watch,
        postcopy_gen,
        prefetcher,
        last_hints: Vec::new(),
        rmap: sampler.rmap(),
        report: Report::default(),
        batch: 0,
        cfg,
    };

    let cpu0 = cpu::process();
    sampler.arm()?;
    let t0 = Instant::now();
    let mut last = t0;
    let mut next = t0 + r.cfg.interval;
    let result = loop {
        r.wait_until(next, sampler.model());
        if stopping() {
            break Ok(());
        }
        let tcpu = cpu::thread();
        let now = Instant::now();
        let s = match sampler.sample(now - last) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        last = now;
        r.rmap = sampler.rmap();
        r.last_hints = rank(sampler.model(), r.cfg.max_hints);
        r.send_hints(&s, mem.pfn_limit);
        if let Some(w) = &mut writer {
            let sample = Sample {
                t_us: (now - t0).as_micros() as u64,
                accessed: sampler.accessed().ranges(),
                dirtied: sampler.dirtied().ranges(),
            };
            let res = w.write(&sample).and_then(|()| w.flush());
            if let Err(e) = res {
                break Err(anyhow::Error::new(e).context("writing the trace"));
            }
        }
        r.report.samples += 1;
        for w in sampler.take_warnings() {
            eprintln!("tracer: {w}");
        }
        if !r.cfg.quiet {
            println!(
                "t {:.3}s accessed {} dirtied {} wss {} dirty {:.0}/s hints {} procs {} cpu {:.2} ms",
                (now - t0).as_secs_f64(),
                s.accessed,
                s.dirtied,
                s.wss,
                s.dirty_rate,
                r.last_hints.len(),
                s.procs,
                (cpu::thread().saturating_sub(tcpu)).as_secs_f64() * 1e3,
            );
        }
        next += r.cfg.interval;
        let done = match r.cfg.limit {
            Limit::None => false,
            Limit::Samples(n) => r.report.samples >= n,
            Limit::Duration(d) => next > t0 + d + r.cfg.interval / 2,
        };
        if done {
            break Ok(());
        }
        let now = Instant::now();
        while next <= now {
            next += r.cfg.interval;
            r.report.late += 1;
        }
    };

    if let Some(p) = r.prefetcher.take() {
        p.finish(stopping());
    }
    let finished = writer.map(|w| w.finish().map(drop));
    let n = r.report.samples;
    let cpu_total = cpu::process().saturating_sub(cpu0);
    r.report.cpu_per_sample = if n > 0 {
        cpu_total / n as u32
    } else {
        Duration::ZERO
    };
    let rep = r.report;
    println!(
        "tracer: {} samples; hints sent {} refused {} (EAGAIN) failed {}; prefetch passes {}; late {}",
        n, rep.hints_sent, rep.hints_refused, rep.hints_failed, rep.prefetches, rep.late
    );
    println!(
        "tracer: cpu {:.2} ms per sample over {} samples = {:.2}% of one CPU at interval {}, idle share 1/{}",
        rep.cpu_per_sample.as_secs_f64() * 1e3,
        n,
        cpu::percent_of_cpu(rep.cpu_per_sample, r.cfg.interval),
        humantime::format_duration(r.cfg.interval),
        sampler.idle_share()
    );
    result?;
    if let Some(res) = finished {
        res.context("finishing the trace")?;
    }
    Ok(rep)
}
