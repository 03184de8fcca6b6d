// SPDX-License-Identifier: GPL-2.0

//! `agent-stuck-guest`: a guest that stops reading its UART while the host
//! keeps sending stops nothing else. Its vCPUs are stopped (QMP `stop`, as
//! a wedged kernel would stop reading), the operator's policy changes pile
//! up for it, and meanwhile `miglockctl status`, `migrate --force` of that
//! VM and a lock in a second VM of the same agent each answer within 1 s;
//! the agent drops the link for not draining, audited. The guest, forced
//! to the destination and resumed there, proves it is alive and whole.

use crate::agentdemo::{host_fail, require, wait_for, Agent, Hosts};
use crate::blocker::{field, wall_ms};
use crate::pair::{self, last_tick_in, tick_of, Proof};
use crate::scenario::{Env, FailKind, Failure, Scenario};
use crate::vm::{Doorbell, Vm, Wait};
use anyhow::Context;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What "answers at once" means here.
const PROMPT: Duration = Duration::from_secs(1);
/// Policy changes sent to the stuck VM: each is a frame for the guest, and
/// about 300 fill the socket to its QEMU.
const FLOOD: usize = 1000;
/// Long enough a stall to measure inside it; the queue is deep enough that
/// this timeout, not a full queue, ends the link.
const STALL_MS: u64 = 8000;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The story.
pub fn run(h: &mut Hosts, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut other =
        Vm::start(&env.spec_with("other", "agent-stuck-other", false, Doorbell::Agent))?;
    // One agent for both VMs, with the limits above.
    h.src_agent.kill();
    let d = env.dir.display();
    let vm = |name: &str, host: &str| {
        format!("[[vm]]\nname = \"{name}\"\ndoorbell = \"{d}/{host}-doorbell.sock\"\nqmp = \"{d}/{host}-agent-qmp.sock\"\n")
    };
    h.src_agent = Agent::start_toml(
        &h.bins,
        &env.dir,
        "src-two",
        &format!(
            "[limits]\nsend_queue = 100000\nsend_timeout_ms = {STALL_MS}\n{}{}",
            vm("guest", "src"),
            vm("other", "other")
        ),
    )?;
    wait_for(&mut other, deadline, "@@MIGLOCK ready@@")?;
    let before = match h.src.wait_line(deadline, |l| tick_of(l).is_some()) {
        Wait::Line(_) => last_tick_in(&h.src.seen),
        _ => return Err(host_fail("the guest's workload never ticked".into())),
    };

    // The guest stops reading; the host keeps sending.
    h.src.qmp.execute("stop", None).context("stop")?;
    let flood_t = Instant::now();
    flood(&h.src_agent.socket(), FLOOD)?;
    let flood_ms = ms(flood_t.elapsed());
    eprintln!("  {FLOOD} policy changes for the stopped guest answered in {flood_ms} ms");

    let measured_from = wall_ms();
    let t = Instant::now();
    let st = h.src_agent.ctl(&["--json", "status"])?;
    let status_ms = ms(t.elapsed());
    let st: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    let g = &st["data"]["vms"]["guest"];
    let connected = g["connected"] == true && g["link"]["undrained"] == 0;
    eprintln!(
        "  status while the link is stuck: {status_ms} ms (connected={}, link {})",
        g["connected"], g["link"]
    );

    other.send_line("lock").context("console")?;
    let cost = match other.wait_line(deadline, |l| l.starts_with("lock-cost")) {
        Wait::Line(l) => l,
        _ => return Err(host_fail("no lock-cost line from the second VM".into())),
    };
    let other_vm_lock_ms = field(&cost, "first_holder_us").map(|us| us / 1000.0);
    eprintln!("  a lock in the second VM: {cost}");

    let t = Instant::now();
    let mut force = Command::new(h.src_agent.bin())
        .arg("--socket")
        .arg(h.src_agent.socket())
        .args([
            "--json",
            "migrate",
            "guest",
            "--to",
            &h.uri,
            "--force",
            "--reason",
            "evict a stuck guest",
        ])
        .args(if h.fenced {
            &["--mode", "postcopy"][..]
        } else {
            &[][..]
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("miglockctl migrate --force")?;
    let mut lines = BufReader::new(force.stdout.take().context("stdout")?).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let force_ms = ms(t.elapsed());
    let measured_to = wall_ms();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let forced = force.wait().context("miglockctl")?.success();
    let force_total_ms = ms(t.elapsed());
    eprintln!("  migrate --force: first answer in {force_ms} ms ({first}); done in {force_total_ms} ms, ok={forced}");

    // The link's writer gives up on the stalled guest: audited, dropped.
    let dropped = loop {
        let a = h.src_agent.audit();
        if let Some(r) = a
            .iter()
            .find(|r| r["event"] == "guest-misbehaving" && r["vm"] == "guest")
        {
            break Some(r.clone());
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::yield_now();
    };
    let link_dropped = dropped.is_some();
    // The writer blocked STALL_MS before it gave up: the measurements fell
    // inside the stall if it began before them and ended after.
    let dropped_at = dropped.as_ref().and_then(|r| r["ts_ms"].as_u64());
    let stuck_then = connected
        && dropped_at
            .is_some_and(|t| t.saturating_sub(STALL_MS) <= measured_from + 500 && t >= measured_to);
    eprintln!(
        "  the agent dropped the stuck link: {}",
        dropped.unwrap_or_default()
    );

    // The destination got a paused VM (as the source was): resume it.
    let since = h.dst.seen.len();
    let proof = if forced {
        h.dst.qmp.execute("cont", None).context("cont")?;
        pair::prove_alive(&mut h.dst, 50, before, since)
    } else {
        Proof::Died(format!("the forced migration failed: {}", rest.join(" | ")))
    };
    let guest_alive = proof == Proof::Alive;
    env.write_result(&json!({
        "status_ms": status_ms,
        "force_ms": force_ms,
        "other_vm_lock_ms": other_vm_lock_ms,
        "link_dropped": link_dropped,
        "stuck_when_measured": stuck_then,
        "policy_changes": FLOOD,
        "policy_changes_ms": flood_ms,
        "force_total_ms": force_total_ms,
        "forced_migration_ok": forced,
        "guest_alive": guest_alive,
    }))?;
    let prompt = ms(PROMPT);
    let r = (|| {
        require(
            stuck_then,
            "the measurements were not taken while the link was stuck",
        )?;
        require(status_ms < prompt, &format!("status took {status_ms} ms"))?;
        require(
            other_vm_lock_ms.is_some_and(|m| m < prompt as f64),
            &format!("the second VM's lock took {other_vm_lock_ms:?} ms"),
        )?;
        require(
            force_ms < prompt,
            &format!("migrate --force answered after {force_ms} ms"),
        )?;
        require(forced, "the forced migration of the stuck VM failed")?;
        require(link_dropped, "the agent never dropped the stuck link")?;
        if let Proof::Died(why) | Proof::Corrupted(_, why) = &proof {
            return Err(Failure::new(FailKind::Migration, why.clone()));
        }
        Ok(())
    })();
    r?;
    // The second VM's script ends after its lock: judged as any guest's.
    crate::scenario::finish_guest(sc, &mut other, deadline)
}

/// Sends `n` policy changes for VM `guest` down one control connection and
/// reads every answer (none depends on the guest).
fn flood(socket: &std::path::Path, n: usize) -> Result<(), Failure> {
    let conn = UnixStream::connect(socket).context("control socket")?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .context("control socket")?;
    let mut w = conn.try_clone().context("control socket")?;
    let writer = std::thread::spawn(move || {
        for i in 0..n {
            let set =
                json!({"cmd": "policy", "vm": "guest", "set": {"max_lease_ms": 120_000 + (i % 2)}});
            if writeln!(w, "{set}").is_err() {
                return;
            }
        }
    });
    let mut answers = 0;
    for line in BufReader::new(conn).lines().take(n) {
        let line = line.context("a policy answer")?;
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if v["kind"] != "ok" {
            return Err(host_fail(format!("a policy change failed: {line}")));
        }
        answers += 1;
    }
    let _ = writer.join();
    require(
        answers == n,
        &format!("{answers} of {n} policy changes answered"),
    )
}
