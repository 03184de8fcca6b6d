// SPDX-License-Identifier: GPL-2.0

//! `mlworkload`: a guest workload whose memory can be checked.
//!
//! It fills `--mib` MiB with pages whose every word encodes (page, generation),
//! rewrites `--dirty-pages` pages each tick, prints one `tick` line per
//! `--tick-ms`, and on a `finish` line on stdin (or after `--ticks`) verifies
//! every page and exits 1 on any mismatch. A `verify` line checks every page
//! and goes on ticking, so one run can be checked after each of many
//! migrations. Run across a live migration, it proves the guest kept running
//! and its memory arrived intact.
//!
//! With `--mld` it is also an application that hears the host through
//! `/dev/mld`: it counts the pages it writes while a live checkpoint runs
//! (between the "checkpoint started" and "checkpoint done" notices: what
//! the checkpoint copied on write for it, at most), and when the VM was
//! restored from a checkpoint it says which generation of its memory it
//! runs on and verifies every page at once.
//!
//! With `--hot-mib` the pages rewritten each tick are drawn at random from
//! the first `--hot-mib` MiB (a hot set) rather than in turn over all of
//! memory. With `--stalls` (and `--mld`) it times every page rewrite and,
//! at the end, says how long its rewrites were blocked before, during and
//! after a migration (`stalls.rs`).
//!
//! With `--calm-when-pending N` (and `--mld`) it is an application that
//! defers its work when the host announces a migration: from the pending
//! notice until post-copy starts, the migration is called off or the VM
//! arrives, it ticks N times slower, so that pre-copy can converge. Its
//! ticks count the work it did, so the work it gave up shows.

use anyhow::{bail, Result};
use clap::Parser;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

mod stalls;
use stalls::{Phase, Stalls};

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

#[derive(Parser)]
#[command(about = "Dirty memory and verify it (miglock guest test workload)")]
struct Args {
    /// Memory to allocate and track, in MiB.
    #[arg(long, default_value_t = 32)]
    mib: usize,
    /// Pages rewritten per tick.
    #[arg(long, default_value_t = 256)]
    dirty_pages: usize,
    /// Tick period in milliseconds.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    /// Stop by itself after this many ticks (0 = only on `finish`).
    #[arg(long, default_value_t = 0)]
    ticks: u64,
    /// Hear the host's checkpoint and restore notices on /dev/mld.
    #[arg(long)]
    mld: bool,
    /// Rewrite random pages of the first this many MiB (a hot set) instead
    /// of every page in turn (0: every page in turn).
    #[arg(long, default_value_t = 0)]
    hot_mib: usize,
    /// Seed for `--hot-mib`'s random pages.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time every page rewrite and report the time blocked per migration
    /// phase (needs `--mld`, which says when a migration is announced).
    #[arg(long, requires = "mld")]
    stalls: bool,
    /// While a migration is announced and not yet in post-copy, tick this
    /// many times slower (needs `--mld`; 1: never).
    #[arg(long, default_value_t = 1, requires = "mld",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    calm_when_pending: u32,
}

/// What `--mld` follows: the pages written while a checkpoint runs.
struct Checkpoints {
    dev: miglock_dev::Device,
    /// Pages written since the checkpoint started, if one runs.
    written: Option<Vec<bool>>,
    /// Where in a migration we are, as the host told us.
    phase: Phase,
    /// The post-copy notice count when we started.
    postcopy_gen: u32,
    /// Follow the migration's phases (`--stalls`, `--calm-when-pending`).
    timed: bool,
    /// A migration is announced and not in post-copy (called off or
    /// arrived: no longer).
    pending: bool,
}

impl Checkpoints {
    /// Notes a page write.
    fn wrote(&mut self, page: usize) {
        if let Some(w) = self.written.as_mut() {
            w[page] = true;
        }
    }

    /// Reads what the host said since the last look and acts on it.
    fn news(&mut self, out: &mut impl Write, arena: &Arena, tick: u64, gen: u64) -> Result<()> {
        let st = self.dev.status()?;
        if self.timed && self.phase == Phase::Before && st.migration_pending() {
            self.phase = Phase::Pending;
            writeln!(out, "workload: migration pending at tick {tick}")?;
        }
        let pending = st.migration_pending() && self.phase != Phase::Postcopy;
        if self.pending && !pending {
            writeln!(out, "workload: no migration pending at tick {tick}")?;
        }
        self.pending = pending;
        if self.timed && self.phase != Phase::Postcopy && st.postcopy_gen() != self.postcopy_gen {
            self.phase = Phase::Postcopy;
            writeln!(out, "workload: post-copy notice at tick {tick}")?;
        }
        if st.restored() {
            // Memory is as it was when the checkpoint began: say which
            // generation that is, and check it whole.
            self.written = None;
            writeln!(out, "workload: restored at tick {tick} gen {gen}")?;
            report(out, arena, tick, gen)?;
        }
        if st.checkpoint_done() || (self.written.is_some() && !st.checkpoint()) {
            if let Some(w) = self.written.take() {
                let n = w.iter().filter(|&&b| b).count();
                writeln!(
                    out,
                    "workload: checkpoint done at tick {tick} gen {gen}: {n} pages written while it ran"
                )?;
            }
        }
        if st.checkpoint() && self.written.is_none() {
            self.written = Some(vec![false; arena.gens.len()]);
            writeln!(out, "workload: checkpoint started at tick {tick} gen {gen}")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Memory whose contents are a function of (page, generation).
struct Arena {
    mem: Vec<u64>,
    gens: Vec<u64>,
}

impl Arena {
    fn new(pages: usize) -> Self {
        let mut a = Arena {
            mem: vec![0; pages * WORDS],
            gens: vec![0; pages],
        };
        for p in 0..pages {
            a.write(p, 1);
        }
        a
    }

    fn pattern(page: usize, gen: u64, word: usize) -> u64 {
        // Distinct per page, generation and word; cheap to recompute.
        (page as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ gen.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (word as u64)
    }

    fn write(&mut self, page: usize, gen: u64) {
        for (w, slot) in self.mem[page * WORDS..(page + 1) * WORDS]
            .iter_mut()
            .enumerate()
        {
            *slot = Self::pattern(page, gen, w);
        }
        self.gens[page] = gen;
    }

    /// Number of pages whose contents do not match their generation.
    fn bad_pages(&self) -> usize {
        (0..self.gens.len())
            .filter(|&p| {
                self.mem[p * WORDS..(p + 1) * WORDS]
                    .iter()
                    .enumerate()
                    .any(|(w, &v)| v != Self::pattern(p, self.gens[p], w))
            })
            .count()
    }
}

/// What woke [`stdin_line`].
enum Woke {
    /// The timeout passed.
    Timeout,
    /// A line on stdin.
    Line(String),
    /// `/dev/mld` has news.
    Mld,
}

/// Waits up to `timeout` for a line on stdin, or news on `mld`.
fn stdin_line(timeout: Duration, mld: Option<&miglock_dev::Device>) -> Result<Woke> {
    let stdin = io::stdin();
    let ts = Timespec::try_from(timeout)?;
    let mut fds = vec![PollFd::new(&stdin, PollFlags::IN)];
    if let Some(dev) = mld {
        fds.push(PollFd::new(dev, PollFlags::IN));
    }
    if poll(&mut fds, Some(&ts))? == 0 {
        return Ok(Woke::Timeout);
    }
    if fds.get(1).is_some_and(|f| !f.revents().is_empty()) {
        return Ok(Woke::Mld);
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line)? == 0 {
        // EOF: no controller; keep ticking until --ticks.
        std::thread::sleep(timeout);
        return Ok(Woke::Timeout);
    }
    Ok(Woke::Line(line.trim().to_string()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pages = args.mib * 1024 * 1024 / PAGE;
    if pages == 0 || args.dirty_pages > pages {
        bail!("--mib must give at least one page and --dirty-pages at most {pages}");
    }
    let mut arena = Arena::new(pages);
    let hot_pages = match args.hot_mib {
        0 => pages,
        h => h * 1024 * 1024 / PAGE,
    };
    if hot_pages == 0 || hot_pages > pages {
        bail!("--hot-mib must give at least one page and at most --mib");
    }
    let mut mld = match args.mld {
        true => {
            let dev = miglock_dev::Device::open()?;
            let postcopy_gen = dev.status()?.postcopy_gen();
            Some(Checkpoints {
                dev,
                written: None,
                phase: Phase::Before,
                postcopy_gen,
                timed: args.stalls || args.calm_when_pending > 1,
                pending: false,
            })
        }
        false => None,
    };
    let mut stalls = args.stalls.then(Stalls::default);
    let mut rng = args.seed | 1;
    let mut out = io::stdout().lock();
    writeln!(out, "workload: {} pages ready", pages)?;
    let (mut next, mut tick, mut gen) = (0usize, 0u64, 1u64);
    'run: loop {
        gen += 1;
        let phase = mld.as_ref().map_or(Phase::Before, |m| m.phase);
        for _ in 0..args.dirty_pages {
            let page = if args.hot_mib == 0 {
                let p = next;
                next = (next + 1) % pages;
                p
            } else {
                // xorshift64: cheap, and the same pages every run.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % hot_pages as u64) as usize
            };
            match stalls.as_mut() {
                Some(s) => {
                    let t = Instant::now();
                    arena.write(page, gen);
                    s.op(t.elapsed(), phase);
                }
                None => arena.write(page, gen),
            }
            if let Some(m) = mld.as_mut() {
                m.wrote(page);
            }
        }
        writeln!(out, "tick {tick}")?;
        out.flush()?;
        tick += 1;
        if args.ticks != 0 && tick >= args.ticks {
            break;
        }
        // Timed phases follow the host's notices even if the device's
        // poll wakes us for none of them.
        if let Some(m) = mld.as_mut().filter(|m| m.timed) {
            m.news(&mut out, &arena, tick, gen)?;
        }
        // The rest of the tick: news from the host does not shorten it.
        let calm = mld.as_ref().is_some_and(|m| m.pending);
        let period = match calm {
            true => args.tick_ms * u64::from(args.calm_when_pending),
            false => args.tick_ms,
        };
        let until = Instant::now() + Duration::from_millis(period);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match stdin_line(left, mld.as_ref().map(|m| &m.dev))? {
                Woke::Timeout => break,
                Woke::Mld => {
                    if let Some(m) = mld.as_mut() {
                        m.news(&mut out, &arena, tick, gen)?;
                    }
                }
                Woke::Line(l) if l == "finish" => break 'run,
                Woke::Line(l) if l == "verify" => {
                    report(&mut out, &arena, tick, gen)?;
                }
                Woke::Line(_) => {}
            }
        }
    }
    if let Some(s) = &stalls {
        writeln!(out, "{}", s.line())?;
    }
    if !report(&mut out, &arena, tick, gen)? {
        std::process::exit(1);
    }
    Ok(())
}

/// Checks every page and says so in one line; true if all verified.
fn report(out: &mut impl Write, arena: &Arena, tick: u64, gen: u64) -> Result<bool> {
    let pages = arena.gens.len();
    let bad = arena.bad_pages();
    if bad != 0 {
        writeln!(
            out,
            "workload: FAILED: {bad} of {pages} pages corrupted at tick {tick} gen {gen}"
        )?;
    } else {
        writeln!(
            out,
            "workload: verified {pages} pages after {tick} ticks gen {gen}"
        )?;
    }
    out.flush()?;
    Ok(bad == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_corruption() {
        let mut a = Arena::new(8);
        a.write(3, 7);
        assert_eq!(a.bad_pages(), 0);
        a.mem[3 * WORDS + 5] ^= 1;
        assert_eq!(a.bad_pages(), 1);
    }

    #[test]
    fn calming_needs_the_device_and_a_sane_factor() {
        let parse = |a: &[&str]| Args::try_parse_from([&["mlworkload"], a].concat());
        assert!(parse(&["--calm-when-pending", "64"]).is_err());
        assert!(parse(&["--mld", "--calm-when-pending", "0"]).is_err());
        let a = parse(&["--mld", "--calm-when-pending", "64"]).unwrap();
        assert_eq!(a.calm_when_pending, 64);
        assert_eq!(parse(&[]).unwrap().calm_when_pending, 1);
    }
}
