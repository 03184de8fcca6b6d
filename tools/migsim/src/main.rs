// SPDX-License-Identifier: GPL-2.0

//! `migsim`: simulate live-migration schemes on a page-access trace.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use miglock_trace::Trace;
use migsim::gen::{generate, GenParams, Workload};
use migsim::report::{charts, rsttable_caption, RunReport, TraceInfo};
use migsim::units::{parse_duration, parse_rate, parse_size};
use migsim::{model, Config, Hints, Scheme};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "migsim",
    version,
    about = "Trace-driven simulator of VM live-migration schemes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate schemes on one trace.
    Run(RunArgs),
    /// Write a synthetic workload trace.
    Gen(GenArgs),
    /// Measure simulator speed (page events per second, one core).
    Bench(BenchArgs),
    /// An RST table comparing all schemes on several traces.
    Report(ReportArgs),
    /// Compare real QEMU migrations (NAME.real.json) with simulations of
    /// their traces (NAME.mltrace).
    Validate(ValidateArgs),
}

#[derive(Args)]
struct ValidateArgs {
    /// Directory of NAME.mltrace + NAME.real.json pairs.
    #[arg(long)]
    real: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the RST table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the text between the migsim-validation markers of this RST
    /// document with the table.
    #[arg(long)]
    splice: Option<PathBuf>,
    /// Bytes of header per page on the wire (QEMU: 8).
    #[arg(long, default_value_t = 8)]
    page_header: u32,
    /// No progress messages on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemeSel {
    All,
    PrecopyClark,
    PrecopyQemu,
    Postcopy,
    PostcopyPrepaging,
    Lazy,
    Cow,
}

/// Link and scheme parameters shared by `run` and `report`.
#[derive(Args, Clone)]
struct SimArgs {
    /// Link bandwidth (1Gbit, 10Gbit/s, 125MB/s, ...).
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    bandwidth: f64,
    /// One-way link latency (0.1ms, 50us, ...).
    #[arg(long, default_value = "0.1ms", value_parser = parse_duration)]
    latency: f64,
    /// Bytes of header per page on the wire (QEMU: 8); a zero page costs
    /// the header plus one byte.
    #[arg(long, default_value_t = 8)]
    page_header: u32,
    /// Frames all-zero at migration start, sent as a header only: taken
    /// as the highest-numbered frames the trace never touches (at most
    /// that many exist).
    #[arg(long, default_value_t = 0)]
    zero_pages: u64,
    /// Migration start in trace seconds [default: a quarter into the trace,
    /// so lazy-copy has history to learn hints from].
    #[arg(long)]
    start_at: Option<f64>,
    /// QEMU pre-copy: downtime-limit.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    downtime_limit: f64,
    /// QEMU pre-copy: max-bandwidth [default: the link].
    #[arg(long, value_parser = parse_rate)]
    max_bandwidth: Option<f64>,
    /// QEMU pre-copy: iterations before declaring non-convergence.
    #[arg(long, default_value_t = 30)]
    max_iterations: u32,
    /// QEMU pre-copy: migration time before declaring non-convergence.
    #[arg(long, value_parser = parse_duration)]
    max_time: Option<f64>,
    /// Clark pre-copy: first-round rate.
    #[arg(long, default_value = "100Mbit", value_parser = parse_rate)]
    clark_min_rate: f64,
    /// Clark pre-copy: added to the last round's dirtying rate.
    #[arg(long, default_value = "50Mbit", value_parser = parse_rate)]
    clark_increment: f64,
    /// Clark pre-copy: stop when this little is dirty (the WWS threshold).
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    wws_threshold: u64,
    /// Clark pre-copy: maximum rounds.
    #[arg(long, default_value_t = 30)]
    max_rounds: u32,
    /// Post-copy schemes: one pre-copy pass before switching.
    #[arg(long)]
    precopy_first: bool,
    /// Pre-paging: pages pushed each way around a fault.
    #[arg(long, default_value_t = 4096)]
    prepage_window: u64,
    /// Post-copy schemes: "qemu" (the bandwidth's share per rate window,
    /// a requested page first in the next window, the sweep on after it:
    /// QEMU's post-copy) or "hines" (a steady push; a fault costs a round
    /// trip and the page).
    #[arg(long, default_value = "qemu", value_parser = postcopy_style)]
    postcopy_style: migsim::postcopy::PostcopyStyle,
    /// Post-copy, qemu style: the rate limiter's window (QEMU: 100ms).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    rate_window: f64,
    /// Post-copy, qemu style: the order of an interval's touches,
    /// "shuffled" or "address".
    #[arg(long, default_value = "shuffled", value_parser = touch_order)]
    touch_order: migsim::postcopy::TouchOrder,
    /// Lazy-copy hints: "history" (learned before the start), "oracle"
    /// (perfect, not causal: an upper bound), or a hint file.
    #[arg(long, default_value = "history")]
    hints: String,
    /// Lazy-copy history hints: samples looked at (1 to 100).
    #[arg(long, default_value_t = 32)]
    hint_window: usize,
    /// CoW checkpoint: pause to write-protect memory.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    cow_pause: f64,
    /// CoW checkpoint: how long a write to a page not yet saved blocks
    /// (qemu: at least this, and until the page is on the link; the
    /// default is of the order measured on real QEMU checkpoints;
    /// copy-aside: the trap and a local copy, about 2us).
    #[arg(long, default_value = "500us", value_parser = parse_duration)]
    cow_fault_cost: f64,
    /// CoW checkpoint: "qemu" (the faulting page goes onto the link first
    /// and the scan goes on from it: QEMU's background snapshot) or
    /// "copy-aside" (copied locally, the scan keeps its order: the paper's).
    #[arg(long, default_value = "qemu", value_parser = cow_style)]
    cow_style: migsim::cow::CowStyle,
    /// No progress messages on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The trace (.mltrace).
    #[arg(long)]
    trace: PathBuf,
    /// Schemes to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scheme: Vec<SchemeSel>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write bytes.svg and faults.svg into this directory.
    #[arg(long)]
    svg: Option<PathBuf>,
    #[command(flatten)]
    sim: SimArgs,
}

#[derive(Args)]
struct GenArgs {
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Guest memory (1GiB, 512MiB, ...).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    mem: u64,
    /// Seconds of trace.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Sampling interval.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    /// Guest memory of the benchmark VM.
    #[arg(long, default_value = "64GiB", value_parser = parse_size)]
    mem: u64,
    /// Seconds of generated trace.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Workload of the generated trace.
    #[arg(long, value_enum, default_value = "write-heavy")]
    workload: Workload,
    /// Link bandwidth.
    #[arg(long, default_value = "10Gbit", value_parser = parse_rate)]
    bandwidth: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// Trace files, or directories of *.mltrace files.
    #[arg(long, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// Also generate and include the idle, read-mostly and write-heavy
    /// synthetic workloads.
    #[arg(long)]
    synthetic: bool,
    /// Synthetic workloads: guest memory.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    mem: u64,
    /// Synthetic workloads: seconds of trace.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the table between the migsim-results markers of this RST
    /// document.
    #[arg(long)]
    splice: Option<PathBuf>,
    #[command(flatten)]
    sim: SimArgs,
}

impl SimArgs {
    fn config(&self) -> Result<Config> {
        let hints = match self.hints.as_str() {
            "history" => Hints::History {
                window: self.hint_window.clamp(1, 100),
            },
            "oracle" => Hints::Oracle,
            path => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--hints: reading {path}"))?;
                Hints::List(
                    migsim::lazy::parse_hints(&text)
                        .map_err(|e| anyhow::anyhow!("--hints {path}: {e}"))?,
                )
            }
        };
        Ok(Config {
            link: model::Link {
                bandwidth: self.bandwidth,
                latency: self.latency,
            },
            wire: model::Wire {
                page_header: self.page_header,
                zero_pages: self.zero_pages,
            },
            start_at: self.start_at,
            clark: migsim::precopy::ClarkConfig {
                min_rate: self.clark_min_rate,
                increment: self.clark_increment,
                wws_threshold: self.wws_threshold,
                max_rounds: self.max_rounds.max(1),
                ..Default::default()
            },
            qemu: migsim::precopy::QemuConfig {
                max_bandwidth: self.max_bandwidth,
                downtime_limit: self.downtime_limit,
                max_iterations: self.max_iterations.max(1),
                max_time: self.max_time,
            },
            postcopy: migsim::postcopy::PostcopyConfig {
                precopy_first: self.precopy_first,
                window: self.prepage_window,
                style: self.postcopy_style,
                rate_window: self.rate_window,
                touch_order: self.touch_order,
                ..Default::default()
            },
            hints,
            cow: migsim::cow::CowConfig {
                pause: self.cow_pause,
                fault_cost: self.cow_fault_cost,
                style: self.cow_style,
            },
            progress: !self.quiet,
        })
    }
}

fn postcopy_style(s: &str) -> Result<migsim::postcopy::PostcopyStyle, String> {
    match s {
        "qemu" => Ok(migsim::postcopy::PostcopyStyle::Qemu),
        "hines" => Ok(migsim::postcopy::PostcopyStyle::Hines),
        _ => Err(format!("unknown post-copy style '{s}' (qemu or hines)")),
    }
}

fn touch_order(s: &str) -> Result<migsim::postcopy::TouchOrder, String> {
    match s {
        "shuffled" => Ok(migsim::postcopy::TouchOrder::Shuffled),
        "address" => Ok(migsim::postcopy::TouchOrder::Address),
        _ => Err(format!("unknown touch order '{s}' (shuffled or address)")),
    }
}

fn cow_style(s: &str) -> Result<migsim::cow::CowStyle, String> {
    match s {
        "qemu" => Ok(migsim::cow::CowStyle::Qemu),
        "copy-aside" => Ok(migsim::cow::CowStyle::CopyAside),
        _ => Err(format!("unknown CoW style '{s}' (qemu or copy-aside)")),
    }
}

fn open_trace(path: &Path) -> Result<Trace> {
    let t = Trace::open(path).with_context(|| format!("{}", path.display()))?;
    if !t.complete {
        eprintln!(
            "migsim: warning: {} has no end record (its writer did not finish); using its {} samples",
            path.display(),
            t.samples.len()
        );
    }
    Ok(t)
}

fn simulate_all(name: &str, trace: &Trace, schemes: &[Scheme], cfg: &Config) -> Result<RunReport> {
    let start = model::start_point(trace, cfg.start_at).with_context(|| name.to_string())?;
    let mut results = Vec::new();
    for &s in schemes {
        results.push(
            migsim::simulate(trace, s, cfg).with_context(|| format!("{name}: {}", s.name()))?,
        );
    }
    let h = &trace.header;
    Ok(RunReport {
        trace: TraceInfo {
            name: name.to_string(),
            page_size: h.page_size,
            pfn_limit: h.pfn_limit,
            memory_bytes: h.memory_bytes(),
            samples: trace.samples.len(),
            duration_s: trace.samples.last().map_or(0, |s| s.t_us) as f64 / 1e6,
            complete: trace.complete,
        },
        bandwidth_bytes_per_s: cfg.link.bandwidth,
        latency_s: cfg.link.latency,
        start_at_s: start.at_s,
        results,
    })
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let cfg = a.sim.config()?;
    let trace = open_trace(&a.trace)?;
    let schemes: Vec<Scheme> = if a.scheme.contains(&SchemeSel::All) {
        Scheme::ALL.to_vec()
    } else {
        let mut v: Vec<Scheme> = Vec::new();
        for s in &a.scheme {
            let s = match s {
                SchemeSel::All => continue,
                SchemeSel::PrecopyClark => Scheme::PrecopyClark,
                SchemeSel::PrecopyQemu => Scheme::PrecopyQemu,
                SchemeSel::Postcopy => Scheme::Postcopy,
                SchemeSel::PostcopyPrepaging => Scheme::PostcopyPrepaging,
                SchemeSel::Lazy => Scheme::Lazy,
                SchemeSel::Cow => Scheme::Cow,
            };
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    };
    let rep = simulate_all(&a.trace.display().to_string(), &trace, &schemes, &cfg)?;
    if let Some(dir) = &a.svg {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--svg: creating {}", dir.display()))?;
        for (stem, svg) in charts(&rep) {
            let p = dir.join(format!("{stem}.svg"));
            std::fs::write(&p, svg).with_context(|| format!("--svg: writing {}", p.display()))?;
            if !a.json {
                eprintln!("migsim: wrote {}", p.display());
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", migsim::report::text(&rep));
    }
    Ok(())
}

fn cmd_gen(a: GenArgs) -> Result<()> {
    if !(a.interval > 0.0 && a.interval < 1e6) {
        bail!("--interval must be above zero");
    }
    let t = generate(&GenParams {
        workload: a.workload,
        mem: a.mem,
        seconds: a.seconds,
        interval_us: ((a.interval * 1e6).round() as u64).max(1),
        seed: a.seed,
    })
    .map_err(anyhow::Error::msg)?;
    let f = std::fs::File::create(&a.out)
        .with_context(|| format!("--out: creating {}", a.out.display()))?;
    t.write(std::io::BufWriter::new(f))
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "migsim: wrote {} ({} workload, {}, {} samples)",
        a.out.display(),
        a.workload.name(),
        migsim::units::fmt_bytes(a.mem),
        t.samples.len()
    );
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let cfg = Config {
        link: model::Link {
            bandwidth: a.bandwidth,
            ..Default::default()
        },
        ..Default::default()
    };
    let rep = migsim::bench::run(a.mem, a.seconds, a.workload, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    println!(
        "bench: {} VM ({} pages), {} workload, {} s trace (generated in {:.2} s), link {:.0} Gbit/s, one core\n",
        migsim::units::fmt_bytes(rep.mem),
        rep.mem / 4096,
        rep.workload,
        rep.trace_seconds,
        rep.gen_wall_s,
        a.bandwidth * 8.0 / 1e9
    );
    let rows: Vec<Vec<String>> = rep
        .rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{:.1}", r.simulated_s),
                format!("{:.3}", r.wall_s),
                format!("{:.1}", r.page_events as f64 / 1e6),
                format!("{:.0}", r.events_per_s / 1e6),
            ]
        })
        .collect();
    print!(
        "{}",
        migsim::report::table(
            &rows,
            &["scheme", "simulated s", "wall s", "Mevents", "Mevents/s"]
        )
    );
    Ok(())
}

fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("--traces: reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "mltrace"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn cmd_report(a: ReportArgs) -> Result<()> {
    let cfg = a.sim.config()?;
    let files = trace_files(&a.traces)?;
    if files.is_empty() && !a.synthetic {
        bail!("nothing to report: give --traces or --synthetic");
    }
    let mut reports = Vec::new();
    if a.synthetic {
        for w in [Workload::Idle, Workload::ReadMostly, Workload::WriteHeavy] {
            let t = generate(&GenParams {
                workload: w,
                mem: a.mem,
                seconds: a.seconds,
                interval_us: 100_000,
                seed: 1,
            })
            .map_err(anyhow::Error::msg)?;
            let name = format!(
                "synthetic {} ({})",
                w.name(),
                migsim::units::fmt_bytes(a.mem)
            );
            reports.push(simulate_all(&name, &t, &Scheme::ALL, &cfg)?);
        }
    }
    for f in &files {
        let t = open_trace(f)?;
        // A real run recorded beside the trace sets the link, start and
        // zero pages, so the rows match `migsim validate`.
        let (name, cfg) = match migsim::validate::real_beside(f)? {
            Some(real) => (
                format!(
                    "{} ({:.1} MiB/s, {} zero pages)",
                    f.display(),
                    real.bandwidth_bytes_per_s / (1u64 << 20) as f64,
                    real.zero_pages
                ),
                migsim::validate::config_for(&real, &cfg),
            ),
            None => (f.display().to_string(), cfg.clone()),
        };
        reports.push(simulate_all(&name, &t, &Scheme::ALL, &cfg)?);
    }
    let caption = rsttable_caption(&reports, a.synthetic, a.seconds);
    let table = migsim::report::rst(&reports, &caption);
    if let Some(out) = &a.out {
        std::fs::write(out, &table).with_context(|| format!("--out: writing {}", out.display()))?;
    }
    if let Some(doc) = &a.splice {
        let text = std::fs::read_to_string(doc)
            .with_context(|| format!("--splice: reading {}", doc.display()))?;
        let new = migsim::report::splice(&text, &table)
            .map_err(|e| anyhow::anyhow!("--splice {}: {e}", doc.display()))?;
        std::fs::write(doc, new).with_context(|| format!("--splice: writing {}", doc.display()))?;
    }
    if a.out.is_none() && a.splice.is_none() {
        print!("{table}");
    }
    Ok(())
}

fn cmd_validate(a: ValidateArgs) -> Result<()> {
    let base = Config {
        wire: model::Wire {
            page_header: a.page_header,
            zero_pages: 0,
        },
        progress: !a.quiet,
        ..Default::default()
    };
    let mut runs = Vec::new();
    for (name, trace, real) in migsim::validate::pairs(&a.real).context("--real")? {
        runs.push((name, trace, migsim::validate::RealRun::load(&real)?));
    }
    let mut rows = Vec::new();
    for (name, trace, r) in &runs {
        let t = open_trace(trace)?;
        rows.push(migsim::validate::compare(name, &t, r, &base)?);
    }
    let table = migsim::validate::rst(&rows);
    if let Some(out) = &a.out {
        std::fs::write(out, &table).with_context(|| format!("--out: writing {}", out.display()))?;
    }
    if let Some(doc) = &a.splice {
        let text = std::fs::read_to_string(doc)
            .with_context(|| format!("--splice: reading {}", doc.display()))?;
        let new = migsim::report::splice_between(&text, &table, migsim::validate::MARKERS)
            .map_err(|e| anyhow::anyhow!("--splice {}: {e}", doc.display()))?;
        std::fs::write(doc, new).with_context(|| format!("--splice: writing {}", doc.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", migsim::validate::text(&rows));
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Gen(a) => cmd_gen(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Report(a) => cmd_report(a),
        Cmd::Validate(a) => cmd_validate(a),
    };
    if let Err(e) = r {
        eprintln!("migsim: error: {e:#}");
        std::process::exit(1);
    }
}
