// SPDX-License-Identifier: GPL-2.0

//! `xtask docs DIR`: the man pages and shell completions of every program
//! the packages ship, generated from their command-line definitions, so
//! that they never disagree with `--help`. Writes `DIR/man/NAME.SECTION`
//! (and `NAME-SUBCOMMAND.SECTION`), `DIR/bash/NAME`, `DIR/zsh/_NAME` and
//! `DIR/fish/NAME.fish`.

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use miglockd::cli::Outcome;
use roff::{bold, roman, Roff};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// What a man page says beyond the command line.
#[derive(Default)]
struct Extra {
    exit_status: Vec<(u8, String)>,
    environment: &'static [(&'static str, &'static str)],
    files: &'static [(&'static str, &'static str)],
    see_also: &'static [&'static str],
}

/// One program the packages ship.
struct Program {
    cmd: clap::Command,
    section: &'static str,
    extra: Extra,
    /// Whether it gets shell completions (not the hook libvirt runs).
    complete: bool,
}

fn codes(list: &[(u8, &str)]) -> Vec<(u8, String)> {
    list.iter().map(|&(c, m)| (c, m.to_string())).collect()
}

fn programs() -> Vec<Program> {
    vec![
        Program {
            cmd: miglockd::cli::Daemon::command(),
            section: "8",
            extra: Extra {
                exit_status: codes(&[
                    (0, "Stopped by SIGTERM or SIGINT; with --check-config: the configuration is valid."),
                    (1, "It could not start: the configuration is missing or invalid, or the audit log, the state file or the control socket cannot be opened."),
                ]),
                environment: &[
                    ("MIGLOCKD_CONFIG", "The configuration file when --config is not given (default /etc/miglock/miglockd.toml)."),
                    ("MIGLOCKD_LOG", "Log level: error, warn, info (default), debug or trace."),
                    ("NOTIFY_SOCKET", "Set by systemd: READY=1 is sent once the control socket listens, STOPPING=1 on SIGTERM."),
                    ("JOURNAL_STREAM", "Set by systemd: log lines then carry syslog priority prefixes and no timestamps."),
                ],
                files: &[
                    ("/etc/miglock/miglockd.toml", "The configuration: paths, limits, planner, blocker, and one [[vm]] table per VM (doorbell and QMP sockets, policy, libvirt domain)."),
                    ("/var/lib/miglock/state.json", "Every VM's lock state, rewritten atomically on every change."),
                    ("/var/log/miglock/audit.jsonl", "The audit log: one JSON record per decision, append-only, reopened on SIGHUP."),
                    ("/run/miglock/control.sock", "The control socket miglockctl talks to (mode 0600)."),
                ],
                see_also: &["miglockctl(1)", "miglock-libvirt-hook(8)", "systemd.service(5)"],
            },
            complete: true,
        },
        Program {
            cmd: miglockd::cli::Ctl::command(),
            section: "1",
            extra: Extra {
                exit_status: Outcome::ALL
                    .iter()
                    .map(|o| (o.code(), o.meaning().to_string()))
                    .collect(),
                environment: &[("MIGLOCKD_SOCKET", "The control socket when --socket is not given.")],
                files: &[("/run/miglock/control.sock", "The agent's control socket (root only).")],
                see_also: &["miglockd(8)"],
            },
            complete: true,
        },
        Program {
            cmd: miglockd::cli::hook(),
            section: "8",
            extra: Extra {
                exit_status: codes(&[
                    (0, "Allowed: not a migration, not a miglock VM, or unlocked."),
                    (1, "Refused: the VM is locked, or its lock state is unknown and unknown = \"allow\" is not set."),
                ]),
                files: &[
                    ("/usr/libexec/miglock/miglock-libvirt-hook", "Where the package installs it."),
                    ("/etc/libvirt/hooks/qemu", "Where libvirt runs it from (or a file in /etc/libvirt/hooks/qemu.d/)."),
                    ("/etc/miglock/libvirt-hook.toml", "Its configuration, if there is no miglock.toml beside it."),
                ],
                see_also: &["miglockd(8)", "virsh(1)"],
                ..Extra::default()
            },
            complete: false,
        },
        Program {
            cmd: miglock_cli::cli::Cli::command(),
            section: "1",
            extra: Extra {
                exit_status: codes(&[
                    (0, "Done."),
                    (1, "The lock, unlock or renew failed (the reason on stderr), or /dev/mld cannot be opened."),
                    (2, "Bad arguments."),
                ]),
                files: &[
                    ("/dev/mld", "The module's device."),
                    ("/sys/kernel/miglock/", "The lock state, holders, lease and host channel."),
                ],
                see_also: &["set_migration_flag(1)", "miglock-tracer(8)"],
                ..Extra::default()
            },
            complete: true,
        },
        Program {
            cmd: miglock_cli::cli::SetMigrationFlag::command(),
            section: "1",
            extra: Extra {
                exit_status: codes(&[(0, "The flag is set."), (1, "It could not be set (the reason on stderr)."), (2, "Bad arguments.")]),
                files: &[("/dev/mld", "The module's device, used when the kernel lacks the syscall.")],
                see_also: &["miglock(1)"],
                ..Extra::default()
            },
            complete: true,
        },
        Program {
            cmd: miglock_tracer::cli::Cli::command(),
            section: "8",
            extra: Extra {
                exit_status: codes(&[(0, "Done."), (1, "An error (on stderr), or eval below --min-precision or --min-recall."), (2, "Bad arguments.")]),
                files: &[
                    ("/sys/kernel/mm/page_idle/bitmap", "Idle page tracking: which frames were accessed."),
                    ("/proc/kpageflags", "Which frames are on an LRU list."),
                    ("/dev/mld", "Where hint batches go."),
                ],
                see_also: &["miglock(1)"],
                ..Extra::default()
            },
            complete: true,
        },
    ]
}

/// A section of "TAG meaning" paragraphs.
fn tagged<'a>(roff: &mut Roff, title: &str, items: impl IntoIterator<Item = (String, &'a str)>) {
    let items: Vec<_> = items.into_iter().collect();
    if items.is_empty() {
        return;
    }
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(tag)]);
        roff.text([roman(text)]);
    }
}

fn man_page(p: &Program, dir: &Path) -> Result<()> {
    let version = p.cmd.get_version().unwrap_or("").to_string();
    let source = format!("miglock {version}");
    let mut cmd = p.cmd.clone().disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone())
        .section(p.section)
        .source(source.clone())
        .manual("miglock");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if p.cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    let e = &p.extra;
    tagged(
        &mut roff,
        "EXIT STATUS",
        e.exit_status
            .iter()
            .map(|(c, m)| (c.to_string(), m.as_str())),
    );
    tagged(
        &mut roff,
        "ENVIRONMENT",
        e.environment.iter().map(|(k, v)| (k.to_string(), *v)),
    );
    tagged(
        &mut roff,
        "FILES",
        e.files.iter().map(|(k, v)| (k.to_string(), *v)),
    );
    if !e.see_also.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman(e.see_also.join(", "))]);
    }
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    // One page per subcommand, as git has (miglockctl-migrate(1)).
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        Man::new(sub.clone())
            .section(p.section)
            .source(source.clone())
            .manual("miglock")
            .generate_to(dir)?;
    }
    Ok(())
}

fn completions(p: &Program, dir: &Path) -> Result<()> {
    let name = p.cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let path = dir.join(file);
        let mut f = File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        clap_complete::generate(shell, &mut p.cmd.clone(), &name, &mut f);
        f.flush()?;
    }
    Ok(())
}

fn docs(dir: &Path) -> Result<()> {
    for sub in ["man", "bash", "zsh", "fish"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for p in programs() {
        man_page(&p, &dir.join("man"))?;
        if p.complete {
            completions(&p, dir)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "docs" => docs(Path::new(dir)),
        _ => bail!("usage: xtask docs DIR"),
    }
}
