// SPDX-License-Identifier: GPL-2.0

//! `miglock-harness`: runs miglock's guest scenarios in QEMU.
//!
//! It builds what the guest needs (module variants, static guest binaries,
//! initramfs), boots each scenario under a deadline, keeps every log under
//! `out/scenarios/<name>/`, and ends with `harness: N passed, N failed`.

mod accel;
mod advice;
mod agentdemo;
mod artifacts;
mod bench;
mod blocker;
mod checkpoint;
mod initramfs;
mod ktap;
mod libvirt;
mod locking;
mod pair;
mod paused;
mod scenario;
mod stubhost;
mod stuckguest;
mod survival;
mod uffdfaults;
mod vm;

use anyhow::{bail, Context, Result};
use artifacts::{Paths, Variant};
use clap::{Parser, Subcommand};
use scenario::{Env, Expect, SCENARIOS};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Parser)]
#[command(version, about = "Run miglock's guest scenarios in QEMU")]
struct Cli {
    /// Kernel build directory (default: the cached test kernel).
    #[arg(long, env = "KDIR", global = true)]
    kdir: Option<PathBuf>,
    /// Where logs and images go.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    accel: accel::Choice,
    /// Echo guest serial output while it runs.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The QEMU to run guests with (default: the system's; `scripts/qemu.sh
    /// 7.2` prints the path of Debian 12's QEMU kept beside it).
    #[arg(
        long,
        env = "MIGLOCK_QEMU",
        default_value = "qemu-system-x86_64",
        global = true
    )]
    qemu: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run scenarios (all of them when none is named).
    Run {
        /// Scenario names.
        names: Vec<String>,
    },
    /// The demo: load the module in a guest, live-migrate a locked then
    /// unlocked guest, meet the lock from another QMP client and from
    /// `virsh migrate`, and let the guest's hints plan a hard migration.
    Demo,
    /// Soak: many migrations of writing guests in every mode the planner
    /// may choose; every guest must arrive alive and whole. Results in
    /// `out/soak/result.json`.
    Soak {
        /// Stop after this many migrations...
        #[arg(long, default_value_t = 100)]
        migrations: usize,
        /// ...or after this long (the running migration finishes).
        #[arg(long, default_value = "25m", value_parser = humantime::parse_duration)]
        budget: std::time::Duration,
        /// Only these workloads (idle, half-link, link-rate, write-heavy).
        #[arg(long, value_delimiter = ',')]
        workload: Vec<String>,
        /// Only guests with (true) or without (false) the module.
        #[arg(long)]
        module: Option<bool>,
        /// Only guests with this many vCPUs.
        #[arg(long)]
        cpus: Option<u32>,
        /// The modes each chain cycles through, in this order, repeats
        /// allowed (precopy, postcopy, precopy-then-postcopy, auto).
        #[arg(long, value_delimiter = ',')]
        modes: Vec<String>,
        /// Migrations per boot of a guest.
        #[arg(long, default_value_t = 4)]
        chain: usize,
        /// Let each guest's workload run this long before its first
        /// migration (a source QEMU that has run a while).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        warmup: std::time::Duration,
        /// Let the agents run modes they fence on this QEMU (pre-copy on
        /// QEMU 7.2 under TCG): to reproduce what the fence prevents.
        #[arg(long)]
        allow_fenced: bool,
        /// Cap every post-copy phase at this many bytes/s (K/M/G suffix),
        /// 0 for none (`miglockctl migrate --postcopy-bandwidth`; default:
        /// the agent's choice, which on QEMU before 10.0 caps the hybrid's
        /// at the link).
        #[arg(long)]
        postcopy_bandwidth: Option<String>,
    },
}

pub(crate) fn top() -> PathBuf {
    // tests/harness -> repository root.
    std::env::var_os("MIGLOCK_TOP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn paths(cli: &Cli) -> Result<Paths> {
    let top = top().canonicalize().context("locating the repository")?;
    let kdir = match &cli.kdir {
        Some(k) => k.clone(),
        None => {
            let out = Command::new(top.join("scripts/kernel.sh"))
                .arg("kdir")
                .output()?;
            PathBuf::from(String::from_utf8(out.stdout)?.trim())
        }
    };
    if !kdir.join("arch/x86/boot/bzImage").exists() {
        bail!(
            "no built kernel at {} (run 'make kernel' or pass --kdir)",
            kdir.display()
        );
    }
    let out = cli.out.clone().unwrap_or_else(|| top.join("out"));
    std::fs::create_dir_all(out.join("build"))?;
    Ok(Paths { top, kdir, out })
}

/// Builds what `scenarios` boot with: one initramfs per module variant.
fn prepare(p: &Paths, scenarios: &[&scenario::Scenario]) -> Result<HashMap<Variant, PathBuf>> {
    eprintln!("harness: building static guest binaries");
    let bins = artifacts::guest_binaries(p)?;
    let mut images = HashMap::new();
    for sc in scenarios {
        if images.contains_key(&sc.variant) {
            continue;
        }
        eprintln!(
            "harness: building miglock.ko ({}) and its initramfs",
            sc.variant.name()
        );
        let ko = artifacts::module(p, sc.variant)?;
        images.insert(sc.variant, artifacts::initramfs(p, &ko, &bins, sc.variant)?);
    }
    Ok(images)
}

/// The accelerator for this run (`--accel auto` probes KVM once).
fn resolve_accel(
    cli: &Cli,
    p: &Paths,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
) -> vm::Accel {
    let probe_env = Env {
        kernel,
        initrd,
        dir: p.out.join("scenarios/kvm-probe"),
        accel: vm::Accel::Tcg,
        qemu: &cli.qemu,
        echo: vm::Echo::Off,
    };
    accel::resolve(cli.accel, &probe_env)
}

/// `soak`: the survival plan at length, results in `out/soak/`.
fn soak(cli: &Cli, plan: survival::Plan) -> Result<bool> {
    let p = paths(cli)?;
    let sc = SCENARIOS
        .iter()
        .find(|s| s.name == "migrate-survival")
        .context("no migrate-survival scenario")?;
    let images = prepare(&p, &[sc])?;
    let kernel = p.bzimage();
    let initrd = &images[&sc.variant];
    let accel = resolve_accel(cli, &p, &kernel, initrd);
    let dir = p.out.join("soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "harness: soak: up to {} migrations or {} in {} chains (logs and result.json in {})",
        plan.migrations,
        humantime::format_duration(plan.budget),
        plan.groups.len(),
        dir.display()
    );
    let env = Env {
        kernel: &kernel,
        initrd,
        dir: dir.clone(),
        accel,
        qemu: &cli.qemu,
        echo: if cli.verbose {
            vm::Echo::All
        } else {
            vm::Echo::Off
        },
    };
    match survival::run(&plan, &env, &dir) {
        Ok(()) => {
            println!(
                "harness: soak passed; {}",
                dir.join("result.json").display()
            );
            Ok(true)
        }
        Err(f) => {
            println!("harness: soak FAILED: {f}");
            Ok(false)
        }
    }
}

fn run(cli: &Cli, names: &[String], demo: bool) -> Result<bool> {
    let p = paths(cli)?;
    let selected: Vec<&scenario::Scenario> = if names.is_empty() {
        // Benchmarks measure, they do not test: only when named.
        SCENARIOS
            .iter()
            .filter(|s| {
                !matches!(
                    s.kind,
                    scenario::Kind::Bench
                        | scenario::Kind::GuestBench
                        | scenario::Kind::AdviceBench(_)
                )
            })
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                SCENARIOS.iter().find(|s| s.name == n).with_context(|| {
                    let all: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                    format!("no scenario '{n}'; known: {}", all.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let images = prepare(&p, &selected)?;
    let kernel = p.bzimage();
    let accel = resolve_accel(cli, &p, &kernel, &images[&selected[0].variant]);

    let (mut passed, mut failed) = (0, 0);
    let mut shown = Vec::new();
    for (i, sc) in selected.iter().enumerate() {
        let dir = p.out.join("scenarios").join(sc.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if demo {
            eprintln!(
                "\n── step {} of {}: {} ──",
                i + 1,
                selected.len(),
                demo_step(sc.name).0
            );
        }
        eprintln!("harness: RUN  {} — {}", sc.name, sc.about);
        let env = Env {
            kernel: &kernel,
            initrd: &images[&sc.variant],
            dir,
            accel,
            qemu: &cli.qemu,
            echo: match (cli.verbose, demo) {
                (true, _) => vm::Echo::All,
                (false, true) => vm::Echo::Story,
                _ => vm::Echo::Off,
            },
        };
        let t0 = Instant::now();
        let result = scenario::run(sc, &env);
        let secs = t0.elapsed().as_secs_f64();
        let verdict = match (sc.expect, &result) {
            (Expect::Pass, Ok(())) => Ok(String::new()),
            (Expect::Pass, Err(f)) => Err(f.to_string()),
            (Expect::Fail(kind), Err(f)) if f.kind == kind => {
                Ok(format!(" — failed as it must: {f}"))
            }
            (Expect::Fail(kind), Err(f)) => Err(format!("expected a {kind:?} failure, got {f}")),
            (Expect::Fail(kind), Ok(())) => {
                Err(format!("expected a {kind:?} failure, but it passed"))
            }
        };
        match verdict {
            Ok(note) => {
                passed += 1;
                shown.push((sc.name, true));
                eprintln!("harness: PASS {} ({secs:.1} s){note}", sc.name);
            }
            Err(why) => {
                failed += 1;
                shown.push((sc.name, false));
                eprintln!("harness: FAIL {} ({secs:.1} s): {why}", sc.name);
            }
        }
    }
    if demo {
        eprintln!("\n── what the demo showed ──");
        for (name, ok) in &shown {
            let mark = if *ok { "shown" } else { "NOT shown (failed)" };
            eprintln!("  {mark}: {}", demo_step(name).1);
        }
        eprintln!(
            "  every step's guest console, QMP traffic and audit logs: {}/<step>/",
            p.out.join("scenarios").display()
        );
    }
    println!("harness: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The demo's steps: a heading, and what a passing step has shown.
fn demo_step(name: &str) -> (&'static str, &'static str) {
    match name {
        "demo" => (
            "the guest module and the lock, inside one VM",
            "miglock.ko loads (its KUnit suite passes), an application locks around its work, set_migration_flag 0|1 as in the paper",
        ),
        "agent-migrate" => (
            "two hosts, each with miglockd: a locked VM is not migrated",
            "miglockctl migrate of a locked VM is refused with the lock's reason; after the unlock the VM migrates and runs on, verified, on the destination",
        ),
        "blocker-any-initiator" => (
            "any QMP client is bound by the lock, not only our CLI",
            "the lock is QEMU's own migration blocker: another client's migrate fails naming it, and succeeds after the unlock",
        ),
        "libvirt-migrate-locked" => (
            "libvirt: virsh migrate between two real libvirtd",
            "virsh migrate --live of the locked guest fails naming the lock; a lock taken mid-copy cancels it; unlocked, the guest moves whole",
        ),
        "agent-plan-writeheavy" => (
            "a guest that writes faster than the link",
            "QEMU's default pre-copy does not converge; miglockctl migrate --mode auto plans post-copy from the guest's hints and completes, memory verified",
        ),
        _ => ("a scenario", "a scenario passed"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::List => {
            for s in SCENARIOS {
                println!("{:30} {}", s.name, s.about);
            }
            Ok(true)
        }
        Cmd::Run { names } => run(&cli, names, false),
        Cmd::Soak {
            migrations,
            budget,
            workload,
            module,
            cpus,
            modes,
            chain,
            warmup,
            allow_fenced,
            postcopy_bandwidth,
        } => survival::Filter::new(workload, *module, *cpus, modes).and_then(|f| {
            let mut plan = survival::soak(*migrations, *budget, *chain, &f);
            plan.warmup = *warmup;
            plan.allow_fenced = *allow_fenced;
            plan.postcopy_bandwidth = postcopy_bandwidth.clone();
            soak(&cli, plan)
        }),
        Cmd::Demo => run(
            &cli,
            &[
                "demo".into(),
                "agent-migrate".into(),
                "blocker-any-initiator".into(),
                "libvirt-migrate-locked".into(),
                "agent-plan-writeheavy".into(),
            ],
            true,
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("harness: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
