// SPDX-License-Identifier: GPL-2.0

//! `miglock-tracer`: guest page-access tracer (see `Documentation/tracer.rst`).

use anyhow::{bail, Result};
use clap::Parser;
use miglock_trace::Trace;
use miglock_tracer::cli::{Cli, Cmd};
use miglock_tracer::run::{self, Limit};
use miglock_tracer::{bench, cpu, eval, sampler, show, Roots};
use std::time::Duration;

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
