// SPDX-License-Identifier: GPL-2.0

//! Guests survive migrations: chains of live migrations of guests that
//! write memory, between two "hosts" (a QEMU and a `miglockd` each), driven
//! as an operator drives them (`miglockctl migrate` on the source's agent,
//! `miglockctl incoming` on the destination's). After every migration the
//! guest proves, where it now runs, that it is alive and whole: its
//! workload ticks on, verifies every page it wrote, ticks on for a while
//! longer, and the kernel logs no oops; with the module loaded the
//! destination's agent also hears from it. A migration that does not
//! converge leaves the guest on the source, which must pass the same proof.
//!
//! `migrate-survival` (in `make test`) runs a few migrations per mode;
//! `miglock-harness soak` (`make soak`) runs at least a hundred over every
//! workload and mode, bounded in count and time.

use crate::pair::{self, Pair, Proof, SIGN_OF_LIFE};
use crate::scenario::{Env, FailKind, Failure};
use crate::vm::Vm;
use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The link every migration gets (bytes/s, as miglockctl takes it).
const LINK: &str = "32M";
/// How long a pre-copy may copy before it counts as not converging.
const PRECOPY_BOUND: &str = "20s";

/// What a guest does while it is migrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Name in the results.
    pub name: &'static str,
    /// Memory it writes and verifies.
    pub mib: u32,
    /// Pages rewritten per tick.
    pub dirty_pages: u32,
    /// Tick period.
    pub tick_ms: u32,
}

impl Workload {
    /// The rate it asks to write at, MiB/s (TCG may reach less).
    pub fn mib_per_s(&self) -> f64 {
        f64::from(self.dirty_pages) * 4096.0 / 1048576.0 * 1000.0 / f64::from(self.tick_ms)
    }
}

/// A ticker that writes almost nothing.
pub const IDLE: Workload = Workload {
    name: "idle",
    mib: 4,
    dirty_pages: 1,
    tick_ms: 100,
};
/// Half the link rate over 32 MiB: pre-copy converges in a few passes, each
/// of which the guest rewrites behind.
pub const HALF_LINK: Workload = Workload {
    name: "half-link",
    mib: 32,
    dirty_pages: 128,
    tick_ms: 30,
};
/// About the link rate over 32 MiB: pre-copy cannot converge within the
/// default downtime limit; post-copy can.
pub const LINK_RATE: Workload = Workload {
    name: "link-rate",
    mib: 32,
    dirty_pages: 256,
    tick_ms: 30,
};
/// Far beyond the link (the workload of the report that found the
/// destination dying after a "completed" pre-copy).
pub const WRITE_HEAVY: Workload = Workload {
    name: "write-heavy",
    mib: 32,
    dirty_pages: 1024,
    tick_ms: 10,
};

/// How a migration is asked for (`miglockctl migrate --mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Pre-copy, bounded by [`PRECOPY_BOUND`].
    Precopy,
    /// Post-copy from the start.
    Postcopy,
    /// One pre-copy pass, then post-copy.
    PrecopyThenPostcopy,
    /// Whatever the planner chooses from the guest's hints.
    Auto,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Precopy => "precopy",
            Mode::Postcopy => "postcopy",
            Mode::PrecopyThenPostcopy => "precopy-then-postcopy",
            Mode::Auto => "auto",
        }
    }
}

/// One chain: a guest booted once and migrated back and forth.
#[derive(Clone, Debug)]
pub struct Group {
    /// The guest runs the module (on the doorbell) and the tracer.
    pub module: bool,
    /// vCPUs.
    pub cpus: u32,
    /// What it writes.
    pub workload: Workload,
    /// Modes its migrations cycle through.
    pub modes: Vec<Mode>,
}

impl Group {
    /// The guest of this chain: `survive.sh` with its workload and, if it
    /// asks, the module and tracer.
    fn guest(&self) -> pair::Guest {
        let w = self.workload;
        pair::Guest {
            script: "survive",
            cpus: self.cpus,
            append: format!(
                " mlwork={},{},{} mlmodule={}",
                w.mib,
                w.dirty_pages,
                w.tick_ms,
                u8::from(self.module)
            ),
            tick_ms: u64::from(w.tick_ms),
        }
    }

    fn name(&self) -> String {
        format!(
            "{}-{}cpu-{}",
            if self.module { "module" } else { "bare" },
            self.cpus,
            self.workload.name
        )
    }
}

/// How one migration ended for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Completed; alive and whole on the destination.
    Survived,
    /// Pre-copy gave up (not converging); alive and whole on the source.
    NotConverged,
    /// The agent refused the mode on this QEMU (a fence), or the migration
    /// failed before the switchover; alive and whole on the source.
    Refused,
    /// Its memory did not verify.
    Corrupted,
    /// It stopped, hung or oopsed.
    Died,
}

/// One migration's record.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Chain it belongs to.
    pub group: String,
    /// Mode asked for.
    pub mode: Mode,
    /// The planner's choice, for `auto`.
    pub chosen: Option<String>,
    /// What happened to the guest.
    pub outcome: Outcome,
    /// Pages that did not verify.
    pub bad_pages: u64,
    /// Why, for anything but survival.
    pub note: String,
    /// The agent's wall time for the migration.
    pub wall_ms: u64,
    /// QEMU's figures, when it completed.
    pub downtime_ms: Value,
    /// Bytes sent.
    pub transferred_bytes: Value,
    /// Post-copy page requests.
    pub postcopy_requests: Value,
}

/// Migrates `p`'s guest (of `group`) once in `mode`, as an operator does
/// with `miglockctl`, and checks it survived.
fn migrate(
    p: &mut Pair,
    env: &Env<'_>,
    plan: &Plan,
    group: &Group,
    mode: Mode,
) -> Result<Record, Failure> {
    let src = p.on;
    let dst = 1 - src;
    let since_src = p.vm().seen.len();
    let states_before = p.guest_states(dst);
    let mut rx = p.hosts[dst].agent.receive(&["--postcopy"])?;
    let uri = rx.uri.clone();
    let t = Instant::now();
    let mut args = vec![
        "--json",
        "migrate",
        "guest",
        "--to",
        &uri,
        "--mode",
        mode.arg(),
        "--bandwidth",
        LINK,
        "--timeout",
        PRECOPY_BOUND,
    ];
    if let Some(cap) = &plan.postcopy_bandwidth {
        args.extend(["--postcopy-bandwidth", cap]);
    }
    let out = p.hosts[src].agent.ctl(&args)?;
    let wall = t.elapsed();
    if !out.status.success() {
        // Nothing will arrive: the destination's agent stops listening.
        let _ = rx.child.kill();
    }
    let _ = rx.child.wait();
    let _ = rx.said.join();
    let (mut ok, mut data, mut message) = (false, Value::Null, String::new());
    let mut chosen = None;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_default();
        match v["kind"].as_str() {
            Some("ok") => {
                ok = true;
                data = v["data"].clone();
                chosen = data["ran"].as_str().map(String::from);
            }
            Some("error") => message = v["message"].as_str().unwrap_or("").to_string(),
            _ => {}
        }
    }
    let last_src = p.last_tick();
    let (outcome, bad, note) = if ok {
        p.on = dst;
        let since = p.vm().seen.len();
        let (mut outcome, bad, mut note) = judge(p.prove_alive(last_src, since));
        if outcome == Outcome::Survived && group.module {
            // The module on the new host talks to that host's agent.
            let until = Instant::now() + SIGN_OF_LIFE;
            while p.guest_states(dst) == states_before && Instant::now() < until {
                std::thread::yield_now();
            }
            if p.guest_states(dst) == states_before {
                outcome = Outcome::Died;
                note = "the module never reported its state to the destination's agent".into();
            }
        }
        (outcome, bad, note)
    } else {
        let (outcome, bad, note) = judge(p.prove_alive(last_src, since_src));
        let ended = if message.contains("not converging") {
            Outcome::NotConverged
        } else {
            Outcome::Refused
        };
        match outcome {
            Outcome::Survived => (ended, bad, message.clone()),
            o => (o, bad, format!("{message}; then {note}")),
        }
    };
    let rec = Record {
        group: group.name(),
        mode,
        chosen,
        outcome,
        bad_pages: bad,
        note,
        wall_ms: wall.as_millis() as u64,
        downtime_ms: data["downtime_ms"].clone(),
        transferred_bytes: data["transferred_bytes"].clone(),
        postcopy_requests: data["postcopy_requests"].clone(),
    };
    if matches!(
        outcome,
        Outcome::Survived | Outcome::NotConverged | Outcome::Refused
    ) {
        p.fresh_destination(env)?;
    }
    Ok(rec)
}

/// A proof as an outcome, the pages it lost and why.
fn judge(p: Proof) -> (Outcome, u64, String) {
    match p {
        Proof::Alive => (Outcome::Survived, 0, String::new()),
        Proof::Corrupted(bad, why) => (Outcome::Corrupted, bad, why),
        Proof::Died(why) => (Outcome::Died, 0, why),
    }
}

/// Counts of outcomes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Migrations started.
    pub migrations: u64,
    /// Completed, and the guest survived on the destination.
    pub survived: u64,
    /// Pre-copy gave up; the guest survived on the source.
    pub not_converged: u64,
    /// Refused or failed before the switchover; the guest survived.
    pub refused: u64,
    /// Guests that died (stopped, hung, oopsed).
    pub guest_died: u64,
    /// Migrations after which memory did not verify.
    pub corrupted: u64,
    /// Pages that did not verify, summed.
    pub pages_corrupted: u64,
}

impl Tally {
    fn add(&mut self, r: &Record) {
        self.migrations += 1;
        match r.outcome {
            Outcome::Survived => self.survived += 1,
            Outcome::NotConverged => self.not_converged += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Died => self.guest_died += 1,
            Outcome::Corrupted => self.corrupted += 1,
        }
        self.pages_corrupted += r.bad_pages;
    }
}

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Chains, run in turn.
    pub groups: Vec<Group>,
    /// Migrations per chain before the guest is booted afresh.
    pub chain: usize,
    /// Stop once this many migrations moved the guest (attempts that did
    /// not converge or were refused come on top)...
    pub migrations: usize,
    /// ...or once this much time has passed (the running chain finishes
    /// its current migration).
    pub budget: Duration,
    /// How long each guest's workload runs before its first migration.
    pub warmup: Duration,
    /// Let the agents run modes fenced on this QEMU (to reproduce what the
    /// fence prevents).
    pub allow_fenced: bool,
    /// The post-copy phase's cap (`miglockctl migrate --postcopy-bandwidth`,
    /// 0 for none); by default the agent's (the link, except the hybrid's
    /// on QEMU 10.0 and later: none).
    pub postcopy_bandwidth: Option<String>,
    /// Run on this Debian QEMU release kept beside the system's
    /// (`scripts/qemu.sh`), where the agent must fence every mode that
    /// relies on the dirty log: such a migration must be refused, and
    /// `auto` must run post-copy.
    pub fenced_qemu: Option<&'static str>,
}

/// The QEMU in use, as `query-version` tells it.
fn qemu_version(vm: &mut Vm) -> String {
    vm.qmp
        .execute("query-version", None)
        .map(|v| {
            let q = &v["qemu"];
            format!(
                "{}.{}.{}{}",
                q["major"],
                q["minor"],
                q["micro"],
                v["package"]
                    .as_str()
                    .map(|p| format!(" ({})", p.trim()))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `plan` and writes `result.json` into `out`; fails if any guest
/// died or lost memory.
pub fn run(plan: &Plan, env: &Env<'_>, out: &Path) -> Result<(), Failure> {
    let fenced_qemu = match plan.fenced_qemu {
        Some(release) => Some(debian_qemu(release)?),
        None => None,
    };
    let env = &Env {
        qemu: fenced_qemu.as_deref().unwrap_or(env.qemu),
        dir: env.dir.clone(),
        ..*env
    };
    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut qemu = String::new();
    let mut round = 0;
    // Migrations that moved the guest (whatever became of it).
    let moved = |records: &[Record]| {
        records
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::NotConverged | Outcome::Refused))
            .count()
    };
    'outer: while moved(&records) < plan.migrations && started.elapsed() < plan.budget {
        for (gi, group) in plan.groups.iter().enumerate() {
            if moved(&records) >= plan.migrations || started.elapsed() >= plan.budget {
                break 'outer;
            }
            let dir = env.dir.join(format!("{}-{round}", group.name()));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "  chain {} (round {}): {} vCPU(s), {} ({:.0} MiB/s asked), {}",
                group.name(),
                round + 1,
                group.cpus,
                group.workload.name,
                group.workload.mib_per_s(),
                if group.module {
                    "module + tracer on the doorbell"
                } else {
                    "no module"
                }
            );
            let extra = if plan.allow_fenced {
                "[planner]\nallow_fenced = true\n"
            } else {
                ""
            };
            let mut pair = Pair::start(env, &dir, group.guest(), extra)?;
            pair.warm_up(plan.warmup)?;
            if qemu.is_empty() {
                qemu = qemu_version(pair.vm());
                eprintln!("  QEMU {qemu}");
            }
            for i in 0..plan.chain {
                if moved(&records) >= plan.migrations || started.elapsed() >= plan.budget {
                    break;
                }
                // Chains of the same group start at different modes.
                let mode = group.modes[(i + round + gi) % group.modes.len()];
                let rec = migrate(&mut pair, env, plan, group, mode)?;
                eprintln!(
                    "  [{:>3}] {:<24} {:<22} {:<13} {:>6} ms{}{}",
                    records.len() + 1,
                    rec.group,
                    format!(
                        "{}{}",
                        mode.arg(),
                        rec.chosen
                            .as_deref()
                            .filter(|_| mode == Mode::Auto)
                            .map(|c| format!("→{c}"))
                            .unwrap_or_default()
                    ),
                    format!("{:?}", rec.outcome).to_lowercase(),
                    rec.wall_ms,
                    if rec.bad_pages > 0 {
                        format!(" {} pages bad", rec.bad_pages)
                    } else {
                        String::new()
                    },
                    if rec.note.is_empty() || rec.outcome == Outcome::NotConverged {
                        String::new()
                    } else {
                        format!(": {}", rec.note)
                    }
                );
                let dead = matches!(rec.outcome, Outcome::Died | Outcome::Corrupted);
                records.push(rec);
                write(out, &qemu, env, plan, &records, started)?;
                if dead {
                    // This guest is gone: the next chain boots a new one.
                    break;
                }
            }
            pair.quit();
        }
        round += 1;
    }
    let total = write(out, &qemu, env, plan, &records, started)?;
    eprintln!(
        "  {} migrations in {:.0} s on QEMU {qemu}: {} survived, {} did not converge, {} refused, {} guests died, {} migrations corrupted memory ({} pages)",
        total.migrations,
        started.elapsed().as_secs_f64(),
        total.survived,
        total.not_converged,
        total.refused,
        total.guest_died,
        total.corrupted,
        total.pages_corrupted
    );
    if total.guest_died > 0 || total.corrupted > 0 {
        return Err(Failure::new(
            FailKind::Migration,
            format!(
                "{} guests died and {} migrations corrupted memory in {} migrations; see {}",
                total.guest_died,
                total.corrupted,
                total.migrations,
                out.join("result.json").display()
            ),
        ));
    }
    if (total.migrations as usize) < plan.migrations.min(1) {
        return Err(Failure::new(FailKind::Harness, "no migration ran"));
    }
    if plan.fenced_qemu.is_some() {
        fence_held(&records)?;
    }
    Ok(())
}

/// The path of Debian QEMU `release`, unpacked beside the system's.
fn debian_qemu(release: &str) -> Result<std::path::PathBuf, Failure> {
    let out = std::process::Command::new(crate::top().join("scripts/qemu.sh"))
        .arg(release)
        .output()
        .context("scripts/qemu.sh")?;
    if !out.status.success() {
        return Err(Failure::new(
            FailKind::Harness,
            format!(
                "QEMU {release} is not available ('make deps'): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().into())
}

/// On a fenced QEMU every mode that relies on the dirty log was refused
/// with the fence's reason, and `auto` ran post-copy.
fn fence_held(records: &[Record]) -> Result<(), Failure> {
    let mut wrong = Vec::new();
    for r in records {
        let ok = match r.mode {
            Mode::Precopy | Mode::PrecopyThenPostcopy => {
                r.outcome == Outcome::Refused && r.note.contains("dirty log")
            }
            Mode::Auto => r.chosen.as_deref() == Some("postcopy"),
            Mode::Postcopy => r.outcome == Outcome::Survived,
        };
        if !ok {
            wrong.push(format!(
                "{} {}: {:?} {}",
                r.group,
                r.mode.arg(),
                r.outcome,
                r.note
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            FailKind::Host,
            format!("the fence did not hold: {}", wrong.join("; ")),
        ))
    }
}

fn write(
    out: &Path,
    qemu: &str,
    env: &Env<'_>,
    plan: &Plan,
    records: &[Record],
    started: Instant,
) -> Result<Tally, Failure> {
    let mut total = Tally::default();
    let mut by_mode: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_group: BTreeMap<String, Tally> = BTreeMap::new();
    for r in records {
        total.add(r);
        by_mode.entry(r.mode.arg()).or_default().add(r);
        by_group.entry(r.group.clone()).or_default().add(r);
    }
    let v = json!({
        "qemu": qemu,
        "accel": format!("{:?}", env.accel).to_lowercase(),
        "link_bytes_per_s": 32u64 << 20,
        "postcopy_bandwidth": plan.postcopy_bandwidth,
        "allow_fenced": plan.allow_fenced,
        "migrations": total.migrations,
        "survived": total.survived,
        "not_converged": total.not_converged,
        "refused": total.refused,
        "guest_died": total.guest_died,
        "corrupted_migrations": total.corrupted,
        "pages_corrupted": total.pages_corrupted,
        "seconds": started.elapsed().as_secs(),
        "target_migrations": plan.migrations,
        "by_mode": by_mode,
        "by_group": by_group,
        "runs": records,
    });
    std::fs::create_dir_all(out).map_err(anyhow::Error::from)?;
    std::fs::write(
        out.join("result.json"),
        serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?,
    )
    .map_err(anyhow::Error::from)?;
    Ok(total)
}

/// Every mode a chain of `workload` may be migrated in: pre-copy first for
/// workloads it can keep up with, last for those it cannot.
fn modes_for(workload: Workload) -> &'static [Mode] {
    if workload.mib_per_s() < 24.0 {
        &[
            Mode::Precopy,
            Mode::Postcopy,
            Mode::Auto,
            Mode::PrecopyThenPostcopy,
        ]
    } else {
        &[
            Mode::Postcopy,
            Mode::Auto,
            Mode::PrecopyThenPostcopy,
            Mode::Precopy,
        ]
    }
}

/// `migrate-survival` (in `make test`): a few migrations per mode, with
/// and without the module, on 2 and 1 vCPUs. Every mode the planner may
/// choose runs at least once, the hybrid included (`auto` runs it with
/// `[planner] precopy_then_postcopy`).
pub fn short() -> Plan {
    Plan {
        groups: vec![
            Group {
                module: true,
                cpus: 2,
                workload: HALF_LINK,
                modes: vec![
                    Mode::Precopy,
                    Mode::Postcopy,
                    Mode::Auto,
                    Mode::PrecopyThenPostcopy,
                ],
            },
            Group {
                module: false,
                cpus: 1,
                workload: HALF_LINK,
                modes: vec![Mode::Postcopy, Mode::Precopy],
            },
        ],
        chain: 4,
        migrations: 6,
        budget: Duration::from_secs(240),
        warmup: Duration::ZERO,
        allow_fenced: false,
        postcopy_bandwidth: None,
        fenced_qemu: None,
    }
}

/// `migrate-survival-qemu72` (in `make test`): Debian 12's QEMU 7.2 where
/// it is safe. The agent refuses pre-copy and the hybrid there and plans
/// post-copy, and post-copy guests arrive whole.
pub fn qemu72() -> Plan {
    Plan {
        groups: vec![Group {
            module: true,
            cpus: 2,
            workload: HALF_LINK,
            modes: vec![
                Mode::Postcopy,
                Mode::Precopy,
                Mode::PrecopyThenPostcopy,
                Mode::Auto,
            ],
        }],
        chain: 4,
        // The pre-copy and the hybrid in between are refused: they move nothing.
        migrations: 2,
        budget: Duration::from_secs(180),
        warmup: Duration::ZERO,
        allow_fenced: false,
        postcopy_bandwidth: None,
        fenced_qemu: Some("7.2"),
    }
}

/// Which part of the soak to run (all of it by default).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    workloads: Vec<Workload>,
    module: Option<bool>,
    cpus: Option<u32>,
    modes: Vec<Mode>,
}

impl Filter {
    /// From the command line's names; an unknown name is an error.
    pub fn new(
        workloads: &[String],
        module: Option<bool>,
        cpus: Option<u32>,
        modes: &[String],
    ) -> anyhow::Result<Filter> {
        let workloads = workloads
            .iter()
            .map(|w| {
                WORKLOADS
                    .iter()
                    .find(|k| k.name == w)
                    .copied()
                    .with_context(|| format!("no workload '{w}'"))
            })
            .collect::<anyhow::Result<_>>()?;
        let modes = modes
            .iter()
            .map(|m| {
                MODES
                    .iter()
                    .find(|k| k.arg() == m)
                    .copied()
                    .with_context(|| format!("no mode '{m}'"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Filter {
            workloads,
            module,
            cpus,
            modes,
        })
    }
}

/// Every workload, in the order the soak runs them.
pub const WORKLOADS: [Workload; 4] = [HALF_LINK, LINK_RATE, WRITE_HEAVY, IDLE];
/// Every mode.
pub const MODES: [Mode; 4] = [
    Mode::Precopy,
    Mode::Postcopy,
    Mode::PrecopyThenPostcopy,
    Mode::Auto,
];

/// `make soak`: every workload, with and without the module, on 1 and 2
/// vCPUs, in every mode the planner may choose (or what `filter` keeps).
pub fn soak(migrations: usize, budget: Duration, chain: usize, filter: &Filter) -> Plan {
    let mut groups = Vec::new();
    for workload in WORKLOADS {
        if !filter.workloads.is_empty() && !filter.workloads.contains(&workload) {
            continue;
        }
        for cpus in [2, 1] {
            for module in [true, false] {
                if filter.cpus.is_some_and(|c| c != cpus)
                    || filter.module.is_some_and(|m| m != module)
                {
                    continue;
                }
                // The modes given, in their order (repeats too), or all.
                let cycle = if filter.modes.is_empty() {
                    modes_for(workload)
                } else {
                    &filter.modes[..]
                };
                let modes: Vec<Mode> = cycle
                    .iter()
                    .copied()
                    // Without the module there are no hints: auto is pre-copy.
                    .filter(|&m| module || m != Mode::Auto)
                    .collect();
                if modes.is_empty() {
                    continue;
                }
                groups.push(Group {
                    module,
                    cpus,
                    workload,
                    modes,
                });
            }
        }
    }
    Plan {
        groups,
        chain: chain.max(1),
        migrations,
        budget,
        warmup: Duration::ZERO,
        allow_fenced: false,
        postcopy_bandwidth: None,
        fenced_qemu: None,
    }
}
