// SPDX-License-Identifier: GPL-2.0

//! Two "hosts" (a `miglockd` each, and at times a QEMU) and one guest that
//! moves between them, as often as a scenario migrates it: after each
//! completed migration the old source quits and a fresh destination waits
//! on the host the guest left. And the proof every migration test asks of
//! the guest where it ends up: alive and whole.

use crate::agentdemo::Agent;
use crate::scenario::{Env, FailKind, Failure};
use crate::vm::{Console, Doorbell, Vm, VmSpec, Wait};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Ticks after the verification that prove the guest goes on.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a guest may take to show each sign of life.
pub const SIGN_OF_LIFE: Duration = Duration::from_secs(30);

/// What the guest is.
#[derive(Clone, Debug)]
pub struct Guest {
    /// Its script, `tests/scenarios/<script>.sh`; it prints
    /// `@@MIGLOCK ready@@` and then runs `mlworkload`.
    pub script: &'static str,
    /// vCPUs.
    pub cpus: u32,
    /// Added to the kernel command line.
    pub append: String,
    /// `mlworkload`'s tick period.
    pub tick_ms: u64,
}

/// One "host": an agent and, at times, a QEMU.
pub struct Host {
    /// Its name (`a`, `b`): sockets and logs are named after it.
    pub name: &'static str,
    /// Its agent.
    pub agent: Agent,
    /// Its QEMU, if one runs.
    pub vm: Option<Vm>,
}

/// Two hosts and the guest on one of them.
pub struct Pair {
    /// The hosts.
    pub hosts: [Host; 2],
    /// Index of the host the guest runs on.
    pub on: usize,
    /// The guest.
    pub guest: Guest,
    dir: PathBuf,
}

/// The tick number in a workload line `tick N`.
pub fn tick_of(line: &str) -> Option<u64> {
    line.strip_prefix("tick ")?.trim().parse().ok()
}

/// The last tick among a console's lines `seen` (0 before the first).
pub fn last_tick_in(seen: &[String]) -> u64 {
    seen.iter().filter_map(|l| tick_of(l)).max().unwrap_or(0)
}

/// Kernel log lines that mean the guest's kernel is in trouble.
pub fn kernel_problem(line: &str) -> bool {
    [
        "BUG:",
        "Oops",
        "general protection",
        "Call Trace:",
        "Kernel panic",
        "WARNING:",
        "rcu_sched self-detected",
        "watchdog: BUG",
    ]
    .iter()
    .any(|p| line.contains(p))
}

/// What the guest showed after a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// Ticking, every page verified, ticking on, no kernel trouble.
    Alive,
    /// Its memory did not verify: this many pages, and what it said.
    Corrupted(u64, String),
    /// Stopped, hung or oopsed: why.
    Died(String),
}

/// The guest on console `vm` proves it is alive and whole: its workload
/// (ticking every `tick_ms`) ticks past `after`, verifies its memory, ticks
/// on for [`HEARTBEAT`], and its kernel logged nothing bad since line
/// `since`.
pub fn prove_alive(vm: &mut Console, tick_ms: u64, after: u64, since: usize) -> Proof {
    let log = vm.serial_log.display().to_string();
    let wait = |vm: &mut Console, what: &str, pred: &mut dyn FnMut(&str) -> bool| match vm
        .wait_line(Instant::now() + SIGN_OF_LIFE, |l| pred(l))
    {
        Wait::Line(l) => Ok(l),
        Wait::Timeout => Err(format!("no {what} within {SIGN_OF_LIFE:?}; log: {log}")),
        Wait::Closed => Err(format!("the guest stopped before {what}; log: {log}")),
    };
    let result = (|| {
        let first = wait(vm, "tick", &mut |l| tick_of(l).is_some_and(|t| t > after))?;
        let first = tick_of(&first).unwrap_or(after);
        vm.send_line("verify").map_err(|e| e.to_string())?;
        let said = wait(vm, "verification", &mut |l| {
            l.starts_with("workload: verified") || l.starts_with("workload: FAILED")
        })?;
        let beats = HEARTBEAT.as_millis() as u64 / tick_ms.max(1);
        wait(vm, "heartbeat", &mut |l| {
            tick_of(l).is_some_and(|t| t >= first + beats)
        })?;
        Ok::<_, String>(said)
    })();
    let problem = vm.seen[since.min(vm.seen.len())..]
        .iter()
        .find(|l| kernel_problem(l))
        .cloned();
    match (result, problem) {
        (_, Some(p)) => Proof::Died(format!("kernel: {p}; log: {log}")),
        (Err(why), None) => Proof::Died(why),
        (Ok(said), None) if said.starts_with("workload: FAILED") => {
            let bad = said
                .split_whitespace()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Proof::Corrupted(bad, format!("{said}; log: {log}"))
        }
        (Ok(_), None) => Proof::Alive,
    }
}

impl Pair {
    fn spec(&self, env: &Env<'_>, host: &str, incoming: bool) -> VmSpec {
        let mut spec = env.spec_with(host, self.guest.script, incoming, Doorbell::Agent);
        spec.dir = self.dir.clone();
        spec.cpus = self.guest.cpus;
        spec.append.push_str(&self.guest.append);
        spec
    }

    /// Starts both agents (`agent_extra` added to their configuration), the
    /// guest on host `a` (until it is ready) and a destination waiting on
    /// host `b`.
    pub fn start(
        env: &Env<'_>,
        dir: &Path,
        guest: Guest,
        agent_extra: &str,
    ) -> Result<Pair, Failure> {
        let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
        let bins = bins.parent().context("harness directory")?.to_path_buf();
        std::fs::create_dir_all(dir).map_err(anyhow::Error::from)?;
        let mk = |name: &'static str| -> Result<Host, Failure> {
            Ok(Host {
                name,
                agent: Agent::start_with(&bins, dir, name, agent_extra)?,
                vm: None,
            })
        };
        let mut p = Pair {
            hosts: [mk("a")?, mk("b")?],
            on: 0,
            guest,
            dir: dir.to_path_buf(),
        };
        let src = Vm::start(&p.spec(env, "a", false))?;
        let dst = Vm::start(&p.spec(env, "b", true))?;
        p.hosts[0].vm = Some(src);
        p.hosts[1].vm = Some(dst);
        let deadline = Instant::now() + Duration::from_secs(90);
        let vm = p.vm();
        match vm.wait_line(deadline, |l| l.contains("@@MIGLOCK ready@@")) {
            Wait::Line(_) => Ok(p),
            _ => Err(Failure::new(
                FailKind::Guest,
                format!(
                    "the guest never got ready; log: {}",
                    vm.serial_log.display()
                ),
            )),
        }
    }

    /// Lets the workload run for `d` (counted in its own ticks).
    pub fn warm_up(&mut self, d: Duration) -> Result<(), Failure> {
        let ticks = d.as_millis() as u64 / self.guest.tick_ms.max(1);
        if ticks == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + d * 3 + SIGN_OF_LIFE;
        let vm = self.vm();
        match vm.wait_line(deadline, |l| tick_of(l).is_some_and(|t| t >= ticks)) {
            Wait::Line(_) => Ok(()),
            _ => Err(Failure::new(
                FailKind::Guest,
                format!(
                    "the workload did not run for {d:?}; log: {}",
                    vm.serial_log.display()
                ),
            )),
        }
    }

    /// The QEMU the guest runs in.
    pub fn vm(&mut self) -> &mut Vm {
        self.hosts[self.on]
            .vm
            .as_mut()
            .expect("the guest's host runs a QEMU")
    }

    /// The QEMU waiting for the guest.
    pub fn destination(&mut self) -> &mut Vm {
        self.hosts[1 - self.on]
            .vm
            .as_mut()
            .expect("a destination QEMU waits")
    }

    /// The last tick the guest printed where it runs.
    pub fn last_tick(&mut self) -> u64 {
        last_tick_in(&self.vm().seen)
    }

    /// The guest proves it is alive and whole where it runs (see
    /// [`prove_alive`]).
    pub fn prove_alive(&mut self, after: u64, since: usize) -> Proof {
        let tick_ms = self.guest.tick_ms;
        prove_alive(self.vm(), tick_ms, after, since)
    }

    /// A fresh QEMU waiting for the guest on the host it is not on.
    pub fn fresh_destination(&mut self, env: &Env<'_>) -> Result<(), Failure> {
        let other = 1 - self.on;
        if let Some(old) = self.hosts[other].vm.take() {
            let _ = old.quit();
        }
        let spec = self.spec(env, self.hosts[other].name, true);
        self.hosts[other].vm = Some(Vm::start(&spec)?);
        Ok(())
    }

    /// How many `guest-state` records `host`'s agent has.
    pub fn guest_states(&self, host: usize) -> usize {
        self.hosts[host]
            .agent
            .audit()
            .iter()
            .filter(|r| r["event"] == "guest-state")
            .count()
    }

    /// Stops both QEMUs (the agents stop when dropped).
    pub fn quit(self) {
        for h in self.hosts {
            if let Some(vm) = h.vm {
                let _ = vm.quit();
            }
        }
    }
}
