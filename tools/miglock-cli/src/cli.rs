// SPDX-License-Identifier: GPL-2.0

//! The command lines of `miglock` and `set_migration_flag` (here, not in
//! the binaries, so that their man pages and shell completions are
//! generated from them).

use clap::{Args, Parser, Subcommand};
use miglock_dev::{parse_reason, Reason};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "miglock",
    version,
    about = "Ask the host not to live-migrate this VM (via /dev/mld)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
pub struct LockOpts {
    /// critical-code, critical-operation, co-location, special-hardware, confidential or other.
    #[arg(long, default_value = "other", value_parser = reason)]
    pub reason: Reason,
    /// Lease, e.g. 500ms, 30s, 5m (default: the maximum lease).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Short printable label saying what holds the lock.
    #[arg(long, default_value = "miglock")]
    pub label: String,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show the lock state.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Lock until `miglock unlock` or the lease ends (a detached hold).
    Lock(LockOpts),
    /// Drop the detached hold (and the static lock).
    Unlock,
    /// Restart the detached hold's lease.
    Renew {
        /// New lease (default: the maximum).
        #[arg(long, value_parser = humantime::parse_duration)]
        lease: Option<Duration>,
    },
    /// Wait for the host's news: a pending migration, its cancellation, the
    /// VM's arrival here, a checkpoint, its end, a restore from one (any of
    /// them without a flag). Prints what came
    /// (with --json, the status as `status --json` does, and "event"); exits
    /// 0, or 1 if nothing came within the timeout.
    Wait {
        /// Until a migration is pending (at once if one is).
        #[arg(long, group = "what")]
        pending: bool,
        /// Until the host calls a pending migration off.
        #[arg(long, group = "what")]
        cancelled: bool,
        /// Until the VM has arrived here by live migration.
        #[arg(long, group = "what")]
        migrated: bool,
        /// Until the host takes a live checkpoint (at once if one runs).
        #[arg(long, group = "what")]
        checkpoint: bool,
        /// Until a checkpoint ends.
        #[arg(long, group = "what")]
        checkpoint_done: bool,
        /// Until the VM is restored from a checkpoint.
        #[arg(long, group = "what")]
        restored: bool,
        /// Give up after this long, e.g. 30s (default: wait for ever).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Hold the lock exactly while CMD runs (like flock); exits with CMD's status.
    Run {
        #[command(flatten)]
        lock: LockOpts,
        /// Do not renew the lease while CMD runs.
        #[arg(long)]
        no_renew: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

fn reason(s: &str) -> Result<Reason, String> {
    parse_reason(s).ok_or_else(|| {
        let all: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        format!("unknown reason '{s}'; one of: {}", all.join(", "))
    })
}

/// `set_migration_flag`, as in "Who Decides Migration?".
#[derive(Parser, Debug)]
#[command(
    name = "set_migration_flag",
    version,
    about = "Lock (0) or unlock (1) this VM's migration, as in \"Who Decides Migration?\"",
    long_about = "set_migration_flag 0 locks the VM: the host does not live-migrate it \
until set_migration_flag 1, or until the maximum lease (the module's max_lease_ms) \
ends. The lock outlives this process. Uses the paper's syscall when the kernel has \
it, otherwise the same detached hold through /dev/mld."
)]
pub struct SetMigrationFlag {
    /// 0: do not migrate (lock); 1: may migrate (unlock).
    #[arg(value_parser = ["0", "1"])]
    pub flag: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_lines_are_consistent() {
        Cli::command().debug_assert();
        SetMigrationFlag::command().debug_assert();
    }

    /// The paper's interface: 0 or 1, nothing else.
    #[test]
    fn set_migration_flag_takes_0_or_1() {
        let parse = |a: &[&str]| SetMigrationFlag::try_parse_from(a).map(|f| f.flag);
        assert_eq!(parse(&["smf", "0"]).unwrap(), "0");
        assert_eq!(parse(&["smf", "1"]).unwrap(), "1");
        for bad in [&["smf"][..], &["smf", "2"], &["smf", "0", "1"]] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
