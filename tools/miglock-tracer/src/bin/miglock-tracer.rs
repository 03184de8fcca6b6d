// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer`: guest page-access tracer (see `Documentation/tracer.rst`).

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use miglock_abi::types::MLD_MAX_HINTS;
use miglock_trace::Trace;
use miglock_tracer::run::{self, Limit};
use miglock_tracer::{bench, cpu, eval, sampler, show, Roots};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    about = "Guest page-access tracer: hot frames, dirty rate, hints to /dev/mld, post-copy prefetch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn max_hints(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MLD_MAX_HINTS as usize => Ok(n),
        _ => Err(format!("must be a number from 0 to {MLD_MAX_HINTS}")),
    }
}

fn idle_share(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a number of parts, 1 or more (1: the whole bitmap every sample)".into()),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Sample, model, send hints, optionally record a trace.
    Run(RunArgs),
    /// Summarize a trace file.
    Show {
        /// The .mltrace file.
        file: PathBuf,
    },
    /// Precision and recall of a trace's hot set against known hot PFNs.
    Eval {
        /// The .mltrace file.
        #[arg(long)]
        trace: PathBuf,
        /// Truly hot PFNs, one decimal per line (mlwset --truth).
        #[arg(long)]
        truth: PathBuf,
        /// Only count found pages among these PFNs (mlwset --all-pfns).
        #[arg(long)]
        universe: Option<PathBuf>,
        /// Hot set = pages accessed in the last N samples.
        #[arg(long, default_value_t = 3)]
        last: usize,
        /// Fail (exit 1) below this precision.
        #[arg(long, default_value_t = 0.0)]
        min_precision: f64,
        /// Fail (exit 1) below this recall.
        #[arg(long, default_value_t = 0.0)]
        min_recall: f64,
    },
    /// User-space CPU cost of the model and ranking on synthetic data.
    Bench {
        /// Frames (262144 = 1 GiB of 4 KiB pages).
        #[arg(long, default_value_t = 262144)]
        frames: u64,
        /// Share of frames in the working set.
        #[arg(long, default_value_t = 0.25)]
        wss_fraction: f64,
        /// Samples to time.
        #[arg(long, default_value_t = 50)]
        samples: u32,
        /// Hint ranges per batch.
        #[arg(long, default_value_t = 1024)]
        max_hints: usize,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// Write each sample to this trace file.
    #[arg(long, value_name = "FILE.mltrace")]
    record: Option<PathBuf>,
    /// Send hint batches to /dev/mld (default).
    #[arg(long, overrides_with = "no_hints")]
    hints: bool,
    /// Don't send hints.
    #[arg(long)]
    no_hints: bool,
    /// Scan only these processes for soft-dirty pages (default: all).
    #[arg(long = "pid", value_name = "PID", num_args = 1.., action = clap::ArgAction::Append)]
    pids: Vec<u32>,
    /// Touch the hot pages when the host announces post-copy.
    #[arg(long, overrides_with = "no_prefetch")]
    prefetch: bool,
    /// Don't prefetch (default).
    #[arg(long)]
    no_prefetch: bool,
    /// Stop after this long.
    #[arg(long, value_parser = duration, conflicts_with = "samples")]
    duration: Option<Duration>,
    /// Stop after this many samples.
    #[arg(long)]
    samples: Option<u64>,
    /// Most hint ranges per batch.
    #[arg(long, default_value_t = MLD_MAX_HINTS as usize, value_parser = max_hints)]
    max_hints: usize,
    /// No per-sample lines.
    #[arg(long)]
    quiet: bool,
    /// Working set = frames accessed in the last K samples (1-8).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=8))]
    wss_samples: u8,
    /// Read and re-mark one N-th of the idle bitmap per sample, in turn
    /// (every frame once per N samples; about N times less kernel time).
    #[arg(long, default_value_t = 1, value_parser = idle_share)]
    idle_share: u32,
    /// Read /proc/kpageflags (which frames are LRU) every N samples.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    lru_refresh: u32,
    /// Most frames in the prefetch reverse map (24 bytes each).
    #[arg(long, default_value_t = 262144)]
    rmap_cap: usize,
    #[arg(long, hide = true, default_value = "/sys")]
    sysfs_root: PathBuf,
    #[arg(long, hide = true, default_value = "/proc")]
    procfs_root: PathBuf,
    #[arg(long, hide = true, default_value = miglock_dev::DEVICE)]
    device: PathBuf,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("miglock-tracer: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => {
            let cfg = run::Config {
                sampler: sampler::Config {
                    roots: Roots {
                        procfs: a.procfs_root,
                        sysfs: a.sysfs_root,
                    },
                    pids: a.pids,
                    lru_refresh: a.lru_refresh,
                    rmap_cap: a.rmap_cap,
                    wss_samples: a.wss_samples,
                    idle_share: a.idle_share,
                },
                interval: a.interval,
                record: a.record,
                hints: !a.no_hints,
                prefetch: a.prefetch && !a.no_prefetch,
                device: a.device,
                limit: match (a.duration, a.samples) {
                    (Some(d), _) => Limit::Duration(d),
                    (_, Some(n)) => Limit::Samples(n),
                    _ => Limit::None,
                },
                max_hints: a.max_hints,
                quiet: a.quiet,
            };
            run::run(cfg).map(drop)
        }
        Cmd::Show { file } => {
            let s = show::summarize_file(&file)?;
            println!("trace {}", file.display());
            println!("{s}");
            Ok(())
        }
        Cmd::Eval {
            trace,
            truth,
            universe,
            last,
            min_precision,
            min_recall,
        } => {
            let t = Trace::open(&trace).map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
            let truth = eval::read_pfns(&truth)?;
            let uni = universe.as_deref().map(eval::read_pfns).transpose()?;
            let hot = eval::hot_set(&t, last);
            let s = eval::score(&hot, &truth, uni.as_deref())?;
            println!("{s}");
            if s.precision < min_precision || s.recall < min_recall {
                bail!(
                    "below the thresholds (precision >= {min_precision}, recall >= {min_recall})"
                );
            }
            Ok(())
        }
        Cmd::Bench {
            frames,
            wss_fraction,
            samples,
            max_hints,
        } => {
            let o = bench::run(bench::Params {
                frames,
                wss_fraction,
                dirty_fraction: 0.1,
                samples,
                max_hints,
                seed: 42,
            });
            println!(
                "bench: {frames} frames ({} MiB), working set {} frames, {} hint ranges, {} trace bytes/sample",
                (frames * 4096) >> 20,
                o.wss,
                o.hint_ranges,
                o.trace_bytes_per_sample
            );
            println!(
                "bench: cpu {:.3} ms per sample (wall {:.3} ms) over {samples} samples = {:.3}% of one CPU at interval 1s",
                o.cpu_per_sample.as_secs_f64() * 1e3,
                o.wall_per_sample.as_secs_f64() * 1e3,
                cpu::percent_of_cpu(o.cpu_per_sample, Duration::from_secs(1))
            );
            Ok(())
        }
    }
}
