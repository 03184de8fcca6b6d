// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer`'s command line (here, not in the binary, so that its
//! man page and shell completions are generated from it).

use clap::{Parser, Subcommand};
use miglock_abi::types::MLD_MAX_HINTS;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "miglock-tracer",
    version,
    about = "Guest page-access tracer: hot frames, dirty rate, hints to /dev/mld, post-copy prefetch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
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

#[derive(Subcommand, Debug)]
pub enum Cmd {
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

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// Write each sample to this trace file.
    #[arg(long, value_name = "FILE.mltrace")]
    pub record: Option<PathBuf>,
    /// Send hint batches to /dev/mld (default).
    #[arg(long, overrides_with = "no_hints")]
    pub hints: bool,
    /// Don't send hints.
    #[arg(long)]
    pub no_hints: bool,
    /// Scan only these processes for soft-dirty pages (default: all).
    #[arg(long = "pid", value_name = "PID", num_args = 1.., action = clap::ArgAction::Append)]
    pub pids: Vec<u32>,
    /// Touch the hot pages when the host announces post-copy.
    #[arg(long, overrides_with = "no_prefetch")]
    pub prefetch: bool,
    /// Don't prefetch (default).
    #[arg(long)]
    pub no_prefetch: bool,
    /// Stop after this long.
    #[arg(long, value_parser = duration, conflicts_with = "samples")]
    pub duration: Option<Duration>,
    /// Stop after this many samples.
    #[arg(long)]
    pub samples: Option<u64>,
    /// Most hint ranges per batch.
    #[arg(long, default_value_t = MLD_MAX_HINTS as usize, value_parser = max_hints)]
    pub max_hints: usize,
    /// No per-sample lines.
    #[arg(long)]
    pub quiet: bool,
    /// Working set = frames accessed in the last K samples (1-8).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub wss_samples: u8,
    /// Read and re-mark one N-th of the idle bitmap per sample, in turn
    /// (every frame once per N samples; about N times less kernel time).
    #[arg(long, default_value_t = 1, value_parser = idle_share)]
    pub idle_share: u32,
    /// Read /proc/kpageflags (which frames are LRU) every N samples.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub lru_refresh: u32,
    /// Most frames in the prefetch reverse map (24 bytes each).
    #[arg(long, default_value_t = 262144)]
    pub rmap_cap: usize,
    #[arg(long, hide = true, default_value = "/sys")]
    pub sysfs_root: PathBuf,
    #[arg(long, hide = true, default_value = "/proc")]
    pub procfs_root: PathBuf,
    #[arg(long, hide = true, default_value = miglock_dev::DEVICE)]
    pub device: PathBuf,
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
