// SPDX-License-Identifier: GPL-2.0

//! Scenarios in which what a lock call returns must be what the host holds:
//! a signal lands mid-request (against the stub host, which answers
//! slowly and refuses now and then), 64 threads lock at once, and a holder
//! lets go with the paper's flag while another holds on, and locks taken
//! without a round trip (all against a real `miglockd`). Each compares the
//! guest's holds with the host's.

use crate::agentdemo::{host_fail, Agent};
use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::stubhost;
use crate::vm::{Doorbell, Vm, Wait};
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `mld-interrupted-lock`.
    Interrupted,
    /// `mld-request-storm`.
    Storm,
    /// `mld-flag-release`.
    FlagRelease,
    /// `mld-fast-paths`.
    FastPaths,
}

/// Runs `which`.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant, which: Which) -> Result<(), Failure> {
    match which {
        Which::Interrupted => interrupted(sc, env, deadline),
        Which::Storm => storm(sc, env, deadline),
        Which::FlagRelease => steps(sc, env, deadline, &["two", "one", "none"]),
        Which::FastPaths => steps(sc, env, deadline, &["covered", "second", "none"]),
    }
}

/// `key=N` in a guest line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split(|c: char| c.is_whitespace() || c == '@')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The hold ids of a guest's `ids=1,2,3` (empty: none).
fn ids(line: &str) -> BTreeSet<u32> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("ids="))
        .map(|v| v.trim_end_matches('@'))
        .unwrap_or("")
        .split(',')
        .filter_map(|i| i.parse().ok())
        .collect()
}

/// Waits for the guest line starting with `marker`.
fn line(vm: &mut Vm, deadline: Instant, marker: &str) -> Result<String, Failure> {
    match vm.wait_line(deadline, |l| l.starts_with(marker)) {
        Wait::Line(l) => Ok(l),
        _ => Err(Failure::new(
            FailKind::Guest,
            format!(
                "no '{marker}' from the guest; log: {}",
                vm.serial_log.display()
            ),
        )),
    }
}

/// Waits (up to `settle`) until `host()` equals `guest`: the host may still
/// be deciding a request the guest gave up, or reading an unlock. Returns
/// what the host holds at the end.
fn settled(
    guest: &BTreeSet<u32>,
    settle: Duration,
    mut host: impl FnMut() -> Result<BTreeSet<u32>, Failure>,
) -> Result<BTreeSet<u32>, Failure> {
    let until = Instant::now() + settle;
    loop {
        let h = host()?;
        if h == *guest || Instant::now() >= until {
            return Ok(h);
        }
        // Pacing: the host decides every few tens of ms.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rounds of `mld-interrupted-lock` (as in its script): about a third are
/// interrupted, so every way a signal can land is met many times.
const INTERRUPTED_ROUNDS: u64 = 1000;

/// `mld-interrupted-lock`: [`INTERRUPTED_ROUNDS`] lock calls against a stub host that answers
/// after 10 ms and refuses every fifth, with SIGALRM at a random moment.
fn interrupted(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut vm = Vm::start(&env.spec_with("vm", sc.guest, false, Doorbell::Harness))?;
    let opts = stubhost::Options {
        announce: false,
        delay: Duration::from_millis(10),
        refuse_every: 5,
    };
    let stub = stubhost::attach(&mut vm, &env.dir.join("stub-host.log"), opts)?;
    let seen = (|| {
        let stats = line(&mut vm, deadline, "@@MIGLOCK interrupted-lock ")?;
        let guest = ids(&line(&mut vm, deadline, "@@MIGLOCK holds ")?);
        let host = settled(&guest, Duration::from_secs(3), || Ok(stub.holds()))?;
        Ok::<_, Failure>((stats, guest, host))
    })();
    let _ = vm.send_line("done");
    let r = finish_guest(sc, &mut vm, deadline);
    vm.quit()?;
    let rec = stub.finish()?;
    let (stats, guest, host) = seen?;
    let f = |k| field(&stats, k).unwrap_or(0);
    let differ = guest.symmetric_difference(&host).count() as u64;
    let mismatches = f("mismatches") + differ;
    env.write_result(&json!({
        "rounds": f("rounds"),
        "interrupted": f("interrupted"),
        "mismatches": mismatches,
        "granted": f("granted"),
        "refused": f("refused"),
        "signals": f("signals"),
        "host_grants": rec.grants,
        "host_refusals": rec.refusals,
        "guest_holds": guest,
        "host_holds": host,
    }))?;
    eprintln!(
        "  {} rounds, {} interrupted, {} granted, {} refused; guest holds {guest:?}, host holds {host:?}",
        f("rounds"),
        f("interrupted"),
        f("granted"),
        f("refused")
    );
    r?;
    if differ != 0 {
        return Err(host_fail(format!(
            "the guest holds {guest:?}, the host {host:?}"
        )));
    }
    if f("rounds") != INTERRUPTED_ROUNDS || f("interrupted") == 0 || mismatches != 0 {
        return Err(host_fail(format!(
            "{stats}: not {INTERRUPTED_ROUNDS} rounds, none interrupted, or mismatches"
        )));
    }
    Ok(())
}

/// One "host": a QEMU with the doorbell and its `miglockd`.
struct OneHost {
    vm: Vm,
    agent: Agent,
}

impl OneHost {
    /// Starts the guest and an agent whose configuration begins with
    /// `extra` (top-level tables such as `[limits]`).
    fn start(sc: &Scenario, env: &Env<'_>, extra: &str) -> Result<OneHost, Failure> {
        let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
        let bins = bins.parent().context("harness directory")?.to_path_buf();
        let vm = Vm::start(&env.spec_with("host", sc.guest, false, Doorbell::Agent))?;
        let d = env.dir.display();
        let agent = Agent::start_toml(
            &bins,
            &env.dir,
            "host",
            &format!(
                "{extra}[[vm]]\nname = \"guest\"\ndoorbell = \"{d}/host-doorbell.sock\"\n\
                 qmp = \"{d}/host-agent-qmp.sock\"\n[vm.policy]\nmax_lease_ms = 120000\n"
            ),
        )?;
        Ok(OneHost { vm, agent })
    }

    /// The hold ids the agent holds for the guest now.
    fn host_holds(&self) -> Result<BTreeSet<u32>, Failure> {
        let out = self.agent.ctl(&["--json", "status"])?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(v["data"]["vms"]["guest"]["holds"]
            .as_object()
            .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default())
    }

    fn quit(self) -> Result<(), Failure> {
        self.vm.quit()?;
        Ok(())
    }
}

/// `mld-request-storm`: 64 threads lock and unlock at once against the
/// agent (its rate limit raised out of the way).
fn storm(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    // Every lock a request (no linger in the guest, no holds inside
    // another's grant): the storm is of requests and answers.
    let mut h = OneHost::start(
        sc,
        env,
        "[limits]\nrate = 100000.0\nburst = 100000.0\nheld = false\n",
    )?;
    let said = line(&mut h.vm, deadline, "@@MIGLOCK request-storm ");
    let r = finish_guest(sc, &mut h.vm, deadline);
    let decisions = h
        .agent
        .audit()
        .iter()
        .filter(|e| e["event"] == "lock")
        .count();
    h.quit()?;
    let said = said?;
    let f = |k| field(&said, k).unwrap_or(u64::MAX);
    env.write_result(&json!({
        "threads": f("threads"),
        "calls": f("calls"),
        "wrong_or_lost": f("wrong_or_lost"),
        "refused": f("refused"),
        "channel_failures": f("failures"),
        "channel_retries": f("retries"),
        "stale_answers": f("stale"),
        "host_decisions": decisions,
    }))?;
    eprintln!("  {said}; the agent decided {decisions} lock requests");
    r?;
    if f("threads") != 64 || f("wrong_or_lost") != 0 {
        return Err(host_fail(said));
    }
    Ok(())
}

/// `mld-flag-release` and `mld-fast-paths`: after each of the guest's
/// `names` steps its holds must be the agent's.
fn steps(sc: &Scenario, env: &Env<'_>, deadline: Instant, names: &[&str]) -> Result<(), Failure> {
    let mut h = OneHost::start(sc, env, "")?;
    let mut steps = Vec::new();
    let mut wrong = Vec::new();
    let r = (|| {
        for &step in names {
            let l = line(
                &mut h.vm,
                deadline,
                &format!("@@MIGLOCK holds step={step} "),
            )?;
            let guest = ids(&l);
            let host = settled(&guest, Duration::from_secs(5), || h.host_holds())?;
            eprintln!("  {step}: guest holds {guest:?}, the agent {host:?}");
            if guest != host {
                wrong.push(format!("{step}: guest {guest:?}, host {host:?}"));
            }
            steps.push(json!({"step": step, "guest": guest, "host": host}));
            h.vm.send_line("next")
                .context("typing on the guest console")?;
        }
        finish_guest(sc, &mut h.vm, deadline)
    })();
    env.write_result(&json!({"steps": steps, "mismatches": wrong.len()}))?;
    h.quit()?;
    r?;
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(host_fail(format!(
            "the host's holds differ from the guest's: {}",
            wrong.join("; ")
        )))
    }
}
