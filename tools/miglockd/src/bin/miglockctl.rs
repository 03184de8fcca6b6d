// SPDX-License-Identifier: GPL-2.0

//! `miglockctl`: talk to miglockd.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use miglock_control::{IncomingRequest, MigrateRequest, Mode, PolicyUpdate, Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Control the miglock host agent")]
struct Cli {
    /// The agent's control socket.
    #[arg(
        long,
        default_value = "/run/miglock/control.sock",
        env = "MIGLOCKD_SOCKET"
    )]
    socket: PathBuf,
    /// Print raw JSON replies.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every VM's lock state.
    Status,
    /// Show or change a VM's policy.
    Policy {
        /// VM name.
        vm: String,
        /// "migration = yes|no" (the paper's static setting).
        #[arg(long)]
        migration: Option<bool>,
        /// Whether the guest may lock.
        #[arg(long)]
        guest_locks: Option<bool>,
        /// Longest lease granted.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_lease: Option<Duration>,
        /// Locked time allowed per window.
        #[arg(long, value_parser = humantime::parse_duration)]
        quota: Option<Duration>,
        /// Quota window.
        #[arg(long, value_parser = humantime::parse_duration)]
        window: Option<Duration>,
        /// Grace after a pending-migration notice.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
    /// Migrate a VM if its lock allows.
    Migrate {
        /// VM name.
        vm: String,
        /// Destination URI, e.g. tcp:127.0.0.1:4444.
        #[arg(long)]
        to: String,
        /// precopy, postcopy, precopy-then-postcopy (alias hybrid), or auto
        /// (planned from the guest's hints).
        #[arg(long, default_value = "precopy", value_parser = mode)]
        mode: Mode,
        /// Bandwidth cap, bytes/s with an optional K/M/G suffix (binary).
        #[arg(long, value_parser = bytes)]
        bandwidth: Option<u64>,
        /// Bandwidth cap for the post-copy phase (default: none).
        #[arg(long, value_parser = bytes)]
        postcopy_bandwidth: Option<u64>,
        /// Longest pause allowed at the switchover.
        #[arg(long, value_parser = humantime::parse_duration)]
        downtime_limit: Option<Duration>,
        /// Give up on a migration still copying after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// If locked: ask the guest to unlock and wait this long (without a
        /// value: the VM policy's grace period).
        #[arg(long, value_parser = humantime::parse_duration, num_args = 0..=1)]
        wait_unlock: Option<Option<Duration>>,
        /// Migrate even if locked (needs --reason; audited).
        #[arg(long)]
        force: bool,
        /// Why (with --force).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print events as they happen.
    Watch,
    /// The latest hints from a VM's guest (working set, dirty rate, ranges).
    Hints {
        /// VM name.
        vm: String,
        /// Every range, not only the hottest 16.
        #[arg(long)]
        all: bool,
    },
    /// Receive a VM here (its QEMU runs with -incoming defer): listen,
    /// follow the migration, tell the guest when post-copy starts.
    Incoming {
        /// VM name.
        vm: String,
        /// Where to listen, e.g. tcp:0.0.0.0:4444 (port 0: any).
        #[arg(long)]
        listen: String,
        /// Allow post-copy.
        #[arg(long)]
        postcopy: bool,
    },
    /// Exit 0 if VM may migrate now, 1 (with the reasons) if it is locked;
    /// for scripts such as the libvirt hook.
    Check {
        /// VM name.
        vm: String,
    },
}

fn ask(socket: &PathBuf, req: &Request) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to miglockd at {}", socket.display()))?;
    writeln!(s, "{}", serde_json::to_string(req)?)?;
    for line in BufReader::new(s).lines() {
        match serde_json::from_str::<Reply>(&line?).context("bad reply from miglockd")? {
            Reply::Ok { data } => return Ok(data),
            Reply::Error { message } => bail!("{message}"),
            _ => {}
        }
    }
    bail!("miglockd closed the connection without an answer")
}

fn check(socket: &PathBuf, vm: &str) -> Result<bool> {
    let st = ask(socket, &Request::Status)?;
    let v = &st["vms"][vm];
    if v.is_null() {
        bail!("miglockd does not manage VM '{vm}'");
    }
    if v["locked"] == true {
        let reasons: Vec<String> = v["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("miglockctl: VM '{vm}' is locked: {}", reasons.join("; "));
        return Ok(false);
    }
    println!("VM '{vm}' may migrate");
    Ok(true)
}

fn mode(s: &str) -> Result<Mode, String> {
    match s {
        "precopy" => Ok(Mode::Precopy),
        "postcopy" => Ok(Mode::Postcopy),
        "precopy-then-postcopy" | "hybrid" => Ok(Mode::PrecopyThenPostcopy),
        "auto" => Ok(Mode::Auto),
        _ => Err(format!(
            "unknown mode '{s}' (precopy, postcopy, precopy-then-postcopy or auto)"
        )),
    }
}

fn bytes(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => (
            &s[..i],
            match s[i..].trim_end_matches(['B', 'i']) {
                "K" | "k" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                u => return Err(format!("unknown unit '{u}' (K, M or G)")),
            },
        ),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{s}' is not a bandwidth (e.g. 100M)"))
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("miglockctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let cli = Cli::parse();
    let req = match cli.cmd {
        Cmd::Status => Request::Status,
        Cmd::Policy {
            vm,
            migration,
            guest_locks,
            max_lease,
            quota,
            window,
            grace,
        } => {
            let set = PolicyUpdate {
                migration,
                guest_locks,
                max_lease_ms: ms(max_lease).map(|v| v.min(u64::from(u32::MAX)) as u32),
                quota_ms: ms(quota),
                window_ms: ms(window),
                grace_ms: ms(grace).map(|v| v.min(u64::from(u32::MAX)) as u32),
            };
            let changed = set != PolicyUpdate::default();
            Request::Policy {
                vm,
                set: changed.then_some(set),
            }
        }
        Cmd::Migrate {
            vm,
            to,
            mode,
            wait_unlock,
            force,
            reason,
            bandwidth,
            postcopy_bandwidth,
            downtime_limit,
            timeout,
        } => {
            if force && reason.is_none() {
                bail!("--force needs --reason");
            }
            Request::Migrate(MigrateRequest {
                vm,
                to,
                mode,
                wait_unlock_ms: ms(wait_unlock.flatten()),
                wait_grace: matches!(wait_unlock, Some(None)),
                force,
                reason,
                bandwidth,
                postcopy_bandwidth,
                downtime_limit_ms: ms(downtime_limit),
                timeout_ms: ms(timeout),
            })
        }
        Cmd::Watch => Request::Watch,
        Cmd::Hints { vm, all } => Request::Hints { vm, all },
        Cmd::Incoming {
            vm,
            listen,
            postcopy,
        } => Request::Incoming(IncomingRequest {
            vm,
            uri: listen,
            postcopy,
        }),
        Cmd::Check { vm } => return check(&cli.socket, &vm),
    };
    let mut s = UnixStream::connect(&cli.socket)
        .with_context(|| format!("connecting to miglockd at {}", cli.socket.display()))?;
    writeln!(s, "{}", serde_json::to_string(&req)?)?;
    for line in BufReader::new(s).lines() {
        let line = line?;
        if cli.json {
            println!("{line}");
        }
        match serde_json::from_str::<Reply>(&line).context("bad reply from miglockd")? {
            Reply::Progress { message } => eprintln!("miglockctl: {message}"),
            Reply::Event { event } => {
                if !cli.json {
                    println!("{event}");
                }
            }
            Reply::Ok { data } => {
                if !cli.json {
                    println!("{}", serde_json::to_string_pretty(&data)?);
                }
                return Ok(true);
            }
            Reply::Error { message } => {
                eprintln!("miglockctl: {message}");
                return Ok(false);
            }
        }
    }
    Ok(true)
}
