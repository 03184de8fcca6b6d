// SPDX-License-Identifier: GPL-2.0

//! Live checkpoints through the agents (`miglockctl checkpoint`, QEMU's
//! background snapshot) and restores from them (`miglockctl restore` into
//! a QEMU started with `-incoming defer`), on the two hosts of a [`Pair`].

use crate::pair::{tick_of, Guest, Pair, Proof};
use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::vm::Wait;
use serde_json::{json, Value};
use std::process::Output;
use std::time::{Duration, Instant};

/// Which checkpoint scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// A writing guest checkpointed, restored in a new QEMU, verified.
    Restore,
    /// A locked guest checkpointed; a migration meanwhile refused.
    Locked,
}

fn fail(kind: FailKind, msg: impl Into<String>) -> Failure {
    Failure::new(kind, msg)
}

fn require(ok: bool, what: &str) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(fail(FailKind::Host, what))
    }
}

/// The last JSON line of a `miglockctl --json` run (its result).
fn result(out: &Output) -> Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next_back()
        .unwrap_or_default()
}

fn show(what: &str, out: &Output) {
    eprintln!(
        "  $ miglockctl {what}  (exit {})",
        out.status.code().unwrap_or(-1)
    );
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        eprintln!("    {l}");
    }
    eprintln!("    {}", result(out));
}

/// The first guest line satisfying `pred` before `deadline`.
fn line(
    vm: &mut crate::vm::Vm,
    deadline: Instant,
    what: &str,
    pred: impl FnMut(&str) -> bool,
) -> Result<String, Failure> {
    match vm.wait_line(deadline, pred) {
        Wait::Line(l) => Ok(l),
        _ => Err(fail(
            FailKind::Guest,
            format!("no {what}; log: {}", vm.serial_log.display()),
        )),
    }
}

/// The number after `key` in a workload line ("... tick 12 gen 13: ...").
fn field(line: &str, key: &str) -> Option<u64> {
    let mut w = line.split_whitespace();
    w.find(|&x| x == key)?;
    w.next()?.trim_end_matches(':').parse().ok()
}

/// Runs a checkpoint scenario.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant, which: Which) -> Result<(), Failure> {
    let guest = Guest {
        script: sc.guest,
        cpus: 2,
        append: String::new(),
        tick_ms: 100,
    };
    let mut p = Pair::start(env, &env.dir, guest, "")?;
    let r = match which {
        Which::Restore => restore(&mut p, sc, env, deadline),
        Which::Locked => locked(&mut p, sc, env, deadline),
    };
    for (i, h) in p.hosts.iter().enumerate() {
        if env.echo != crate::vm::Echo::Off || r.is_err() {
            eprintln!("  agent {}'s audit log:", ["a", "b"][i]);
            for rec in h.agent.audit() {
                eprintln!("    {rec}");
            }
        }
    }
    p.quit();
    r
}

/// Checkpoint a writing guest, let the source go on and quit, restore the
/// image in a new QEMU: the guest must run on from the checkpoint (its
/// ticks go back to then), say which generation its memory is, verify it
/// whole, and go on.
fn restore(p: &mut Pair, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    p.warm_up(Duration::from_secs(1))?;
    let image = env.dir.join("checkpoint.img");
    let _ = std::fs::remove_file(&image);
    let image = image.display().to_string();
    let before = p.last_tick();
    let out = p.hosts[0]
        .agent
        .ctl(&["--json", "checkpoint", "guest", "--to", &image])?;
    show(&format!("checkpoint guest --to {image}"), &out);
    require(out.status.success(), "miglockctl checkpoint failed")?;
    let ck = result(&out)["data"].clone();
    // The workload heard the checkpoint begin and end.
    let vm = p.vm();
    line(
        vm,
        deadline,
        "'checkpoint started' from the workload",
        |l| l.starts_with("workload: checkpoint started"),
    )?;
    let done = line(vm, deadline, "'checkpoint done' from the workload", |l| {
        l.starts_with("workload: checkpoint done")
    })?;
    let done_tick = field(&done, "tick").unwrap_or(0);
    let cow_pages = done
        .split(": ")
        .nth(2)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    // The source goes on past the checkpoint, then its QEMU quits.
    line(vm, deadline, "source ticks after the checkpoint", |l| {
        tick_of(l).is_some_and(|t| t > done_tick + 1)
    })?;
    let source_last = p.last_tick();
    if let Some(vm) = p.hosts[0].vm.take() {
        let _ = vm.quit();
    }
    p.on = 1;
    let since = p.vm().seen.len();
    let out = p.hosts[1]
        .agent
        .ctl(&["--json", "restore", "guest", "--from", &image])?;
    show(&format!("restore guest --from {image}"), &out);
    require(out.status.success(), "miglockctl restore failed")?;
    let rs = result(&out)["data"].clone();
    let vm = p.vm();
    let restored = line(vm, deadline, "'restored' from the workload", |l| {
        l.starts_with("workload: restored at")
    })?;
    let (rtick, rgen) = (
        field(&restored, "tick").unwrap_or(0),
        field(&restored, "gen").unwrap_or(0),
    );
    let verdict = line(vm, deadline, "the restored workload's verification", |l| {
        l.starts_with("workload: verified") || l.starts_with("workload: FAILED")
    })?;
    // The first whole tick line the restored guest printed (a line cut by
    // the checkpoint does not parse).
    let rfirst = vm.seen[since..]
        .iter()
        .find_map(|l| tick_of(l))
        .unwrap_or(rtick);
    eprintln!(
        "  source: last tick {before} before the checkpoint, done at tick {done_tick}, \
         quit at {source_last}; restored: first tick {rfirst}, told at tick {rtick} gen {rgen}: {verdict}"
    );
    // Memory as of the checkpoint: after what the source printed before it
    // began, no later than the workload was when it ended (a tick more if
    // the checkpoint cut a line), and so earlier than where the source
    // went on to.
    let as_of_checkpoint =
        rfirst > before && rfirst <= done_tick + 1 && rfirst < source_last && rfirst <= rtick;
    // The generation the workload verified is the one of that tick (it
    // writes generation t+1 at tick t).
    let same_gen = field(&verdict, "gen") == Some(rgen) && rgen == rtick + 1;
    let verified = verdict.starts_with("workload: verified") && same_gen && as_of_checkpoint;
    // Alive: ticks on from there, verifies again, beats on.
    let proof = p.prove_alive(rtick.saturating_sub(1), since);
    let audit = p.hosts[1].agent.audit();
    let told = audit
        .iter()
        .any(|r| r["event"] == "guest-restored" && r["guest_told"] == true);
    env.write_result(&json!({
        "verified": verified && proof == Proof::Alive,
        "downtime_ms": ck["downtime_ms"],
        "cow_pages": cow_pages,
        "bytes": ck["transferred_bytes"],
        "file_bytes": ck["file_bytes"],
        "total_time_ms": ck["total_time_ms"],
        "setup_time_ms": ck["setup_time_ms"],
        "normal_pages": ck["normal_pages"],
        "zero_pages": ck["zero_pages"],
        "restore_wall_ms": rs["wall_ms"],
        "ticks": {"before": before, "checkpoint_done": done_tick, "source_last": source_last,
                  "restored_first": rfirst, "restored_told": rtick},
        "restored_gen": rgen,
        "cow_pages_means": "pages mlworkload wrote between the checkpoint-started and checkpoint-done notices (QEMU 10.0 does not count its copy-on-write faults)",
    }))?;
    require(
        as_of_checkpoint,
        &format!(
            "the restored guest is not at the checkpoint: first tick {rfirst}, expected after {before} and at most {}",
            done_tick + 1
        ),
    )?;
    require(
        same_gen,
        &format!("the restored memory's generation does not match: {restored} / {verdict}"),
    )?;
    if let Some(kind) = match &proof {
        Proof::Alive => None,
        Proof::Corrupted(..) => Some(FailKind::Migration),
        Proof::Died(_) => Some(FailKind::Migration),
    } {
        return Err(fail(kind, format!("after the restore: {proof:?}")));
    }
    require(
        verdict.starts_with("workload: verified"),
        &format!("the restored memory did not verify: {verdict}"),
    )?;
    require(told, "agent b did not tell the guest it was restored")?;
    require(cow_pages.is_some(), "the workload did not count its pages")?;
    let vm = p.vm();
    vm.send_line("finish")
        .map_err(|e| fail(FailKind::Harness, e.to_string()))?;
    finish_guest(sc, vm, deadline)
}

/// A locked guest is checkpointed (audited as such); a migration and a
/// second checkpoint asked for meanwhile are refused; the lock is enforced
/// in QEMU again afterwards; a policy that forbids it refuses the
/// checkpoint.
fn locked(p: &mut Pair, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    // The workload runs (and listens on /dev/mld) before the checkpoint.
    p.warm_up(Duration::from_millis(500))?;
    let a = &p.hosts[0].agent;
    // The guest holds its lock before it says ready; the agent knows.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let st = a.ctl(&["--json", "status"])?;
        let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        if v["data"]["vms"]["guest"]["locked"] == true {
            break;
        }
        require(Instant::now() < until, "agent a never saw the guest locked")?;
        std::thread::yield_now();
    }
    // Forbidden by the policy first.
    let out = a.ctl(&["policy", "guest", "--checkpoint-locked", "false"])?;
    require(out.status.success(), "miglockctl policy failed")?;
    let image = env.dir.join("locked.img").display().to_string();
    let out = a.ctl(&["checkpoint", "guest", "--to", &image])?;
    show("checkpoint guest (policy forbids)", &out);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    require(
        out.status.code() == Some(1) && said.contains("checkpoint_locked = false"),
        "a checkpoint the policy forbids was not refused with the policy's reason",
    )?;
    let out = a.ctl(&["policy", "guest", "--checkpoint-locked", "true"])?;
    require(out.status.success(), "miglockctl policy failed")?;
    // It takes about half a second (QEMU 10.0 does not rate-limit a
    // background snapshot): long enough to ask for a migration meanwhile,
    // which is checked, not assumed.
    let mut child = std::process::Command::new(a.bin())
        .arg("--socket")
        .arg(a.socket())
        .args(["--json", "checkpoint", "guest", "--to", &image])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(FailKind::Harness, format!("miglockctl checkpoint: {e}")))?;
    let until = Instant::now() + Duration::from_secs(20);
    while !a.audit().iter().any(|r| r["event"] == "checkpoint-start") {
        require(
            Instant::now() < until,
            "agent a never started the checkpoint",
        )?;
        std::thread::yield_now();
    }
    let migrate = a.ctl(&["migrate", "guest", "--to", "tcp:127.0.0.1:9"])?;
    show("migrate guest (during the checkpoint)", &migrate);
    let second = a.ctl(&["checkpoint", "guest", "--to", &format!("{image}.2")])?;
    show("checkpoint guest (during the checkpoint)", &second);
    let still_running = child.try_wait().ok().flatten().is_none();
    let out = child
        .wait_with_output()
        .map_err(|e| fail(FailKind::Harness, e.to_string()))?;
    show(&format!("checkpoint guest --to {image}"), &out);
    let ck = result(&out)["data"].clone();
    require(
        out.status.success(),
        "the checkpoint of the locked VM failed",
    )?;
    require(
        still_running,
        "the checkpoint ended before the migration was asked for: nothing tested",
    )?;
    let msg = String::from_utf8_lossy(&migrate.stderr).to_string();
    require(
        migrate.status.code() == Some(1) && msg.contains("a checkpoint is being taken"),
        &format!("a migration during the checkpoint was not refused with the reason: {msg}"),
    )?;
    require(
        second.status.code() == Some(3)
            && String::from_utf8_lossy(&second.stderr).contains("already being checkpointed"),
        "a second checkpoint during the first was not refused",
    )?;
    // The lock is QEMU's blocker again, and the gate refuses for the lock.
    let q = p
        .vm()
        .qmp
        .execute("query-migrate", None)
        .map_err(|e| fail(FailKind::Harness, e.to_string()))?;
    let blocked = q["blocked-reasons"].as_array().is_some_and(|r| {
        r.iter()
            .any(|s| s.as_str().is_some_and(|s| s.contains("miglock")))
    });
    let a = &p.hosts[0].agent;
    let after = a.ctl(&["migrate", "guest", "--to", "tcp:127.0.0.1:9"])?;
    show("migrate guest (after the checkpoint)", &after);
    let audit = a.audit();
    let at = |pred: &dyn Fn(&Value) -> bool| audit.iter().position(pred);
    let start = at(&|r| {
        r["event"] == "checkpoint-start"
            && r["locked"] == true
            && r["locks"].as_array().is_some_and(|l| !l.is_empty())
            && r["guest_told"] == true
    });
    let lifted = at(&|r| r["event"] == "blocker" && r["state"] == "lifted for a checkpoint");
    let refused = at(&|r| {
        r["event"] == "migrate-refused"
            && r["why"].as_str().is_some_and(|w| w.contains("checkpoint"))
    });
    let done = at(&|r| r["event"] == "checkpoint-done" && r["guest_told"] == true);
    let back = audit.iter().enumerate().any(|(i, r)| {
        lifted.is_some_and(|l| i > l) && r["event"] == "blocker" && r["state"] == "added"
    });
    env.write_result(&json!({
        "checkpoint": ck,
        "migration_refused": msg.trim(),
        "blocked_after": blocked,
    }))?;
    require(
        start.is_some(),
        "audit: no checkpoint-start of a locked VM with its locks",
    )?;
    require(
        lifted.is_some(),
        "audit: the blocker was not lifted for the checkpoint",
    )?;
    require(
        refused.is_some(),
        "audit: no migrate-refused for the checkpoint",
    )?;
    require(
        done.is_some(),
        "audit: no checkpoint-done told to the guest",
    )?;
    require(
        back,
        "audit: the blocker did not come back after the checkpoint",
    )?;
    require(
        blocked,
        "QEMU carries no miglock blocker after the checkpoint",
    )?;
    require(
        after.status.code() == Some(1)
            && String::from_utf8_lossy(&after.stderr).contains("is locked"),
        "after the checkpoint a migration was not refused for the lock",
    )?;
    let vm = p.vm();
    line(vm, deadline, "'checkpoint done' from the workload", |l| {
        l.starts_with("workload: checkpoint done")
    })?;
    vm.send_line("finish")
        .map_err(|e| fail(FailKind::Harness, e.to_string()))?;
    finish_guest(sc, vm, deadline)
}

/// What [`paced_sink`] received once the sender closed: bytes, and how
/// long from the connection to the last byte.
pub type Received = std::thread::JoinHandle<std::io::Result<(u64, Duration)>>;

/// A link of `bytes_per_s` into `file`: accepts one connection on a port
/// of 127.0.0.1 and writes what arrives, paced to the rate (QEMU 10.0 does
/// not rate-limit a background snapshot itself). Returns the URI to send
/// to and a handle giving, once the sender closed, the bytes received and
/// how long from the connection to the last byte (the image's time on the
/// link).
pub fn paced_sink(file: &std::path::Path, bytes_per_s: u64) -> anyhow::Result<(String, Received)> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let uri = format!("tcp:127.0.0.1:{}", l.local_addr()?.port());
    let mut out = std::fs::File::create(file)?;
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept()?;
        let start = Instant::now();
        let (mut buf, mut total) = (vec![0u8; 64 << 10], 0u64);
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, start.elapsed()));
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
            // Not ahead of the link: the sender's socket fills and QEMU
            // waits, as it would on a slow network.
            let due = Duration::from_secs_f64(total as f64 / bytes_per_s as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead); // the link's pace, not synchronisation
            }
        }
    });
    Ok((uri, t))
}
