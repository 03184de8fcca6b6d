// SPDX-License-Identifier: GPL-2.0

//! The command lines of `miglockd`, `miglockctl` and the libvirt hook, and
//! miglockctl's exit statuses: the programs parse with them, and their man
//! pages and shell completions are generated from them (`xtask`).

use clap::{Parser, Subcommand};
use miglock_control::Mode;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's configuration when neither `--config` nor `MIGLOCKD_CONFIG`
/// names one.
pub const DEFAULT_CONFIG: &str = "/etc/miglock/miglockd.toml";

/// The control socket when the configuration does not name one.
pub const DEFAULT_SOCKET: &str = "/run/miglock/control.sock";

/// `miglockd`.
#[derive(Parser, Debug)]
#[command(
    name = "miglockd",
    version,
    about = "miglock host agent",
    long_about = "The miglock host agent. It dials every configured VM's doorbell socket \
(the guest module's channel) and QMP socket, decides the guest's lock requests under \
the VM's policy, enforces a granted lock inside QEMU as a migration blocker, follows \
every migration whoever starts it, writes each decision to an append-only audit log, \
and serves miglockctl on its control socket.\n\n\
It tells systemd when it is ready (Type=notify), logs to stderr (with syslog \
priority prefixes under journald), reopens its audit log on SIGHUP (logrotate), and \
exits 0 on SIGTERM or SIGINT after finishing the audit record it is writing."
)]
pub struct Daemon {
    /// Configuration file (TOML).
    #[arg(long, short, env = "MIGLOCKD_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Check the configuration, print a summary and exit: 0 if it is valid.
    #[arg(long)]
    pub check_config: bool,
}

/// `miglockctl`.
#[derive(Parser, Debug)]
#[command(name = "miglockctl", version, about = "Control the miglock host agent")]
pub struct Ctl {
    /// The agent's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET, env = "MIGLOCKD_SOCKET")]
    pub socket: PathBuf,
    /// Print the agent's replies as JSON lines.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// `miglockctl`'s commands.
#[derive(Subcommand, Debug)]
pub enum CtlCmd {
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
        /// Whether a live checkpoint may be taken while the VM is locked.
        #[arg(long)]
        checkpoint_locked: Option<bool>,
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
        /// Bandwidth cap for the post-copy phase, 0 for none (default: the
        /// --bandwidth cap, else none; pre-copy then post-copy on QEMU 10.0
        /// or later: none).
        #[arg(long, value_parser = bytes_or_none)]
        postcopy_bandwidth: Option<u64>,
        /// Longest pause allowed at the switchover.
        #[arg(long, value_parser = humantime::parse_duration)]
        downtime_limit: Option<Duration>,
        /// Give up on a migration still copying after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// When post-copy runs, send the pages the destination asks for on
        /// a channel of their own (QEMU's postcopy-preempt; QEMU 8.0 or
        /// later; the destination's `incoming` needs it too).
        #[arg(long)]
        postcopy_preempt: bool,
        /// QEMU's auto-converge: throttle the guest's vCPUs while pre-copy
        /// does not converge (QEMU's cpu-throttle-initial and
        /// cpu-throttle-increment as they are); an error if the QEMU does
        /// not offer it.
        #[arg(long)]
        auto_converge: bool,
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
    /// Take a live checkpoint of a VM: QEMU writes its memory and device
    /// state as of now while it keeps running (copy-on-write, QEMU's
    /// background-snapshot); allowed while it is locked (audited), unless
    /// its policy says checkpoint_locked = false; never beside a migration.
    Checkpoint {
        /// VM name.
        vm: String,
        /// Where QEMU writes the image: a path (as QEMU sees it), file:PATH,
        /// exec:COMMAND (the stream on its stdin), or another migration URI
        /// (tcp:HOST:PORT, unix:PATH).
        #[arg(long)]
        to: String,
        /// Give the guest this long after the "checkpoint started" notice
        /// to put its state in order before the image is taken (default: 0).
        #[arg(long, value_parser = humantime::parse_duration)]
        lead: Option<Duration>,
        /// Cancel the checkpoint if it has not completed this long after
        /// it started (the guest is told it is off; the image is not
        /// usable). Exit status 4.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Bring a VM back from a checkpoint: its QEMU, started with the same
    /// configuration and -incoming defer, loads the image and runs on from
    /// the moment the checkpoint began; the guest is told it was restored.
    Restore {
        /// VM name.
        vm: String,
        /// The image: a path, file:PATH, or exec:COMMAND (the stream on its
        /// stdout).
        #[arg(long)]
        from: String,
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
        /// Take requested pages on a channel of their own (QEMU's
        /// postcopy-preempt; the source's `migrate` needs it too).
        #[arg(long, requires = "postcopy")]
        postcopy_preempt: bool,
        /// The guest's hot pages, as `miglockctl --json hints VM --all`
        /// printed them on the source: read here the moment post-copy
        /// starts, so QEMU fetches them before the guest faults on them.
        #[arg(long, value_name = "FILE")]
        prefetch: Option<PathBuf>,
    },
    /// Exit 0 if VM may migrate now, 1 (with the reasons) if it is locked,
    /// 2 if the agent does not know it or cannot be reached; for scripts.
    Check {
        /// VM name.
        vm: String,
    },
}

/// How a `miglockctl` command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; `check`: the VM may migrate.
    Done,
    /// `check`: locked; `migrate`: refused by the lock or by the fence.
    Locked,
    /// No such VM, or the agent cannot be reached.
    Unreachable,
    /// The agent or QEMU reported an error.
    Failed,
    /// The migration was cancelled.
    Cancelled,
    /// Bad arguments.
    Usage,
}

impl Outcome {
    /// Every outcome, in the order of their codes.
    pub const ALL: [Outcome; 6] = [
        Outcome::Done,
        Outcome::Locked,
        Outcome::Unreachable,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Usage,
    ];

    /// `miglockctl`'s exit status for it.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Locked => 1,
            Outcome::Unreachable => 2,
            Outcome::Failed => 3,
            Outcome::Cancelled => 4,
            // sysexits.h's EX_USAGE: clap's own 2 is taken.
            Outcome::Usage => 64,
        }
    }

    /// What it means, for the man page.
    pub fn meaning(self) -> &'static str {
        match self {
            Outcome::Done => "Done. check: the VM may migrate now.",
            Outcome::Locked => {
                "check: the VM is locked (reasons on stderr). migrate: refused because the VM \
                 is locked (also still locked after --wait-unlock), because the mode asked \
                 would corrupt the guest on this QEMU (the fence), or because a checkpoint is \
                 being taken. checkpoint: refused because the VM is migrating, or is locked \
                 and its policy forbids checkpoints of a locked VM."
            }
            Outcome::Unreachable => {
                "The agent manages no VM of that name, or cannot be reached (no control \
                 socket, connection refused, or it closed the connection without an answer)."
            }
            Outcome::Failed => {
                "The agent or QEMU reported an error: the migration, checkpoint or restore \
                 failed or QEMU refused it (e.g. no userfaultfd write-protection for a \
                 checkpoint), the VM is already migrating or being checkpointed, a bad value."
            }
            Outcome::Cancelled => {
                "The migration or checkpoint started and was cancelled: the guest locked \
                 during the copy, --timeout passed, or another QMP client cancelled it. The VM \
                 runs on here; a cancelled checkpoint's image is not usable."
            }
            Outcome::Usage => "Bad command-line arguments.",
        }
    }
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

/// A bandwidth as [`bytes`] takes it, or 0: QEMU's "no limit" (for
/// `max-postcopy-bandwidth`, where 0 means that).
fn bytes_or_none(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    bytes(s)
}

/// The libvirt hook's command line, for its man page only: the hook
/// parses its arguments by hand, since a parse error there would make
/// libvirt refuse to start any domain.
pub fn hook() -> clap::Command {
    use clap::{Arg, Command};
    Command::new("miglock-libvirt-hook")
        .version(env!("CARGO_PKG_VERSION"))
        .about("libvirt qemu hook: refuse to migrate a VM whose guest holds a migration lock")
        .long_about(
            "libvirt runs it as /etc/libvirt/hooks/qemu (or a script in \
/etc/libvirt/hooks/qemu.d/) with the domain XML on stdin. Before an incoming \
migration it runs on the destination as DOMAIN migrate begin -; the hook then reads \
the lock state miglockd keeps in the domain's <metadata> (namespace \
urn:x-miglock:lock:1) and exits 1 with the reasons on stderr if the VM is locked. \
Unlocked VMs, VMs that are not miglock's (no miglock chardev) and every other \
operation pass (exit 0). A miglock VM whose state cannot be read is refused, unless \
the configuration says unknown = \"allow\": miglock.toml beside the hook, else \
/etc/miglock/libvirt-hook.toml.\n\n\
The package installs it as /usr/libexec/miglock/miglock-libvirt-hook and leaves \
/etc/libvirt/hooks alone: link or copy it there yourself, then restart libvirtd.",
        )
        .arg(
            Arg::new("domain")
                .value_name("DOMAIN")
                .help("The domain's name"),
        )
        .arg(
            Arg::new("operation")
                .value_name("OPERATION")
                .help("libvirt's operation, e.g. migrate, start"),
        )
        .arg(
            Arg::new("sub")
                .value_name("SUB-OPERATION")
                .help("e.g. begin"),
        )
        .arg(
            Arg::new("extra")
                .value_name("EXTRA")
                .help("libvirt's extra argument, '-' for migrate"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_lines_are_consistent() {
        Daemon::command().debug_assert();
        Ctl::command().debug_assert();
        hook().debug_assert();
    }

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<u8> = Outcome::ALL.iter().map(|o| o.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Outcome::ALL.len(), "{codes:?}");
        assert_eq!(Outcome::Done.code(), 0);
        assert_eq!(Outcome::Locked.code(), 1);
        assert_eq!(Outcome::Unreachable.code(), 2);
    }

    #[test]
    fn bandwidths_and_modes_parse() {
        assert_eq!(bytes("100M"), Ok(100 << 20));
        assert_eq!(bytes("4KiB"), Ok(4 << 10));
        assert_eq!(bytes("7"), Ok(7));
        assert!(bytes("0").is_err());
        assert_eq!(bytes_or_none("0"), Ok(0));
        assert_eq!(bytes_or_none("32M"), Ok(32 << 20));
        assert!(bytes_or_none("0M").is_err());
        assert!(bytes("5T").is_err());
        assert_eq!(mode("hybrid"), Ok(Mode::PrecopyThenPostcopy));
        assert!(mode("fast").is_err());
    }
}
