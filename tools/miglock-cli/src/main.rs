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

fn print_status(st: &Status, as_json: bool) {
    if as_json {
        let v = json!({
            "locked": st.locked(),
            "holders": st.holders(),
            "static_lock": st.static_lock(),
            "detached_hold": st.detached(),
            "earliest_expiry_ms": st.earliest_expiry().map(|d| d.as_millis() as u64),
            "host_channel": st.channel(),
            "migration_pending": st.migration_pending(),
            "forced_release": st.forced_release(),
            "last_decision": st.last_decision(),
            "max_lease_ms": st.max_lease().as_millis() as u64,
        });
        println!("{v}");
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
    println!("last decision:     {}", st.last_decision());
    println!("migration pending: {}", yn(st.migration_pending()));
    println!("max lease:         {}", fmt_dur(Some(st.max_lease())));
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
                println!(
                    "locked until 'miglock unlock' or for {}",
                    fmt_dur(dev.status()?.earliest_expiry())
                );
            }
            Cmd::Unlock => open()?
                .unlock(true)
                .context("unlocking (no detached hold?)")?,
            Cmd::Renew { lease } => open()?.renew(*lease, true).context("renewing")?,
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
