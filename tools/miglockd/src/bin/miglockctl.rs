// SPDX-License-Identifier: GPL-2.0

//! `miglockctl`: talk to miglockd. The exit status says how a command
//! ended (`miglockd::cli::Outcome`, documented in the man page).

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use miglock_abi::types::MLD_HINT_SCORE_RECENT;
use miglock_control::{
    CheckpointRequest, ErrorClass, IncomingRequest, MigrateRequest, MigrationProgress,
    PolicyUpdate, PrefetchRange, Reply, Request, RestoreRequest,
};
use miglockd::cli::{Ctl, CtlCmd, Outcome};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Why a command did not end well.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("cannot reach miglockd at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("miglockd closed the connection without an answer")]
    NoAnswer,
    #[error("{message}")]
    Agent { class: ErrorClass, message: String },
    #[error("miglockd does not manage VM '{0}'")]
    NoVm(String),
    #[error("{0}")]
    Usage(&'static str),
    #[error("{0}")]
    Input(String),
    #[error("bad reply from miglockd: {0}")]
    BadReply(serde_json::Error),
}

impl Fail {
    fn outcome(&self) -> Outcome {
        match self {
            Fail::Unreachable { .. } | Fail::NoAnswer | Fail::NoVm(_) => Outcome::Unreachable,
            Fail::Agent { class, .. } => match class {
                ErrorClass::Refused => Outcome::Locked,
                ErrorClass::Cancelled => Outcome::Cancelled,
                ErrorClass::UnknownVm => Outcome::Unreachable,
                ErrorClass::Failed => Outcome::Failed,
            },
            Fail::Usage(_) | Fail::Input(_) => Outcome::Usage,
            Fail::BadReply(_) => Outcome::Failed,
        }
    }
}

/// Non-terminal output gets a copy progress line at most this often (and
/// at every change of QEMU's status).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Which copy progress lines a log (not a terminal) gets.
#[derive(Default)]
struct Throttle {
    last: Option<(Instant, String)>,
}

impl Throttle {
    fn due(&mut self, status: &str, now: Instant) -> bool {
        let due = match &self.last {
            Some((at, s)) => s != status || now.saturating_duration_since(*at) >= PLAIN_EVERY,
            None => true,
        };
        if due {
            self.last = Some((now, status.to_string()));
        }
        due
    }
}

/// Progress on stderr: one updating bar on a terminal, plain lines
/// otherwise.
struct Show {
    bar: Option<ProgressBar>,
    throttle: Throttle,
}

impl Show {
    fn new() -> Show {
        Show {
            bar: None,
            throttle: Throttle::default(),
        }
    }

    fn say(&mut self, message: &str, migration: Option<&MigrationProgress>) {
        let Some(m) = migration else {
            self.line(&format!("miglockctl: {message}"));
            return;
        };
        if !std::io::stderr().is_terminal() {
            if self.throttle.due(&m.status, Instant::now()) {
                eprintln!("miglockctl: {message}");
            }
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        bar.set_position((m.done() * 1000.0) as u64);
        bar.set_message(bar_text(m));
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// "active: 12.3 MiB/s, ETA 4s, 140.2 MiB sent".
fn bar_text(m: &MigrationProgress) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let eta = m.eta().map_or("-".to_string(), |d| {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    });
    format!(
        "{}: {:.1} MiB/s, ETA {eta}, {:.1} MiB sent",
        m.status,
        mib(m.rate_bytes_per_s),
        mib(m.transferred_bytes)
    )
}

/// Sends `req` and reads the answer up to its result; progress and events
/// go to `each` on the way, with the raw line.
fn converse(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(&str, &Reply),
) -> Result<Value, Fail> {
    let unreachable = |source| Fail::Unreachable {
        path: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    let text = serde_json::to_string(req).map_err(Fail::BadReply)?;
    writeln!(s, "{text}").map_err(unreachable)?;
    for line in BufReader::new(s).lines() {
        let line = line.map_err(unreachable)?;
        let reply = serde_json::from_str::<Reply>(&line).map_err(Fail::BadReply)?;
        each(&line, &reply);
        match reply {
            Reply::Ok { data } => return Ok(data),
            Reply::Error { message, class } => return Err(Fail::Agent { class, message }),
            Reply::Progress { .. } | Reply::Event { .. } => {}
        }
    }
    Err(Fail::NoAnswer)
}

fn check(cli: &Ctl, vm: &str) -> Result<Outcome, Fail> {
    let st = converse(&cli.socket, &Request::Status, |_, _| {})?;
    let v = &st["vms"][vm];
    if v.is_null() {
        return Err(Fail::NoVm(vm.to_string()));
    }
    let locked = v["locked"] == true;
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if cli.json {
        let out = json!({"vm": vm, "may_migrate": !locked, "locked": locked, "reasons": reasons});
        println!("{out}");
    }
    if locked {
        eprintln!("miglockctl: VM '{vm}' is locked: {}", reasons.join("; "));
        return Ok(Outcome::Locked);
    }
    if !cli.json {
        println!("VM '{vm}' may migrate");
    }
    Ok(Outcome::Done)
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

fn main() -> ExitCode {
    let cli = match Ctl::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version end well; clap's usage error code (2)
            // would read as "unreachable".
            let code = if e.exit_code() == 0 {
                Outcome::Done
            } else {
                Outcome::Usage
            };
            return ExitCode::from(code.code());
        }
    };
    let outcome = run(&cli).unwrap_or_else(|f| {
        eprintln!("miglockctl: {f}");
        f.outcome()
    });
    ExitCode::from(outcome.code())
}

fn request(cmd: &CtlCmd) -> Result<Request, Fail> {
    Ok(match cmd {
        CtlCmd::Status => Request::Status,
        CtlCmd::Policy {
            vm,
            migration,
            guest_locks,
            max_lease,
            quota,
            window,
            grace,
            checkpoint_locked,
        } => {
            let set = PolicyUpdate {
                migration: *migration,
                guest_locks: *guest_locks,
                max_lease_ms: ms(*max_lease).map(|v| v.min(u64::from(u32::MAX)) as u32),
                quota_ms: ms(*quota),
                window_ms: ms(*window),
                grace_ms: ms(*grace).map(|v| v.min(u64::from(u32::MAX)) as u32),
                checkpoint_locked: *checkpoint_locked,
            };
            let changed = set != PolicyUpdate::default();
            Request::Policy {
                vm: vm.clone(),
                set: changed.then_some(set),
            }
        }
        CtlCmd::Migrate {
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
            postcopy_preempt,
            auto_converge,
        } => {
            if *force && reason.is_none() {
                return Err(Fail::Usage("--force needs --reason"));
            }
            Request::Migrate(MigrateRequest {
                vm: vm.clone(),
                to: to.clone(),
                mode: *mode,
                wait_unlock_ms: ms(wait_unlock.flatten()),
                wait_grace: matches!(wait_unlock, Some(None)),
                force: *force,
                reason: reason.clone(),
                bandwidth: *bandwidth,
                postcopy_bandwidth: *postcopy_bandwidth,
                downtime_limit_ms: ms(*downtime_limit),
                timeout_ms: ms(*timeout),
                postcopy_preempt: *postcopy_preempt,
                auto_converge: *auto_converge,
            })
        }
        CtlCmd::Checkpoint {
            vm,
            to,
            lead,
            timeout,
        } => Request::Checkpoint(CheckpointRequest {
            vm: vm.clone(),
            to: to.clone(),
            lead_ms: ms(*lead),
            timeout_ms: ms(*timeout),
        }),
        CtlCmd::Restore { vm, from } => Request::Restore(RestoreRequest {
            vm: vm.clone(),
            from: from.clone(),
        }),
        CtlCmd::Watch => Request::Watch,
        CtlCmd::Hints { vm, all } => Request::Hints {
            vm: vm.clone(),
            all: *all,
        },
        CtlCmd::Incoming {
            vm,
            listen,
            postcopy,
            postcopy_preempt,
            prefetch,
        } => Request::Incoming(IncomingRequest {
            vm: vm.clone(),
            uri: listen.clone(),
            postcopy: *postcopy,
            postcopy_preempt: *postcopy_preempt,
            prefetch: match prefetch {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| Fail::Input(format!("{}: {e}", path.display())))?;
                    hint_ranges(&text)
                        .map_err(|e| Fail::Input(format!("{}: {e}", path.display())))?
                }
                None => Vec::new(),
            },
        }),
        CtlCmd::Check { .. } => unreachable!("check asks for the status itself"),
    })
}

fn run(cli: &Ctl) -> Result<Outcome, Fail> {
    if let CtlCmd::Check { vm } = &cli.cmd {
        return check(cli, vm);
    }
    let req = request(&cli.cmd)?;
    let mut show = Show::new();
    let r = converse(&cli.socket, &req, |line, reply| {
        if cli.json {
            println!("{line}");
        }
        match reply {
            Reply::Progress { message, migration } => show.say(message, migration.as_ref()),
            Reply::Event { event } if !cli.json => println!("{event}"),
            _ => {}
        }
    });
    show.done();
    let data = r?;
    if !cli.json {
        // Printing JSON we just parsed cannot fail.
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
    }
    Ok(Outcome::Done)
}

/// The ranges of a hints file: what `miglockctl --json hints VM --all`
/// printed (its last record), or that record's `data`, or its ranges
/// alone; of ranges with a score, those of the guest's working set now
/// (`MLD_HINT_SCORE_RECENT`): pages it last used long ago would take the
/// link from the pages it waits for.
fn hint_ranges(text: &str) -> Result<Vec<PrefetchRange>, String> {
    #[derive(serde::Deserialize)]
    struct Ranked {
        start_pfn: u64,
        pages: u32,
        score: Option<u32>,
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("empty: expected the output of `miglockctl --json hints VM --all`")?;
    let v: Value = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(last))
        .map_err(|e| format!("not JSON: {e}"))?;
    let data = if v["kind"] == "ok" { &v["data"] } else { &v };
    let ranges = match data {
        Value::Array(_) => data,
        _ if data["latest"].is_null() && data.get("latest").is_some() => {
            return Err("the guest had sent no hints".into())
        }
        _ => &data["latest"]["top"],
    };
    let ranked: Vec<Ranked> = serde_json::from_value(ranges.clone()).map_err(|e| {
        format!("no hint ranges ({e}): expected the output of `miglockctl --json hints VM --all`")
    })?;
    if ranked.is_empty() {
        return Err("no hint ranges".into());
    }
    let recent: Vec<PrefetchRange> = ranked
        .iter()
        .filter(|r| r.score.is_none_or(|s| s >= MLD_HINT_SCORE_RECENT))
        .map(|r| PrefetchRange {
            start_pfn: r.start_pfn,
            pages: r.pages,
        })
        .collect();
    if recent.is_empty() {
        return Err(format!(
            "none of the {} hint ranges is of the guest's working set now",
            ranked.len()
        ));
    }
    Ok(recent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_is_thinned_but_status_changes_show() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert!(t.due("active", t0));
        assert!(!t.due("active", t0 + Duration::from_millis(250)));
        assert!(!t.due("active", t0 + Duration::from_millis(4750)));
        assert!(t.due("active", t0 + Duration::from_secs(5)));
        assert!(t.due("postcopy-active", t0 + Duration::from_millis(5250)));
    }

    #[test]
    fn each_failure_has_its_outcome() {
        let agent = |class| Fail::Agent {
            class,
            message: String::new(),
        };
        assert_eq!(agent(ErrorClass::Refused).outcome(), Outcome::Locked);
        assert_eq!(agent(ErrorClass::Cancelled).outcome(), Outcome::Cancelled);
        assert_eq!(agent(ErrorClass::Failed).outcome(), Outcome::Failed);
        assert_eq!(agent(ErrorClass::UnknownVm).outcome(), Outcome::Unreachable);
        assert_eq!(Fail::NoAnswer.outcome(), Outcome::Unreachable);
        assert_eq!(Fail::NoVm("x".into()).outcome(), Outcome::Unreachable);
        assert_eq!(Fail::Usage("x").outcome(), Outcome::Usage);
        assert_eq!(Fail::Input("x".into()).outcome(), Outcome::Usage);
    }

    #[test]
    fn hint_files_are_what_hints_prints() {
        let want = vec![
            PrefetchRange {
                start_pfn: 4096,
                pages: 3,
            },
            PrefetchRange {
                start_pfn: 10,
                pages: 1,
            },
        ];
        // Scores: accessed in the last sample, in the one before, earlier.
        let data = r#"{"vm":"g","latest":{"batch":4,"ranges":3,"pages":5,"top":[{"start_pfn":4096,"pages":3,"score":33023},{"start_pfn":10,"pages":1,"score":16386},{"start_pfn":20,"pages":1,"score":8191}]},"stats":{}}"#;
        let ndjson = format!(
            "{{\"kind\":\"progress\",\"message\":\"x\"}}\n{{\"kind\":\"ok\",\"data\":{data}}}\n\n"
        );
        assert_eq!(hint_ranges(&ndjson).unwrap(), want);
        assert_eq!(hint_ranges(data).unwrap(), want);
        let bare = r#"[{"start_pfn":4096,"pages":3},{"start_pfn":10,"pages":1}]"#;
        assert_eq!(hint_ranges(bare).unwrap(), want);
        for bad in [
            "",
            "not json",
            r#"{"vm":"g","latest":null}"#,
            r#"[]"#,
            r#"[{"start_pfn":-1,"pages":1}]"#,
            r#"[{"start_pfn":1,"pages":4294967296}]"#,
            r#"[{"start_pfn":1,"pages":1,"score":16383}]"#,
        ] {
            assert!(hint_ranges(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bar_says_rate_and_eta() {
        let m = MigrationProgress {
            status: "active".into(),
            total_bytes: 256 << 20,
            transferred_bytes: 64 << 20,
            remaining_bytes: 192 << 20,
            rate_bytes_per_s: 32 << 20,
            elapsed_ms: 2000,
        };
        assert_eq!(bar_text(&m), "active: 32.0 MiB/s, ETA 6s, 64.0 MiB sent");
    }
}
