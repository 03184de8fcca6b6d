// SPDX-License-Identifier: GPL-2.0

//! `miglock`: the guest's migration-lock CLI.

use anyhow::{bail, Context, Result};
use clap::Parser;
use miglock_cli::cli::{Cli, Cmd, LockOpts};
use miglock_dev::{Device, Lock, Status};
use serde_json::json;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::Duration;

fn open() -> Result<Device> {
    Device::open().context("opening /dev/mld (is miglock.ko loaded?)")
}

fn fmt_dur(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
    })
}

/// The holds as `/sys/kernel/miglock/holds` lists them (empty if it
/// cannot be read).
fn holds() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string("/sys/kernel/miglock/holds").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.splitn(4, ' ');
            let (owner, reason, left, label) = (w.next()?, w.next()?, w.next()?, w.next());
            Some(json!({
                "owner": owner,
                "reason": reason,
                "left_ms": left.parse::<u64>().ok(),
                "label": label.unwrap_or(""),
            }))
        })
        .collect()
}

/// Status as JSON, for `status --json` and `wait --json`.
fn status_json(st: &Status) -> serde_json::Value {
    json!({
        "locked": st.locked(),
        "holders": st.holders(),
        "holds": holds(),
        "static_lock": st.static_lock(),
        "detached_hold": st.detached(),
        "earliest_expiry_ms": st.earliest_expiry().map(|d| d.as_millis() as u64),
        "host_channel": st.channel(),
        "migration_pending": st.migration_pending(),
        "pending_deadline_ms": st.pending_deadline().map(|d| d.as_millis() as u64),
        "migration_cancelled": st.migration_cancelled(),
        "migrated": st.migrated(),
        "migration_gen": st.migration_gen(),
        "postcopy": st.postcopy(),
        "postcopy_gen": st.postcopy_gen(),
        "forced_release": st.forced_release(),
        "checkpoint": st.checkpoint(),
        "checkpoint_done": st.checkpoint_done(),
        "restored": st.restored(),
        "last_decision": st.last_decision(),
        "last_refusal": st.last_refusal(),
        "max_lease_ms": st.max_lease().as_millis() as u64,
    })
}

fn print_status(st: &Status, as_json: bool) {
    if as_json {
        println!("{}", status_json(st));
        return;
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!(
        "state:             {} ({} holder{}; static lock: {}; detached hold: {})",
        if st.locked() { "LOCKED" } else { "unlocked" },
        st.holders(),
        if st.holders() == 1 { "" } else { "s" },
        yn(st.static_lock()),
        yn(st.detached())
    );
    println!("next lease end:    {}", fmt_dur(st.earliest_expiry()));
    println!(
        "host channel:      {}",
        if st.channel() {
            "connected"
        } else {
            "not connected (state is local to this guest)"
        }
    );
    match st.last_refusal() {
        0 => println!("last decision:     {}", st.last_decision()),
        r => println!(
            "last decision:     {} (host reason {r})",
            st.last_decision()
        ),
    }
    match st.pending_deadline() {
        Some(d) => println!("migration pending: yes, deadline in {}", fmt_dur(Some(d))),
        None => println!("migration pending: no"),
    }
    println!("migrations here:   {}", st.migration_gen());
    println!("max lease:         {}", fmt_dur(Some(st.max_lease())));
}

/// Which news `wait` waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum News {
    Any,
    Pending,
    Cancelled,
    Migrated,
    Checkpoint,
    CheckpointDone,
    Restored,
}

/// What `st`, just read, says happened, in words.
fn events(st: &Status) -> Vec<&'static str> {
    [
        (st.migration_pending(), "pending"),
        (st.migration_cancelled(), "cancelled"),
        (st.migrated(), "migrated"),
        (st.postcopy(), "postcopy"),
        (st.forced_release(), "forced-release"),
        (st.lease_expired(), "lease-expired"),
        (st.checkpoint(), "checkpoint"),
        (st.checkpoint_done(), "checkpoint-done"),
        (st.restored(), "restored"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect()
}

/// `miglock wait`: returns 0 when `what` came, 1 on timeout.
fn wait(what: News, timeout: Option<Duration>, as_json: bool) -> Result<u8> {
    let dev = open()?;
    let start = dev.status()?;
    let gen0 = start.migration_gen();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut st = start;
    // A migration pending already is what `--pending` waits for.
    let mut came = (what == News::Pending && st.migration_pending())
        || (what == News::Checkpoint && st.checkpoint());
    while !came {
        let left = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    eprintln!("miglock: nothing within {}", fmt_dur(timeout));
                    return Ok(1);
                }
            },
            None => None,
        };
        if !dev.wait_event(left)? {
            continue;
        }
        st = dev.status()?;
        came = match what {
            News::Any => !events(&st).is_empty(),
            News::Pending => st.migration_pending(),
            News::Cancelled => st.migration_cancelled(),
            News::Migrated => st.migration_gen() != gen0,
            News::Checkpoint => st.checkpoint(),
            News::CheckpointDone => st.checkpoint_done(),
            News::Restored => st.restored(),
        };
    }
    let words = events(&st).join(" ");
    if as_json {
        let mut v = status_json(&st);
        v["event"] = json!(words);
        println!("{v}");
    } else {
        match st.pending_deadline() {
            Some(d) => println!("{words} (deadline in {})", fmt_dur(Some(d))),
            None => println!("{words} (migrations here: {})", st.migration_gen()),
        }
    }
    Ok(0)
}

fn lock_req(o: &LockOpts, detached: bool) -> Lock {
    Lock {
        reason: o.reason,
        lease: o.lease,
        label: o.label.clone(),
        detached,
    }
}

/// Runs `cmd` while this process's open file holds the lock.
fn run(o: &LockOpts, no_renew: bool, cmd: &[String]) -> Result<u8> {
    let dev = open()?;
    dev.lock(&lock_req(o, false)).context("locking")?;
    let lease = dev.status()?.own_expiry().unwrap_or(Duration::from_secs(1));
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .with_context(|| format!("starting {}", cmd[0]))?;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = child.wait();
        let _ = tx.send(());
        r
    });
    // Renew at half the lease, so the hold never lapses while CMD runs.
    let period = if no_renew { Duration::MAX } else { lease / 2 };
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
        if let Err(e) = dev.renew(o.lease, false) {
            eprintln!("miglock: renewing the lease failed: {e}");
        }
    }
    let status = waiter.join().expect("waiter thread")?;
    drop(dev); // unlock exactly when CMD has ended
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = (|| -> Result<u8> {
        match &cli.cmd {
            Cmd::Status { json } => print_status(&open()?.status()?, *json),
            Cmd::Lock(o) => {
                let dev = open()?;
                dev.lock(&lock_req(o, true)).context("locking")?;
                let st = dev.status()?;
                println!(
                    "locked until 'miglock unlock' or for {}{}",
                    fmt_dur(st.earliest_expiry()),
                    if st.local_decision() {
                        " (decided in the guest: no host answered, the host does not enforce it yet)"
                    } else {
                        ""
                    }
                );
            }
            Cmd::Unlock => open()?
                .unlock(true)
                .context("unlocking (no detached hold?)")?,
            Cmd::Renew { lease } => open()?.renew(*lease, true).context("renewing")?,
            Cmd::Wait {
                pending,
                cancelled,
                migrated,
                checkpoint,
                checkpoint_done,
                restored,
                timeout,
                json,
            } => {
                let what = [
                    (*pending, News::Pending),
                    (*cancelled, News::Cancelled),
                    (*migrated, News::Migrated),
                    (*checkpoint, News::Checkpoint),
                    (*checkpoint_done, News::CheckpointDone),
                    (*restored, News::Restored),
                ]
                .into_iter()
                .find_map(|(on, n)| on.then_some(n))
                .unwrap_or(News::Any);
                return wait(what, *timeout, *json);
            }
            Cmd::Run {
                lock,
                no_renew,
                cmd,
            } => {
                if cmd.is_empty() {
                    bail!("no command given");
                }
                return run(lock, *no_renew, cmd);
            }
        }
        Ok(0)
    })();
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("miglock: {e:#}");
            ExitCode::FAILURE
        }
    }
}
