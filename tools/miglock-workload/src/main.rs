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

use anyhow::{bail, Result};
use clap::Parser;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::io::{self, BufRead, Write};
use std::time::Duration;

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

/// Waits up to `timeout` for a line on stdin; `Some(line)` if one came.
fn stdin_line(timeout: Duration) -> Result<Option<String>> {
    let stdin = io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let ts = Timespec::try_from(timeout)?;
    if poll(&mut fds, Some(&ts))? == 0 {
        return Ok(None);
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line)? == 0 {
        // EOF: no controller; keep ticking until --ticks.
        std::thread::sleep(timeout);
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pages = args.mib * 1024 * 1024 / PAGE;
    if pages == 0 || args.dirty_pages > pages {
        bail!("--mib must give at least one page and --dirty-pages at most {pages}");
    }
    let mut arena = Arena::new(pages);
    let mut out = io::stdout().lock();
    writeln!(out, "workload: {} pages ready", pages)?;
    let (mut next, mut tick, mut gen) = (0usize, 0u64, 1u64);
    loop {
        gen += 1;
        for _ in 0..args.dirty_pages {
            arena.write(next, gen);
            next = (next + 1) % pages;
        }
        writeln!(out, "tick {tick}")?;
        out.flush()?;
        tick += 1;
        if args.ticks != 0 && tick >= args.ticks {
            break;
        }
        match stdin_line(Duration::from_millis(args.tick_ms))?.as_deref() {
            Some("finish") => break,
            Some("verify") => {
                report(&mut out, &arena, tick)?;
            }
            _ => {}
        }
    }
    if !report(&mut out, &arena, tick)? {
        std::process::exit(1);
    }
    Ok(())
}

/// Checks every page and says so in one line; true if all verified.
fn report(out: &mut impl Write, arena: &Arena, tick: u64) -> Result<bool> {
    let pages = arena.gens.len();
    let bad = arena.bad_pages();
    if bad != 0 {
        writeln!(
            out,
            "workload: FAILED: {bad} of {pages} pages corrupted at tick {tick}"
        )?;
    } else {
        writeln!(out, "workload: verified {pages} pages after {tick} ticks")?;
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
}
