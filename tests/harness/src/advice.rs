// SPDX-License-Identifier: GPL-2.0

//! Hints are advice: the planner's `--mode auto` and the tracer's run-ahead
//! prefetch, tested against real QEMU migrations and measured side by side
//! with what they claim to beat.

use crate::agentdemo::{host_fail, require, wait_for, Hosts};
use crate::pair::{last_tick_in, tick_of};
use crate::scenario::{Env, FailKind, Failure, Scenario};
use anyhow::Context;
use serde_json::Value;
use std::process::Child;
use std::time::{Duration, Instant};

/// The link every planner run gets (bytes/s, as miglockctl takes it).
const LINK: &str = "32M";
/// How long default pre-copy may copy before it counts as not converging.
const PRECOPY_BOUND: &str = "20s";
/// The same in `agent-plan-writeheavy`, whose guest writes twice as fast as
/// the link sends: 10 s is five dirty-page syncs or more, none closer.
const TEST_PRECOPY_BOUND: &str = "10s";

/// One migration's outcome as `miglockctl --json migrate` reported it.
struct Outcome {
    ok: bool,
    data: Value,
    message: String,
    wall: Duration,
}

fn migrate_json(h: &Hosts, args: &[&str]) -> Result<Outcome, Failure> {
    let mut all = vec!["--json", "migrate", "guest", "--to", &h.uri];
    all.extend_from_slice(args);
    let t = Instant::now();
    let out = h.src_agent.ctl(&all)?;
    let wall = t.elapsed();
    let mut o = Outcome {
        ok: false,
        data: Value::Null,
        message: String::new(),
        wall,
    };
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_default();
        match v["kind"].as_str() {
            Some("progress") if v["message"].as_str().is_some_and(|m| m.starts_with("plan")) => {
                eprintln!("    {}", v["message"].as_str().unwrap_or(""));
            }
            Some("ok") => {
                o.ok = true;
                o.data = v["data"].clone();
            }
            Some("error") => o.message = v["message"].as_str().unwrap_or("").to_string(),
            _ => {}
        }
    }
    eprintln!(
        "  $ miglockctl migrate guest {}: {} in {:.1} s",
        args.join(" "),
        if o.ok {
            "completed"
        } else {
            o.message.as_str()
        },
        wall.as_secs_f64()
    );
    Ok(o)
}

/// Waits for the guest's "ready" and then for hints with workload figures
/// from at least three samples at the source agent; returns the figures.
pub(crate) fn wait_hints(h: &mut Hosts, deadline: Instant) -> Result<Value, Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK ready@@")?;
    loop {
        let v = h.src_agent.hints(false)?;
        let latest = &v["data"]["latest"];
        if latest["batch"].as_u64().unwrap_or(0) >= 3 && !latest["workload"].is_null() {
            eprintln!(
                "  guest hints: batch {}, workload {}",
                latest["batch"], latest["workload"]
            );
            return Ok(latest["workload"].clone());
        }
        if Instant::now() >= deadline {
            return Err(host_fail(
                "no hints with workload figures from the guest's tracer".into(),
            ));
        }
        // The tracer sends once a second: ask again in a while (pacing).
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits for `miglockctl incoming` to end and returns what it reported;
/// after a migration that `failed` at the source, it is stopped (nothing
/// will arrive).
fn finish_incoming(h: &mut Hosts, mut child: Child, failed: bool) -> Result<Value, Failure> {
    if failed {
        let _ = child.kill();
    }
    let ok = child.wait().context("miglockctl incoming")?.success();
    let said = h.incoming_output();
    let data = ok_data(said.iter().map(|l| l.as_str()));
    Ok(if ok { data } else { Value::Null })
}

/// The data of the `ok` record among `miglockctl --json` lines (null if
/// there is none).
fn ok_data<'a>(lines: impl IntoIterator<Item = &'a str>) -> Value {
    lines
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "ok")
        .map(|v| v["data"].clone())
        .unwrap_or_default()
}

/// What `miglockctl --json checkpoint` over the link reported; a host
/// failure, with its error output, if it failed.
fn checkpoint_data(out: &std::process::Output) -> Result<Value, Failure> {
    if !out.status.success() {
        return Err(Failure::new(
            FailKind::Host,
            format!(
                "checkpoint over the link failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(ok_data(String::from_utf8_lossy(&out.stdout).lines()))
}

fn choice(o: &Outcome) -> &str {
    o.data["plan"]["choice"].as_str().unwrap_or("?")
}

/// Write-heavy: default pre-copy does not converge within the bound and is
/// cancelled (refused outright where the agent fences pre-copy); `--mode
/// auto` plans post-copy and completes.
pub fn plan_write_heavy(
    h: &mut Hosts,
    sc: &Scenario,
    env: &Env<'_>,
    deadline: Instant,
) -> Result<(), Failure> {
    wait_hints(h, deadline)?;
    let child = h.receive(&["--postcopy"])?;
    let default = migrate_json(h, &["--bandwidth", LINK, "--timeout", TEST_PRECOPY_BOUND])?;
    let _ = finish_incoming(h, child, !default.ok)?;
    if h.fenced {
        require(
            !default.ok && default.message.contains("dirty log"),
            "default pre-copy was expected to be refused on a fenced QEMU",
        )?;
    } else {
        require(
            !default.ok && default.message.contains("not converging"),
            "default pre-copy of the write-heavy guest was expected not to converge",
        )?;
    }
    // The destination QEMU gave up with the cancelled stream: a new one.
    h.restart_dst(sc, env)?;
    let child = h.receive(&["--postcopy"])?;
    let auto = migrate_json(h, &["--mode", "auto", "--bandwidth", LINK])?;
    let _ = finish_incoming(h, child, !auto.ok)?;
    require(auto.ok, &format!("--mode auto failed: {}", auto.message))?;
    require(
        choice(&auto) != "precopy",
        "the planner kept pre-copy for a write-heavy guest",
    )?;
    eprintln!(
        "  {}",
        row("write-heavy", "precopy (QEMU default)", &default)
    );
    eprintln!("  {}", row("write-heavy", "auto", &auto));
    h.arrive(sc, deadline)
}

/// Read-mostly: `--mode auto` keeps pre-copy, which completes.
pub fn plan_read_mostly(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    wait_hints(h, deadline)?;
    let child = h.receive(&["--postcopy"])?;
    let auto = migrate_json(h, &["--mode", "auto", "--bandwidth", LINK])?;
    let _ = finish_incoming(h, child, !auto.ok)?;
    require(auto.ok, &format!("--mode auto failed: {}", auto.message))?;
    require(
        choice(&auto) == "precopy",
        &format!(
            "the planner chose {} for a read-mostly guest",
            choice(&auto)
        ),
    )?;
    eprintln!("  {}", row("read-mostly", "auto", &auto));
    h.arrive(sc, deadline)
}

fn mib(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1048576.0
}

fn row(workload: &str, mode: &str, o: &Outcome) -> String {
    if o.ok {
        format!(
            "{workload:<12} {mode:<24} {:<22} wall {:>6} ms (QEMU total {} ms)  downtime {:>4} ms  sent {:>7.1} MiB  syncs {}",
            "completed",
            o.data["wall_ms"],
            o.data["total_time_ms"],
            o.data["downtime_ms"],
            mib(&o.data["transferred_bytes"]),
            o.data["dirty_sync_count"]
        )
    } else {
        let why = if o.message.contains("not converging") {
            "did not converge"
        } else {
            "failed"
        };
        format!(
            "{workload:<12} {mode:<24} {why:<22} gave up after {:.1} s",
            o.wall.as_secs_f64()
        )
    }
}

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// `--mode auto` against QEMU's default pre-copy on three workloads,
    /// and against pre-copy with auto-converge, post-copy and pre-copy
    /// then post-copy on the write-heavy one.
    Plan,
    /// Post-copy with and without the tracer's run-ahead prefetch.
    Prefetch,
    /// Real migrations and checkpoints of traced workloads, for migsim's
    /// validation.
    Validate,
    /// Checkpoint-and-restore as a migration against pre-copy and post-copy.
    Checkpoint,
    /// Post-copy and pre-copy then post-copy, each with and without the
    /// tracer's run-ahead, timed by the workload itself.
    Hints,
}

/// Runs a benchmark: fresh hosts for every migration.
pub fn bench(sc: &Scenario, env: &Env<'_>, deadline: Instant, b: Bench) -> Result<(), Failure> {
    match b {
        Bench::Plan => bench_plan(sc, env, deadline),
        Bench::Prefetch => bench_prefetch(sc, env, deadline),
        Bench::Validate => bench_validate(sc, env, deadline),
        Bench::Checkpoint => bench_checkpoint(sc, env, deadline),
        Bench::Hints => bench_hints(sc, env, deadline),
    }
}

fn fresh(sc: &Scenario, env: &Env<'_>, guest: &'static str) -> Result<(Scenario, Hosts), Failure> {
    let sc = Scenario {
        guest,
        ..sc.clone()
    };
    let h = Hosts::start(&sc, env, true)?;
    Ok((sc, h))
}

/// How long the workload's rate before a migration is taken over.
const RATE_BEFORE: Duration = Duration::from_secs(5);

/// What a workload lost during a migration, by its own count of ticks
/// (`tick N` lines, timed as they came out of the serial port).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lost {
    /// Its rate before the migration, ticks/s.
    rate: f64,
    /// Ticks it would have done over the migration at that rate.
    expected: f64,
    /// Ticks it did.
    done: f64,
}

impl Lost {
    /// The share of its work lost, percent.
    fn pct(&self) -> f64 {
        (self.expected - self.done) / self.expected * 100.0
    }

    /// The work lost, in seconds of work at the rate before.
    fn seconds(&self) -> f64 {
        (self.expected - self.done) / self.rate
    }
}

/// The ticks among a console's lines, with when each came out.
fn ticks_seen(seen: &[String], at: &[Instant]) -> Vec<(Instant, u64)> {
    seen.iter()
        .zip(at)
        .filter_map(|(l, &t)| Some((t, tick_of(l)?)))
        .collect()
}

/// What the workload lost between `t0` and `t1` (a migration), from its
/// `ticks` on both consoles: the ticks it would have done at its rate over
/// the [`RATE_BEFORE`] before `t0`, against those it did. Each end is read
/// between the ticks around it (a tick is 20 to 100 ms: a whole tick either
/// way is a few percent of a short migration). `None` without ticks on
/// both sides of both ends.
fn lost_work(ticks: &[(Instant, u64)], t0: Instant, t1: Instant) -> Option<Lost> {
    let mut ticks = ticks.to_vec();
    // A tick the source printed and the destination printed again (or the
    // other way round) counts once, when it first came.
    ticks.sort_by_key(|&(t, n)| (n, t));
    ticks.dedup_by_key(|&mut (_, n)| n);
    let at = |t: Instant| -> Option<f64> {
        let i = ticks.iter().rposition(|&(ti, _)| ti <= t)?;
        let (ta, na) = ticks[i];
        let (tb, nb) = *ticks.get(i + 1)?;
        let span = tb.checked_duration_since(ta)?.as_secs_f64();
        let part = t.duration_since(ta).as_secs_f64() / span.max(1e-9);
        Some(na as f64 + part * (nb - na) as f64)
    };
    let first = ticks.first()?.0;
    let from = t0.checked_sub(RATE_BEFORE).map_or(first, |f| f.max(first));
    let before = t0.checked_duration_since(from)?.as_secs_f64();
    if before < 1.0 {
        return None;
    }
    let (n_from, n0, n1) = (at(from)?, at(t0)?, at(t1)?);
    let rate = (n0 - n_from) / before;
    if rate <= 0.0 {
        return None;
    }
    Some(Lost {
        rate,
        expected: rate * t1.checked_duration_since(t0)?.as_secs_f64(),
        done: n1 - n0,
    })
}

/// One scheme of `bench-plan`.
#[derive(Clone, Copy)]
struct Scheme {
    /// Its name in result.json.
    name: &'static str,
    /// What it is in the table.
    label: &'static str,
    /// `miglockctl migrate`'s arguments beside the link.
    args: &'static [&'static str],
    /// The destination reads ahead with the hints the source agent held
    /// (`incoming --prefetch`, as an operator carries them over).
    runahead: bool,
}

impl Scheme {
    const fn new(name: &'static str, label: &'static str, args: &'static [&'static str]) -> Self {
        Self {
            name,
            label,
            args,
            runahead: false,
        }
    }

    const fn with_runahead(self) -> Self {
        Self {
            runahead: true,
            ..self
        }
    }
}

/// Waits for a tick line that came out of `vm`'s serial port after `t`.
fn tick_after(vm: &mut crate::vm::Vm, t: Instant, deadline: Instant) -> Result<(), Failure> {
    loop {
        let came = vm
            .seen
            .iter()
            .zip(&vm.seen_at)
            .any(|(l, &at)| at > t && tick_of(l).is_some());
        if came {
            return Ok(());
        }
        if !matches!(
            vm.wait_line(deadline, |l| tick_of(l).is_some()),
            crate::vm::Wait::Line(_)
        ) {
            return Err(Failure::new(
                FailKind::Guest,
                "the workload did not tick after the migration",
            ));
        }
    }
}

/// `bench-plan`'s guests and the schemes each is migrated with.
const PLAN_GUESTS: [(&str, &str, &str, &[Scheme]); 4] = [
    (
        "write_heavy",
        "write-heavy",
        "plan-writeheavy",
        &[
            Scheme::new("auto", "auto", &["--mode", "auto"]),
            Scheme::new("auto_hints", "auto + run-ahead", &["--mode", "auto"]).with_runahead(),
            Scheme::new(
                "precopy",
                "precopy (QEMU default)",
                &["--timeout", PRECOPY_BOUND],
            ),
            Scheme::new(
                "auto_converge",
                "precopy + auto-converge",
                &["--auto-converge", "--timeout", AUTO_CONVERGE_BOUND],
            ),
            Scheme::new("postcopy", "postcopy", &["--mode", "postcopy"]),
            Scheme::new(
                "postcopy_hints",
                "postcopy + run-ahead",
                &["--mode", "postcopy"],
            )
            .with_runahead(),
            // What auto would run with [planner] precopy_then_postcopy.
            Scheme::new("hybrid", "precopy then postcopy", &["--mode", "hybrid"]),
        ],
    ),
    (
        // The same workload, deferring its work while a migration is
        // announced: the guest's notice shaping pre-copy.
        "write_heavy_calm",
        "write-calmed",
        "plan-writeheavy-calm",
        &[Scheme::new(
            "precopy",
            "precopy (QEMU default)",
            &["--timeout", PRECOPY_BOUND],
        )],
    ),
    (
        "idle",
        "idle",
        "plan-idle",
        &[
            Scheme::new("auto", "auto", &["--mode", "auto"]),
            Scheme::new(
                "precopy",
                "precopy (QEMU default)",
                &["--timeout", PRECOPY_BOUND],
            ),
        ],
    ),
    (
        "read_mostly",
        "read-mostly",
        "plan-readmostly",
        &[
            Scheme::new("auto", "auto", &["--mode", "auto"]),
            Scheme::new(
                "precopy",
                "precopy (QEMU default)",
                &["--timeout", PRECOPY_BOUND],
            ),
        ],
    ),
];

/// How long pre-copy with auto-converge may copy: QEMU throttles the vCPUs
/// by 20% and then 10% more at every dirty sync that still does not
/// converge, up to 99%; a 64 MiB pass takes 2 s at the link.
const AUTO_CONVERGE_BOUND: &str = "60s";

/// How many runs of each scheme `bench-plan` makes.
const RUNS_PLAN: usize = 5;

/// The figures of one run: total time, the share of its work the workload
/// lost during the migration and that work in ms, downtime, bytes
/// sent (NaN where the migration did not complete).
const PLAN_FIGURES: [&str; 5] = [
    "total_ms",
    "slowdown_pct",
    "lost_ms",
    "downtime_ms",
    "bytes",
];

/// `bench-plan`: each guest migrated with each of its schemes,
/// [`RUNS_PLAN`] runs each, the schemes interleaved run by run, every
/// completed run's guest verified on the destination. All over the same
/// link: `--bandwidth` and, for whatever runs post-copy, the same cap in
/// post-copy (the agent would otherwise run the hybrid's post-copy phase
/// uncapped on QEMU 10). Times what the workload lost during the migration
/// by its own ticks ([`lost_work`]). Writes `result.json` with the
/// median, min and max of each figure per scheme. `MIGLOCK_PLAN_GUESTS`
/// (their keys, comma-separated) runs only those guests.
fn bench_plan(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let only = std::env::var("MIGLOCK_PLAN_GUESTS").ok();
    let wanted = |key: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|k| k == key))
    };
    if let Some(o) = &only {
        if !PLAN_GUESTS.iter().any(|g| wanted(g.0)) {
            let keys: Vec<&str> = PLAN_GUESTS.iter().map(|g| g.0).collect();
            return Err(Failure::new(
                FailKind::Harness,
                format!(
                    "MIGLOCK_PLAN_GUESTS={o}: no such guest (have {})",
                    keys.join(", ")
                ),
            ));
        }
    }
    let mut runs: Vec<Vec<Vec<[f64; 5]>>> = PLAN_GUESTS
        .iter()
        .map(|g| vec![Vec::new(); g.3.len()])
        .collect();
    let mut completed: Vec<Vec<usize>> = PLAN_GUESTS.iter().map(|g| vec![0; g.3.len()]).collect();
    let mut chose: Vec<Vec<Vec<String>>> = PLAN_GUESTS
        .iter()
        .map(|g| vec![Vec::new(); g.3.len()])
        .collect();
    let mut rows = Vec::new();
    let mut qemu = String::new();
    let mut dirty_limit = String::new();
    for run in 0..RUNS_PLAN {
        for (g, &(key, workload, guest, schemes)) in PLAN_GUESTS.iter().enumerate() {
            if !wanted(key) {
                continue;
            }
            for (k, scheme) in schemes.iter().enumerate() {
                let (mode, args) = (scheme.label, scheme.args);
                let (sc2, mut h) = fresh(sc, env, guest)?;
                if qemu.is_empty() {
                    qemu = qemu_version(&h);
                    dirty_limit = dirty_limit_here(&mut h);
                    eprintln!("  QEMU {qemu}: dirty-limit: {dirty_limit}");
                }
                wait_hints(&mut h, deadline)?;
                // The workload's rate before the migration is taken over
                // RATE_BEFORE: let it tick that long, and see its latest.
                let first = ticks_seen(&h.src.seen, &h.src.seen_at)
                    .first()
                    .map_or_else(Instant::now, |&(t, _)| t);
                let ticked = h.src.wait_line(deadline, |l| {
                    tick_of(l).is_some() && first.elapsed() >= RATE_BEFORE
                });
                if !matches!(ticked, crate::vm::Wait::Line(_)) {
                    return Err(Failure::new(FailKind::Guest, "the workload never ran"));
                }
                let hints;
                let mut rx = vec!["--postcopy"];
                if scheme.runahead {
                    hints = h.src_agent.export_hints()?;
                    rx.extend(["--prefetch", hints.to_str().unwrap_or_default()]);
                }
                let child = h.receive(&rx)?;
                let mut all = vec!["--bandwidth", LINK];
                if args.contains(&"--mode") {
                    all.extend_from_slice(&["--postcopy-bandwidth", LINK]);
                }
                all.extend_from_slice(args);
                let t0 = Instant::now();
                let o = migrate_json(&h, &all)?;
                let t1 = Instant::now();
                let _ = finish_incoming(&mut h, child, !o.ok)?;
                // A tick after the migration ended, where the guest runs
                // (cancelled: it goes on at the source): the end is read
                // between two ticks.
                let on = if o.ok { &mut h.dst } else { &mut h.src };
                tick_after(on, t1, deadline)?;
                if o.ok {
                    h.arrive(&sc2, deadline)?;
                }
                // Whatever the source printed before it stopped.
                let _ = h
                    .src
                    .wait_line(Instant::now() + Duration::from_millis(200), |_| false);
                let mut ticks = ticks_seen(&h.src.seen, &h.src.seen_at);
                ticks.extend(ticks_seen(&h.dst.seen, &h.dst.seen_at));
                let lost = lost_work(&ticks, t0, t1).ok_or_else(|| {
                    Failure::new(
                        FailKind::Guest,
                        "the workload's ticks do not cover the migration",
                    )
                })?;
                let mode = if o.ok && args.contains(&"auto") {
                    chose[g][k].push(choice(&o).to_string());
                    format!("{mode}: {}", choice(&o))
                } else {
                    mode.to_string()
                };
                let throttle = match o.data["cpu_throttle_max_pct"].as_u64() {
                    Some(t) => format!(", vCPUs throttled up to {t}%"),
                    None => String::new(),
                };
                eprintln!(
                    "  run {}: {workload} {mode}: workload {:.1} ticks/s before, {:.0} of {:.0} ticks done during the migration: {:.1}% lost ({:.2} s of work){throttle}",
                    run + 1,
                    lost.rate,
                    lost.done,
                    lost.expected,
                    lost.pct(),
                    lost.seconds()
                );
                rows.push(format!(
                    "{}  workload lost {:>5.1}% ({:.2} s)",
                    row(workload, &mode, &o),
                    lost.pct(),
                    lost.seconds()
                ));
                let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
                let wall = if o.ok {
                    num(&o.data["wall_ms"])
                } else {
                    f64::NAN
                };
                runs[g][k].push([
                    wall,
                    lost.pct(),
                    lost.seconds() * 1000.0,
                    num(&o.data["downtime_ms"]),
                    num(&o.data["transferred_bytes"]),
                ]);
                completed[g][k] += usize::from(o.ok);
                h.quit()?;
            }
        }
    }
    println!(
        "bench plan: {RUNS_PLAN} runs each, QEMU {qemu}, link {LINK}/s (post-copy too), 256 MiB guest; default pre-copy bounded at {PRECOPY_BOUND}, with auto-converge at {AUTO_CONVERGE_BOUND}"
    );
    for r in &rows {
        println!("bench plan: {r}");
    }
    println!("bench plan: median (min..max) of completed runs; workload lost: its work lost during the migration, of what it did before");
    println!("bench plan: QEMU's dirty-limit (the other remedy): {dirty_limit}");
    let mut result = serde_json::json!({"runs": RUNS_PLAN, "qemu": qemu,
        "link_bytes_per_s": 32u64 << 20, "dirty_limit": dirty_limit});
    for (g, &(key, workload, _, schemes)) in PLAN_GUESTS.iter().enumerate() {
        if !wanted(key) {
            continue;
        }
        let mut by = serde_json::Map::new();
        for (
            k,
            &Scheme {
                name,
                label: mode,
                args,
                ..
            },
        ) in schemes.iter().enumerate()
        {
            let mut fig = figures(&PLAN_FIGURES, &runs[g][k]);
            fig["completed"] = serde_json::json!(completed[g][k]);
            if args.contains(&"auto") {
                fig["chose"] = serde_json::json!(chose[g][k]);
            }
            let show = |n: &str, scale: f64| match fig[n].as_f64() {
                Some(m) => format!(
                    "{:.1} ({:.1}..{:.1})",
                    m / scale,
                    fig[format!("{n}_min")].as_f64().unwrap_or(0.0) / scale,
                    fig[format!("{n}_max")].as_f64().unwrap_or(0.0) / scale
                ),
                None => "-".into(),
            };
            println!(
                "bench plan: {workload:<12} {mode:<24} completed {}/{RUNS_PLAN}  total s {:<18} workload lost % {:<20} lost s {:<18} downtime ms {:<22} MiB {}",
                completed[g][k],
                show("total_ms", 1000.0),
                show("slowdown_pct", 1.0),
                show("lost_ms", 1000.0),
                show("downtime_ms", 1.0),
                show("bytes", 1048576.0)
            );
            by.insert(name.to_string(), fig);
        }
        result[key] = Value::Object(by);
    }
    env.write_result(&result)
}

/// Whether QEMU's `dirty-limit` capability (the other remedy for pre-copy
/// that does not converge: it caps each vCPU's dirty rate through KVM's
/// dirty ring) can be set on the source QEMU: "offered and accepted", or
/// QEMU's answer. Set off again at once.
fn dirty_limit_here(h: &mut Hosts) -> String {
    let caps = h.src.qmp.execute("query-migrate-capabilities", None);
    let listed = caps.is_ok_and(|c| {
        c.as_array()
            .is_some_and(|c| c.iter().any(|c| c["capability"] == "dirty-limit"))
    });
    if !listed {
        return "not offered by this QEMU".into();
    }
    let set = |on: bool| serde_json::json!({"capabilities": [{"capability": "dirty-limit", "state": on}]});
    match h
        .src
        .qmp
        .execute("migrate-set-capabilities", Some(set(true)))
    {
        Ok(_) => {
            let _ = h
                .src
                .qmp
                .execute("migrate-set-capabilities", Some(set(false)));
            "offered and accepted".into()
        }
        Err(e) => format!("offered, refused: {e}"),
    }
}

/// The QEMU the hosts run, `major.minor.micro` (as `Hosts::start` asked it).
fn qemu_version(h: &Hosts) -> String {
    let (a, b, c) = h.qemu;
    format!("{a}.{b}.{c}")
}

/// Mean and spread of a figure over runs.
fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    format!("{mean:.0} ({lo:.0}..{hi:.0})")
}

fn bench_prefetch(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    const RUNS: usize = 5;
    let mut table = Vec::new();
    for (label, guest) in [
        ("without prefetch", "prefetch-off"),
        ("with prefetch", "prefetch-on"),
    ] {
        let (mut reqs, mut block, mut total, mut passes) = (vec![], vec![], vec![], vec![]);
        for run in 0..RUNS {
            let (sc2, mut h) = fresh(sc, env, guest)?;
            wait_hints(&mut h, deadline)?;
            let child = h.receive(&["--postcopy"])?;
            let o = migrate_json(&h, &["--mode", "postcopy", "--bandwidth", LINK])?;
            let dst = finish_incoming(&mut h, child, !o.ok)?;
            require(o.ok, &format!("post-copy run failed: {}", o.message))?;
            h.arrive(&sc2, deadline)?;
            let touched: Vec<String> = h
                .dst
                .seen
                .iter()
                .filter(|l| l.starts_with("prefetch:"))
                .cloned()
                .collect();
            let ws = h
                .dst
                .seen
                .iter()
                .find(|l| l.starts_with("mlwset: done"))
                .cloned()
                .unwrap_or_default();
            eprintln!(
                "  {label} run {}: requests {} blocktime {} ms wall {} ms; {}; {}",
                run + 1,
                o.data["postcopy_requests"],
                dst["postcopy_blocktime_ms"],
                o.data["wall_ms"],
                touched.join("; "),
                ws
            );
            reqs.push(o.data["postcopy_requests"].as_f64().unwrap_or(0.0));
            block.push(dst["postcopy_blocktime_ms"].as_f64().unwrap_or(0.0));
            total.push(o.data["wall_ms"].as_f64().unwrap_or(0.0));
            passes.push(touched.len() as f64);
            h.quit()?;
        }
        if label == "with prefetch" && passes.iter().all(|&p| p == 0.0) {
            return Err(Failure::new(
                FailKind::Guest,
                "the tracer never reported a prefetch pass",
            ));
        }
        table.push(format!(
            "{label:<18} postcopy-requests {:<18} vCPU blocktime ms {:<18} migration wall ms {}",
            stats(&reqs),
            stats(&block),
            stats(&total)
        ));
    }
    println!("bench prefetch: {RUNS} post-copy runs each, link {LINK}/s in both phases, 128 MiB workload with a 32 MiB hot set; mean (min..max)");
    for r in table {
        println!("bench prefetch: {r}");
    }
    Ok(())
}

/// `key=value` of the workload's `workload: stalls ...` line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Median, min and max of `v` (not empty).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

/// The figures of one scheme over its runs: each figure's median under its
/// own name, its min and max beside it (`stall_ms`, `stall_ms_min`, ...).
/// A figure missing from a run (NaN: a migration that did not complete)
/// is left out; one missing from every run is null.
fn figures<const N: usize>(names: &[&str; N], runs: &[[f64; N]]) -> Value {
    let mut o = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let v: Vec<f64> = runs.iter().map(|r| r[i]).filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            for n in [
                name.to_string(),
                format!("{name}_min"),
                format!("{name}_max"),
            ] {
                o.insert(n, Value::Null);
            }
            continue;
        }
        // To a tenth: the stall's microseconds are below its noise.
        let (median, min, max) = spread(&v);
        let r = |x: f64| (x * 10.0).round() / 10.0;
        o.insert(name.to_string(), serde_json::json!(r(median)));
        o.insert(format!("{name}_min"), serde_json::json!(r(min)));
        o.insert(format!("{name}_max"), serde_json::json!(r(max)));
    }
    Value::Object(o)
}

/// The figures of one `bench-hints` run.
const HINT_FIGURES: [&str; 5] = [
    "stall_ms",
    "blocktime_ms",
    "requests",
    "bytes",
    "workload_vcpu_blocktime_ms",
];

/// `bench-hints`: on the hot-set workload (`hints.sh`: mlworkload rewriting
/// random pages of a 32 MiB hot set in 128 MiB on vCPU 0, the tracer on
/// vCPU 1), `MIGLOCK_HINTS_RUNS` (default 5) migrations of each scheme over
/// the same 32 MiB/s link in both phases (the hybrid's post-copy phase too,
/// which the agent would otherwise run uncapped on QEMU 10), the schemes
/// interleaved run by run; every run's memory verified on the destination.
/// "Hints" is the destination agent reading the guest's hot pages ahead
/// (`incoming --prefetch`, the hints the source agent held just before).
/// Writes `result.json` with the median, min and max of the workload's
/// stall time, QEMU's block time (all vCPUs, and the workload's vCPU),
/// post-copy requests and bytes sent.
fn bench_hints(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let runs_hints: usize = std::env::var("MIGLOCK_HINTS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    // (label, mode, the destination reads the hinted pages ahead, QEMU's
    // postcopy-preempt on both ends)
    let schemes: [(&str, &str, bool, bool); 6] = [
        ("postcopy", "postcopy", false, false),
        ("postcopy_preempt", "postcopy", false, true),
        ("postcopy_hints", "postcopy", true, false),
        ("postcopy_preempt_hints", "postcopy", true, true),
        ("hybrid", "precopy-then-postcopy", false, false),
        ("hybrid_hints", "precopy-then-postcopy", true, false),
    ];
    let mut runs: Vec<Vec<[f64; 5]>> = vec![Vec::new(); schemes.len()];
    let mut qemu = String::new();
    for run in 0..runs_hints {
        for (k, &(label, mode, runahead, preempt)) in schemes.iter().enumerate() {
            let (sc2, mut h) = fresh(sc, env, "hints")?;
            if qemu.is_empty() {
                qemu = qemu_version(&h);
            }
            wait_hints(&mut h, deadline)?;
            // The workload has calibrated its usual page rewrite (4096
            // rewrites, 2 ticks) and run long enough for the tracer to
            // rank its hot set.
            if !matches!(
                h.src
                    .wait_line(deadline, |l| tick_of(l).is_some_and(|t| t >= 40)),
                crate::vm::Wait::Line(_)
            ) {
                return Err(Failure::new(FailKind::Guest, "the workload never ran"));
            }
            let hints;
            let mut rx_args = vec!["--postcopy"];
            let mut tx_args = vec![
                "--mode",
                mode,
                "--bandwidth",
                LINK,
                "--postcopy-bandwidth",
                LINK,
            ];
            if preempt {
                rx_args.push("--postcopy-preempt");
                tx_args.push("--postcopy-preempt");
            }
            if runahead {
                // The hints as the source agent holds them, for the destination.
                hints = h.src_agent.export_hints()?;
                rx_args.extend(["--prefetch", hints.to_str().unwrap_or_default()]);
            }
            let child = h.receive(&rx_args)?;
            let o = migrate_json(&h, &tx_args)?;
            let dst = finish_incoming(&mut h, child, !o.ok)?;
            require(o.ok, &format!("{label} run failed: {}", o.message))?;
            // The workload verifies all its memory here (a run that does
            // not fails the benchmark) and says how long it stalled.
            h.arrive(&sc2, deadline)?;
            let seen = |p: &str| -> Vec<String> {
                h.dst
                    .seen
                    .iter()
                    .filter(|l| l.starts_with(p))
                    .cloned()
                    .collect()
            };
            let stalls = seen("workload: stalls").pop().ok_or_else(|| {
                Failure::new(FailKind::Guest, "the workload reported no stall time")
            })?;
            // The run-ahead starts once the guest runs on the destination;
            // a hybrid's post-copy phase can end before that.
            let ran = &dst["runahead"];
            if runahead && ran.is_null() {
                eprintln!(
                    "  {label} run {}: post-copy ended before the run-ahead began",
                    run + 1
                );
            }
            let touched = if runahead {
                format!("run-ahead {ran}")
            } else {
                String::new()
            };
            let f = |k: &str| field(&stalls, k).unwrap_or(f64::NAN);
            // From the migration notice on: with post-copy from the start
            // that is the switchover and every fault after it (including
            // those before the post-copy notice reaches the guest); with
            // the hybrid it also holds the pre-copy pass.
            let stall = f("pending_ms") + f("postcopy_ms");
            let r = [
                stall,
                dst["postcopy_blocktime_ms"].as_f64().unwrap_or(f64::NAN),
                o.data["postcopy_requests"].as_f64().unwrap_or(f64::NAN),
                o.data["transferred_bytes"].as_f64().unwrap_or(f64::NAN),
                // The workload runs on vCPU 0.
                dst["postcopy_vcpu_blocktime_ms"][0]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            ];
            eprintln!(
                "  {label} run {}: stall {:.0} ms (before the post-copy notice {:.0} ms in {} slow rewrites, after it {:.0} ms in {}; floor before the migration {:.0} ms in {} rewrites), blocktime {} ms (per vCPU {}), requests {}, {:.1} MiB, wall {} ms; {}",
                run + 1,
                stall,
                f("pending_ms"),
                f("pending_slow"),
                f("postcopy_ms"),
                f("postcopy_slow"),
                f("before_ms"),
                f("before_ops"),
                r[1],
                dst["postcopy_vcpu_blocktime_ms"],
                r[2],
                r[3] / 1048576.0,
                o.data["wall_ms"],
                touched
            );
            if r.iter().any(|x| x.is_nan()) {
                return Err(Failure::new(
                    FailKind::Host,
                    format!("{label} run {}: a figure is missing: {stalls}", run + 1),
                ));
            }
            runs[k].push(r);
            h.quit()?;
        }
    }
    let mut result = serde_json::json!({"runs": runs_hints, "qemu": qemu});
    println!("bench hints: {runs_hints} runs each, QEMU {qemu}, link {LINK}/s in both phases; median (min..max)");
    for (k, &(label, ..)) in schemes.iter().enumerate() {
        let fig = figures(&HINT_FIGURES, &runs[k]);
        let show = |n: &str| {
            format!(
                "{:.0} ({:.0}..{:.0})",
                fig[n].as_f64().unwrap_or(0.0),
                fig[format!("{n}_min")].as_f64().unwrap_or(0.0),
                fig[format!("{n}_max")].as_f64().unwrap_or(0.0)
            )
        };
        println!(
            "bench hints: {label:<15} stall ms {:<16} blocktime ms {:<18} requests {:<14} MiB {:.1}",
            show("stall_ms"),
            show("blocktime_ms"),
            show("requests"),
            fig["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        );
        result[label] = fig;
    }
    env.write_result(&result)
}

/// Whether `l` can be a line of base64 (a kernel message printed on the
/// console in the middle of the trace, "hrtimer: interrupt took ...", is
/// not).
fn base64_line(l: &str) -> bool {
    !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// The trace the guest printed between its markers, decoded.
fn collect_trace(lines: &[String]) -> anyhow::Result<Vec<u8>> {
    let body: String = lines
        .iter()
        .skip_while(|l| !l.contains("@@MIGLOCK trace-begin@@"))
        .skip(1)
        .take_while(|l| !l.contains("@@MIGLOCK trace-end@@"))
        .map(|l| l.trim())
        .filter(|l| base64_line(l))
        .collect();
    anyhow::ensure!(!body.is_empty(), "the guest printed no trace");
    let mut child = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("base64 -d")?;
    let mut input = child.stdin.take().context("base64's stdin")?;
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        input.write_all(body.as_bytes())
    });
    let out = child.wait_with_output().context("base64 -d")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    anyhow::ensure!(out.status.success(), "the trace is not valid base64");
    Ok(out.stdout)
}

/// Bytes per second of [`LINK`].
const LINK_BYTES: u64 = 32 << 20;

/// One recorded run of `bench-validate`.
struct ValidateRun {
    workload: &'static str,
    guest: &'static str,
    /// checkpoint, precopy or postcopy.
    mode: &'static str,
    /// Post-copy's rate limit (`--postcopy-bandwidth`) and its bytes/s.
    postcopy_link: &'static str,
    postcopy_link_bytes: u64,
    /// The hot-set workload of bench-hints (waits for its calibration).
    hot_set: bool,
    /// The tracer's run-ahead prefetch is on (hints-on).
    prefetch: bool,
}

impl ValidateRun {
    /// `<workload>-<mode>`, with `-prefetch` for the run-ahead and the
    /// post-copy rate when it is not the link's.
    fn name(&self) -> String {
        let mut n = format!("{}-{}", self.workload, self.mode);
        if self.prefetch {
            n += "-prefetch";
        }
        if self.mode == "postcopy" && self.postcopy_link != LINK {
            n = format!("{n}-{}", self.postcopy_link.to_lowercase());
        }
        n
    }
}

/// The runs of `bench-validate`: each planner workload migrated by
/// pre-copy and post-copy over the link and checkpointed; the write-heavy
/// one also by post-copy at 512 MiB/s, more than this machine moves, so
/// that something else than the link bounds it; and the hot-set workload
/// of bench-hints by post-copy without and with the tracer's run-ahead
/// (migsim's lazy-copy against its post-copy, on real runs).
fn validate_runs() -> Vec<ValidateRun> {
    let run = |workload, guest, mode| ValidateRun {
        workload,
        guest,
        mode,
        postcopy_link: LINK,
        postcopy_link_bytes: LINK_BYTES,
        hot_set: false,
        prefetch: false,
    };
    let mut v = Vec::new();
    for (workload, guest) in [
        ("idle", "validate-idle"),
        ("read-mostly", "validate-readmostly"),
        ("write-heavy", "validate-writeheavy"),
    ] {
        for mode in ["checkpoint", "precopy", "postcopy"] {
            v.push(run(workload, guest, mode));
        }
    }
    v.push(ValidateRun {
        postcopy_link: "512M",
        postcopy_link_bytes: 512 << 20,
        ..run("write-heavy", "validate-writeheavy", "postcopy")
    });
    for (guest, prefetch) in [("validate-hints-off", false), ("validate-hints-on", true)] {
        v.push(ValidateRun {
            hot_set: true,
            prefetch,
            ..run("hot-set", guest, "postcopy")
        });
    }
    v
}

/// Writes one recorded run of `bench-validate` into `dir`: the guest's
/// trace as `NAME.mltrace` and what happened as `NAME.real.json`.
fn save_run(dir: &std::path::Path, name: &str, trace: &[u8], real: &Value) -> Result<(), Failure> {
    std::fs::write(dir.join(format!("{name}.mltrace")), trace).context("trace")?;
    std::fs::write(
        dir.join(format!("{name}.real.json")),
        serde_json::to_string_pretty(real).map_err(anyhow::Error::from)?,
    )
    .context("real.json")?;
    Ok(())
}

/// The workload's stall from the migration's notice on (the `workload:
/// stalls` line, as bench-hints reads it): ms, slow rewrites, the usual
/// rewrite in us; `None` if the workload never calibrated (fewer than its
/// calibration rewrites: the idle and read-mostly ones write a page a tick).
fn workload_stall(line: &str) -> Option<(f64, u64, f64)> {
    let f = |k: &str| field(line, k);
    let ops = f("pending_ops")? + f("postcopy_ops")? + f("before_ops")?;
    if ops == 0.0 {
        return None;
    }
    let slow = f("pending_slow")? + f("postcopy_slow")?;
    Some((
        f("pending_ms")? + f("postcopy_ms")?,
        slow as u64,
        f("usual_us")?,
    ))
}

/// Real pre-copy and post-copy migrations and real checkpoints of the three
/// planner workloads, each with the guest's page-access trace recorded
/// across it; writes
/// `out/validate/<workload>-<mode>.{mltrace,real.json}` for
/// `migsim validate` and `migsim report`.
fn bench_validate(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let dir = env
        .dir
        .parent()
        .context("scenario directory")?
        .parent()
        .context("out directory")?
        .join("validate");
    std::fs::create_dir_all(&dir).context("out/validate")?;
    for run in validate_runs() {
        let (sc2, mut h) = fresh(sc, env, run.guest)?;
        wait_hints(&mut h, deadline)?;
        if run.hot_set {
            // As bench-hints: the workload has calibrated its usual page
            // rewrite and run long enough for the tracer to rank its hot set.
            if !matches!(
                h.src
                    .wait_line(deadline, |l| tick_of(l).is_some_and(|t| t >= 40)),
                crate::vm::Wait::Line(_)
            ) {
                return Err(Failure::new(FailKind::Guest, "the workload never ran"));
            }
        }
        // The tracer sends a batch a sample: the batch number is the
        // trace time in seconds when the migration starts.
        let v = h.src_agent.hints(false)?;
        let start_at_s = v["data"]["latest"]["batch"].as_f64().unwrap_or(0.0);
        let (workload, mode) = (run.workload, run.mode);
        if mode == "checkpoint" {
            validate_checkpoint(&mut h, &sc2, env, &dir, workload, start_at_s, deadline)?;
            h.quit()?;
            continue;
        }
        let child = h.receive(&["--postcopy"])?;
        let mut args = vec!["--mode", mode, "--bandwidth", LINK];
        if mode == "precopy" {
            args.extend(["--timeout", PRECOPY_BOUND]);
        } else {
            args.extend(["--postcopy-bandwidth", run.postcopy_link]);
        }
        let o = migrate_json(&h, &args)?;
        let dst = finish_incoming(&mut h, child, !o.ok)?;
        let lines = if o.ok {
            h.arrive(&sc2, deadline)?;
            h.dst.seen.clone()
        } else {
            h.src.send_line("finish").context("typing on the console")?;
            crate::scenario::finish_guest(&sc2, &mut h.src, deadline)?;
            h.src.seen.clone()
        };
        let trace = collect_trace(&lines)?;
        let name = run.name();
        // A cancelled run's figures are in the source agent's audit log.
        let cancelled = h
            .src_agent
            .audit()
            .into_iter()
            .rev()
            .find(|r| r["event"] == "migrate-cancelled")
            .unwrap_or_default();
        let d = if o.ok { &o.data } else { &cancelled };
        let stall = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("workload: stalls"))
            .and_then(|l| workload_stall(l));
        let postcopy_bw = match mode {
            "precopy" => LINK_BYTES,
            _ => run.postcopy_link_bytes,
        };
        let real = serde_json::json!({
            "workload": workload, "mode": mode, "prefetch": run.prefetch,
            "bandwidth_bytes_per_s": LINK_BYTES, "postcopy_bandwidth_bytes_per_s": postcopy_bw,
            "downtime_limit_ms": 300,
            "start_at_s": start_at_s, "timeout_s": 20.0, "completed": o.ok,
            "wall_ms": if o.ok { d["wall_ms"].clone() } else { serde_json::json!(o.wall.as_millis() as u64) },
            "total_time_ms": d["total_time_ms"], "transferred_bytes": d["transferred_bytes"],
            "dirty_sync_count": d["dirty_sync_count"], "postcopy_requests": d["postcopy_requests"],
            "zero_pages": d["zero_pages"], "normal_pages": d["normal_pages"], "latency_s": 0.0001,
            "stall_ms": stall.map(|s| s.0), "stall_slow_ops": stall.map(|s| s.1),
            "stall_usual_us": stall.map(|s| s.2),
            "postcopy_blocktime_ms": dst["postcopy_blocktime_ms"],
            "postcopy_vcpu_blocktime_ms": dst["postcopy_vcpu_blocktime_ms"],
        });
        save_run(&dir, &name, &trace, &real)?;
        println!(
            "bench validate: {name}: {} trace bytes, start at {start_at_s} s; {}; requests {}, workload stall {}",
            trace.len(),
            row(workload, mode, &o),
            d["postcopy_requests"],
            stall.map_or("not measured".to_string(), |s| format!(
                "{:.0} ms in {} slow rewrites",
                s.0, s.1
            )),
        );
        h.quit()?;
    }
    println!("bench validate: wrote {}", dir.display());
    Ok(())
}

/// How long a recorded checkpoint may take before the agent cancels it.
const CHECKPOINT_BOUND: &str = "60s";

/// A real checkpoint (QEMU's background snapshot through `miglockctl
/// checkpoint`) of the guest of `h`, its image sent over the paced
/// [`LINK`] to a file, with the guest's trace recorded across it; writes
/// `<workload>-checkpoint.{mltrace,real.json}` into `dir`.
///
/// The copy-on-write pages are measured from outside (`uffdfaults.rs`:
/// QEMU reports none): the vCPU writes that hit a write-protected page, and
/// of those the ones QEMU's snapshot thread served out of order; beside
/// them, as a check, the distinct pages the workload wrote between the
/// "checkpoint started" and "done" notices.
fn validate_checkpoint(
    h: &mut Hosts,
    sc: &Scenario,
    env: &Env<'_>,
    dir: &std::path::Path,
    workload: &str,
    start_at_s: f64,
    deadline: Instant,
) -> Result<(), Failure> {
    let image = env.dir.join(format!("{workload}-validate.ckpt"));
    let (uri, sink) = crate::checkpoint::paced_sink(&image, LINK_BYTES).map_err(Failure::from)?;
    let faults = crate::uffdfaults::UffdFaults::start(&env.dir);
    if let Err(e) = &faults {
        eprintln!("  copy-on-write faults not counted: {e:#}");
    }
    let t = Instant::now();
    let out = h.src_agent.ctl(&[
        "--json",
        "checkpoint",
        "guest",
        "--to",
        &uri,
        "--timeout",
        CHECKPOINT_BOUND,
    ])?;
    let wall = t.elapsed();
    let faults = faults.ok().map(|f| f.stop());
    let cow = match faults {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            eprintln!("  copy-on-write faults not counted: {e:#}");
            None
        }
        None => None,
    };
    let (image_bytes, on_link) = sink
        .join()
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or((0, Duration::ZERO));
    let ck = checkpoint_data(&out)?;
    // The workload says how many pages it wrote while the checkpoint ran.
    let done = match h
        .src
        .wait_line(deadline, |l| l.starts_with("workload: checkpoint done"))
    {
        crate::vm::Wait::Line(l) => l,
        _ => {
            return Err(Failure::new(
                FailKind::Guest,
                "the workload never heard that the checkpoint was done",
            ))
        }
    };
    let written = written_while(&done);
    h.src.send_line("finish").context("typing on the console")?;
    crate::scenario::finish_guest(sc, &mut h.src, deadline)?;
    let trace = collect_trace(&h.src.seen)?;
    let name = format!("{workload}-checkpoint");
    let real = serde_json::json!({
        "workload": workload, "mode": "checkpoint",
        "bandwidth_bytes_per_s": LINK_BYTES,
        "start_at_s": start_at_s, "timeout_s": 60.0, "completed": true,
        // Until the image's last byte is through the link: what migsim's
        // total time is. The agent's and QEMU's own figures beside it.
        "wall_ms": on_link.as_millis() as u64,
        "agent_wall_ms": ck["wall_ms"], "ctl_wall_ms": wall.as_millis() as u64,
        "total_time_ms": ck["total_time_ms"], "downtime_ms": ck["downtime_ms"],
        "transferred_bytes": ck["transferred_bytes"], "image_bytes": image_bytes,
        "zero_pages": ck["zero_pages"], "normal_pages": ck["normal_pages"],
        "cow_faults": cow.map(|c| c.blocked_writes), "cow_served": cow.map(|c| c.served),
        "cow_wait_median_ms": cow.and_then(|c| c.wait_median_s).map(|s| s * 1e3),
        "cow_wait_mean_ms": cow.and_then(|c| c.wait_mean_s).map(|s| s * 1e3),
        "cow_written_pages": written, "latency_s": 0.0001,
    });
    save_run(dir, &name, &trace, &real)?;
    println!(
        "bench validate: {name}: {} trace bytes, start at {start_at_s} s; {workload:<12} checkpoint on the link {} ms (agent {} ms)  downtime {} ms  RAM {:.1} MiB, image {:.1} MiB  copy-on-write: {}  pages the workload wrote meanwhile {}",
        trace.len(),
        on_link.as_millis(),
        ck["wall_ms"],
        ck["downtime_ms"],
        mib(&ck["transferred_bytes"]),
        image_bytes as f64 / 1048576.0,
        cow.map_or("not counted".to_string(), |c| format!(
            "{} writes hit a protected page, {} served out of order (wait median {:.2} ms, mean {:.2} ms)",
            c.blocked_writes, c.served,
            c.wait_median_s.unwrap_or(f64::NAN) * 1e3,
            c.wait_mean_s.unwrap_or(f64::NAN) * 1e3
        )),
        written.map_or("?".to_string(), |n| n.to_string()),
    );
    Ok(())
}

/// N in the workload's "checkpoint done at tick T gen G: N pages written
/// while it ran".
fn written_while(line: &str) -> Option<u64> {
    line.rsplit(": ")
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Checkpoint-and-restore used as a migration (the COW-checkpointing
/// paper's use) against pre-copy and post-copy, on the same guests and the
/// same 32 MiB/s link, fresh hosts for each: the image crosses the link
/// (a paced socket) into a file on the destination, the source quits once
/// it is written, the destination restores it. Everything the guest did
/// after the checkpoint began is lost: its "rollback" is the checkpoint's
/// time.
fn bench_checkpoint(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    // The workload has filled its memory and runs before anything starts.
    let running = |h: &mut Hosts| -> Result<(), Failure> {
        wait_for(&mut h.src, deadline, "@@MIGLOCK ready@@")?;
        match h
            .src
            .wait_line(deadline, |l| tick_of(l).is_some_and(|t| t >= 5))
        {
            crate::vm::Wait::Line(_) => Ok(()),
            _ => Err(Failure::new(FailKind::Guest, "the workload never ran")),
        }
    };
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let link: u64 = 32 << 20;
    for (workload, guest) in [("idle", "plan-idle"), ("write-heavy", "plan-writeheavy")] {
        for (mode, args) in [
            ("precopy", vec!["--timeout", PRECOPY_BOUND]),
            ("postcopy", vec!["--mode", "postcopy"]),
        ] {
            let (sc2, mut h) = fresh(sc, env, guest)?;
            running(&mut h)?;
            let child = h.receive(&["--postcopy"])?;
            let mut all = vec!["--bandwidth", LINK];
            all.extend_from_slice(&args);
            let o = migrate_json(&h, &all)?;
            let _ = finish_incoming(&mut h, child, !o.ok)?;
            rows.push(row(workload, mode, &o));
            results.push(
                serde_json::json!({"workload": workload, "mode": mode, "ok": o.ok,
                "wall_ms": o.wall.as_millis() as u64, "downtime_ms": o.data["downtime_ms"],
                "bytes": o.data["transferred_bytes"], "message": o.message}),
            );
            if o.ok {
                h.arrive(&sc2, deadline)?;
            }
            h.quit()?;
        }
        // Checkpoint over the link, then restore on the destination.
        let (sc2, mut h) = fresh(sc, env, guest)?;
        running(&mut h)?;
        let image = env.dir.join(format!("{workload}.ckpt"));
        let (uri, sink) = crate::checkpoint::paced_sink(&image, link).map_err(Failure::from)?;
        let t = Instant::now();
        let out = h
            .src_agent
            .ctl(&["--json", "checkpoint", "guest", "--to", &uri])?;
        let received = sink.join().ok().and_then(|r| r.ok()).map_or(0, |r| r.0);
        let ckpt_ms = t.elapsed().as_millis() as u64;
        let ck = checkpoint_data(&out)?;
        // The source stops once the image is on the destination; what it
        // printed up to then is read (it prints nothing more: the reader
        // only has to catch up, the bound is for that).
        let _ = h.src.qmp.execute("stop", None);
        let _ = h
            .src
            .wait_line(Instant::now() + Duration::from_millis(500), |_| false);
        let last = last_tick_in(&h.src.seen);
        let t = Instant::now();
        let path = image.display().to_string();
        let out = h
            .dst_agent
            .ctl(&["--json", "restore", "guest", "--from", &path])?;
        if !out.status.success() {
            return Err(Failure::new(FailKind::Host, "restore failed"));
        }
        // Running again: the restored guest's first tick.
        let first = match h.dst.wait_line(deadline, |l| tick_of(l).is_some()) {
            crate::vm::Wait::Line(l) => tick_of(&l).unwrap_or(0),
            _ => {
                return Err(Failure::new(
                    FailKind::Migration,
                    "the restored guest never ticked",
                ))
            }
        };
        let pause_ms = t.elapsed().as_millis() as u64;
        h.dst.send_line("verify").context("typing verify")?;
        let verified = matches!(
            h.dst.wait_line(deadline, |l| l.starts_with("workload: verified")
                || l.starts_with("workload: FAILED")),
            crate::vm::Wait::Line(l) if l.starts_with("workload: verified")
        );
        let total = ckpt_ms + pause_ms;
        rows.push(format!(
            "{workload:<12} {:<24} {:<22} wall {total:>6} ms (checkpoint {ckpt_ms} ms + restore to first tick {pause_ms} ms)  pause {:>4} ms + {pause_ms} ms  sent {:>7.1} MiB  rolled back {} ticks{}",
            "checkpoint+restore",
            "completed",
            ck["downtime_ms"],
            received as f64 / 1048576.0,
            last.saturating_sub(first) + 1,
            if verified { "" } else { "  MEMORY DID NOT VERIFY" }
        ));
        results.push(
            serde_json::json!({"workload": workload, "mode": "checkpoint+restore",
            "ok": verified, "wall_ms": total, "checkpoint_ms": ckpt_ms,
            "restore_to_first_tick_ms": pause_ms, "snapshot_downtime_ms": ck["downtime_ms"],
            "bytes": received, "rolled_back_ticks": last.saturating_sub(first) + 1}),
        );
        let _ = sc2;
        h.quit()?;
        if !verified {
            return Err(Failure::new(
                FailKind::Migration,
                "restored memory did not verify",
            ));
        }
    }
    println!("bench checkpoint: link {LINK}/s, 256 MiB guest, pre-copy bounded at {PRECOPY_BOUND}");
    for r in &rows {
        println!("bench checkpoint: {r}");
    }
    env.write_result(&serde_json::json!({"link_bytes_per_s": link, "runs": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_workloads_stall_line() {
        let l = "workload: stalls usual_us=11.0 threshold_us=500 before_ops=9 before_slow=0 \
                 before_ms=0.0 pending_ops=4 pending_slow=2 pending_ms=12.5 postcopy_ops=3 \
                 postcopy_slow=1 postcopy_ms=3.0";
        assert_eq!(field(l, "pending_ms"), Some(12.5));
        assert_eq!(field(l, "postcopy_slow"), Some(1.0));
        assert_eq!(field(l, "ms"), None);
    }

    #[test]
    fn figures_are_medians_with_min_and_max_beside() {
        let runs = [
            [5.0, 1.0, 10.0, 100.0, 7.0],
            [1.0, 2.0, 30.0, 300.0, 8.0],
            [3.0, 3.0, 20.0, 200.0, 9.0],
        ];
        let f = figures(&HINT_FIGURES, &runs);
        assert_eq!(f["stall_ms"], 3.0);
        assert_eq!(f["stall_ms_min"], 1.0);
        assert_eq!(f["stall_ms_max"], 5.0);
        assert_eq!(f["requests"], 20.0);
        assert_eq!(f["bytes_max"], 300.0);
        assert_eq!(f["workload_vcpu_blocktime_ms_min"], 7.0);
        assert_eq!(spread(&[4.0, 1.0]), (2.5, 1.0, 4.0));
        assert_eq!(
            figures(&HINT_FIGURES, &[[1153.3999999, 0.0, 0.0, 0.0, 0.0]])["stall_ms"],
            1153.4
        );
    }

    #[test]
    fn lost_work_counts_the_ticks_missing_at_the_rate_before() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        // 10 ticks/s for 6 s at the source, then the migration from 6 s to
        // 8 s: 2 s with no tick at all, then 10 ticks/s on at the
        // destination (from tick 60).
        let mut ticks: Vec<(Instant, u64)> = (0..=60).map(|n| (at(n * 100), n)).collect();
        ticks.extend((0..30).map(|i| (at(8000 + i * 100), 61 + i)));
        // The source's last tick, printed again by the destination later.
        ticks.push((at(8050), 60));
        let l = lost_work(&ticks, at(6000), at(8000)).unwrap();
        assert!((l.rate - 10.0).abs() < 1e-9, "{l:?}");
        assert!((l.expected - 20.0).abs() < 1e-9, "{l:?}");
        // From tick 60 at 6 s to tick 61 at 8 s: one tick done.
        assert!((l.done - 1.0).abs() < 1e-9, "{l:?}");
        assert!((l.pct() - 95.0).abs() < 1e-9);
        assert!((l.seconds() - 1.9).abs() < 1e-9);
        // Ends between ticks are read between them; no loss, no gain.
        let l = lost_work(&ticks, at(2050), at(4050)).unwrap();
        assert!(l.pct().abs() < 1e-9, "{l:?}");
        // No tick after the end: nothing to say.
        assert_eq!(lost_work(&ticks, at(2000), at(20000)), None);
        // Less than a second of ticks before the start: no rate.
        assert_eq!(lost_work(&ticks, at(500), at(1000)), None);
    }

    #[test]
    fn figures_leave_out_what_a_run_did_not_reach() {
        let runs = [[f64::NAN, 1.0], [4.0, 3.0], [2.0, 2.0]];
        let f = figures(&["total_ms", "slowdown_pct"], &runs);
        assert_eq!(f["total_ms"], 3.0);
        assert_eq!(f["slowdown_pct"], 2.0);
        let f = figures(&["total_ms"], &[[f64::NAN]]);
        assert!(f["total_ms"].is_null() && f["total_ms_max"].is_null());
    }

    #[test]
    fn kernel_messages_inside_the_trace_are_left_out() {
        assert!(base64_line("xgmhIpcLADwAAgAH6y8ABQALAJOXAwABAQEBAQBFBg=="));
        assert!(!base64_line("hrtimer: interrupt took 14014755 ns"));
        assert!(!base64_line(""));
    }

    #[test]
    fn reads_the_pages_written_during_a_checkpoint() {
        let l = "workload: checkpoint done at tick 96 gen 98: 16384 pages written while it ran";
        assert_eq!(written_while(l), Some(16384));
        assert_eq!(written_while("workload: checkpoint done at tick 9"), None);
    }
}
