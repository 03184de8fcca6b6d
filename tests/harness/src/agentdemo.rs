// SPDX-License-Identifier: GPL-2.0

//! The end-to-end story with the real host agent: two QEMU processes stand
//! for two hosts on 127.0.0.1, each with its own `miglockd`; `miglockctl
//! migrate` is refused while the guest holds its lock, and succeeds once it
//! lets go; the destination's agent then owns the guest's lock state.

use crate::pair::{last_tick_in, tick_of};
use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::vm::{Doorbell, Vm, Wait};
use anyhow::Context;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Instant;

/// A running `miglockctl incoming`.
pub(crate) struct Receiving {
    /// The process; it exits once the migration ends.
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) uri: String,
    /// Everything it prints after that, once it exits.
    pub(crate) said: std::thread::JoinHandle<Vec<String>>,
}

/// One `miglockd` for one "host".
pub(crate) struct Agent {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
}

impl Agent {
    pub(crate) fn start(bin_dir: &Path, dir: &Path, host: &str) -> anyhow::Result<Agent> {
        Self::start_with(bin_dir, dir, host, "")
    }

    /// Like `start`, with `extra` appended to the configuration.
    pub(crate) fn start_with(
        bin_dir: &Path,
        dir: &Path,
        host: &str,
        extra: &str,
    ) -> anyhow::Result<Agent> {
        let vm = dir.display();
        Self::start_toml(
            bin_dir,
            dir,
            host,
            &format!(
                "[[vm]]\nname = \"guest\"\ndoorbell = \"{vm}/{host}-doorbell.sock\"\nqmp = \"{vm}/{host}-agent-qmp.sock\"\n\
                 [vm.policy]\nmax_lease_ms = 120000\n\
                 [[vm]]\nname = \"hostile\"\ndoorbell = \"{vm}/{host}-hostile.sock\"\n{extra}\n"
            ),
        )
    }

    /// Starts the agent of `host` (in `dir/HOST-agent/`) with `vms`, the
    /// configuration after its file paths.
    pub(crate) fn start_toml(
        bin_dir: &Path,
        dir: &Path,
        host: &str,
        vms: &str,
    ) -> anyhow::Result<Agent> {
        let adir = dir.join(format!("{host}-agent"));
        fs::create_dir_all(&adir)?;
        let d = adir.display();
        fs::write(
            adir.join("miglockd.toml"),
            format!(
                "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\ncontrol = \"{d}/control.sock\"\n{vms}"
            ),
        )?;
        let child = Command::new(bin_dir.join("miglockd"))
            .arg("--config")
            .arg(adir.join("miglockd.toml"))
            .stderr(fs::File::create(adir.join("miglockd.err"))?)
            .spawn()
            .context("starting miglockd (make tools)")?;
        Ok(Agent {
            child,
            dir: adir,
            bin: bin_dir.join("miglockctl"),
        })
    }

    /// Kills it (as SIGKILL or a crash would) and waits for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it SIGTERM (as systemd stopping the service would) and waits
    /// for it to exit, at most `within`; its exit status, or an error if it
    /// did not exit in time (it is then killed).
    pub(crate) fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        use rustix::process::{kill_process, Pid, Signal};
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .context("the agent's pid")?;
        kill_process(pid, Signal::TERM).context("sending SIGTERM")?;
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for miglockd")? {
                return Ok(status);
            }
            if Instant::now() >= until {
                self.kill();
                anyhow::bail!("miglockd did not exit within {within:?} of SIGTERM");
            }
            std::thread::yield_now();
        }
    }

    /// The `miglockctl` binary.
    pub(crate) fn bin(&self) -> &Path {
        &self.bin
    }

    /// Its control socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub(crate) fn ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new(&self.bin)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .context("running miglockctl")?;
        Ok(out)
    }

    /// Starts `miglockctl incoming guest` on this agent, listening on a port
    /// of 127.0.0.1 that QEMU picks.
    pub(crate) fn receive(&self, extra: &[&str]) -> Result<Receiving, Failure> {
        use std::io::BufRead;
        let mut child = Command::new(&self.bin)
            .arg("--socket")
            .arg(self.socket())
            .args(["--json", "incoming", "guest", "--listen", "tcp:127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("running miglockctl incoming")?;
        let out = child.stdout.take().context("incoming's stdout")?;
        let mut lines = std::io::BufReader::new(out).lines();
        let listening = lines.find_map(|l| {
            let v: Value = serde_json::from_str(&l.ok()?).ok()?;
            v["message"]
                .as_str()?
                .strip_prefix("listening on ")
                .map(String::from)
        });
        let Some(uri) = listening else {
            let _ = child.kill();
            return Err(host_fail(
                "the destination agent did not start listening".into(),
            ));
        };
        // Keep reading its answer so it never blocks on a full pipe.
        let said = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Ok(Receiving { child, uri, said })
    }

    /// `miglockctl hints guest` as JSON (every range with `all`).
    pub(crate) fn hints(&self, all: bool) -> anyhow::Result<Value> {
        let mut args = vec!["--json", "hints", "guest"];
        if all {
            args.push("--all");
        }
        let out = self.ctl(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default())
    }

    /// Writes the VM's latest hints, every range, to a file for
    /// `miglockctl incoming --prefetch` (as an operator would carry them
    /// from the source host); returns its path.
    pub(crate) fn export_hints(&self) -> anyhow::Result<PathBuf> {
        let file = self.dir.join("hints.json");
        std::fs::write(&file, self.hints(true)?.to_string())
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }

    pub(crate) fn audit(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn host_fail(msg: String) -> Failure {
    Failure::new(FailKind::Host, msg)
}

pub(crate) fn wait_for(vm: &mut Vm, deadline: Instant, marker: &str) -> Result<(), Failure> {
    match vm.wait_line(deadline, |l| l.contains(marker)) {
        Wait::Line(_) => Ok(()),
        _ => Err(Failure::new(
            FailKind::Timeout,
            format!(
                "no '{marker}' from the guest; log: {}",
                vm.serial_log.display()
            ),
        )),
    }
}

fn show(what: &str, out: &Output) {
    eprintln!(
        "  $ miglockctl {what}  (exit {})",
        out.status.code().unwrap_or(-1)
    );
    for l in String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
    {
        eprintln!("    {l}");
    }
}

/// Which story an agent scenario tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Story {
    /// Refused while locked, migrated after the unlock, destination takes over.
    Demo,
    /// `--wait-unlock`: the notice wakes the application, which unlocks.
    Notice,
    /// `--force --reason`: migrated despite the lock, audited, guest told.
    Force,
    /// The agent is killed and restarted mid-lock: still locked.
    Restart,
    /// A lock during the copy cancels the migration.
    Relock,
    /// The demo while another VM of the same agent floods it with garbage.
    Hostile,
    /// Hint batches from the guest reach the agent intact.
    Hints,
    /// Post-copy with the destination agent receiving: the guest is told.
    Postcopy,
    /// The same, `postcopy-preempt` on both ends, and the destination
    /// reading the guest's hinted pages ahead in QEMU's memory.
    PostcopyRunahead,
    /// Post-copy paused mid-way (the link "broke"): both agents fail at
    /// once saying how to recover; recovered so, the guest arrives whole.
    PostcopyRecover,
    /// `--mode auto` on a write-heavy guest, after default pre-copy gives up.
    PlanWriteHeavy,
    /// `--mode auto` keeps pre-copy on a read-mostly guest.
    PlanReadMostly,
    /// Every open file hears of a migration, its cancellation, the arrival.
    Notices,
    /// A guest that stops reading its UART stops nothing else.
    StuckGuest,
}

impl Story {
    /// The destination agent (not the harness) starts the incoming side.
    fn agent_receives(self) -> bool {
        matches!(
            self,
            Story::Postcopy
                | Story::PostcopyRunahead
                | Story::PostcopyRecover
                | Story::PlanWriteHeavy
                | Story::PlanReadMostly
        )
    }
}

/// Two "hosts": a QEMU and a miglockd each.
pub(crate) struct Hosts {
    pub(crate) src: Vm,
    pub(crate) dst: Vm,
    pub(crate) src_agent: Agent,
    pub(crate) dst_agent: Agent,
    pub(crate) uri: String,
    pub(crate) bins: PathBuf,
    /// What `miglockctl incoming` printed, once it exits.
    incoming: Option<std::thread::JoinHandle<Vec<String>>>,
    /// The agents fence pre-copy on this QEMU (older than 10.0 under TCG:
    /// its dirty log loses pages). Stories whose point is not the mode
    /// then migrate in post-copy, as an operator there must.
    pub(crate) fenced: bool,
    /// QEMU's major, minor, micro.
    pub(crate) qemu: (u64, u64, u64),
}

/// `vm`'s QEMU version, and whether the agent fences pre-copy on it (the
/// agent's rule in `fence.rs`, asked of QEMU the same way).
pub(crate) fn qemu_fence(vm: &mut Vm) -> Result<((u64, u64, u64), bool), Failure> {
    let v = vm
        .qmp
        .execute("query-version", None)
        .context("query-version")?;
    let kvm = vm.qmp.execute("query-kvm", None).context("query-kvm")?;
    let q = &v["qemu"];
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    let version = (n("major"), n("minor"), n("micro"));
    Ok((version, kvm["enabled"] != true && version < (10, 0, 0)))
}

impl Hosts {
    /// With `agent_receives`, the destination's agent starts the incoming
    /// side later (`receive`); otherwise the harness does it now.
    pub(crate) fn start(
        sc: &Scenario,
        env: &Env<'_>,
        agent_receives: bool,
    ) -> Result<Hosts, Failure> {
        let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
        let bins = bins.parent().context("harness directory")?.to_path_buf();
        let mut dst = Vm::start(&env.spec_with("dst", sc.guest, true, Doorbell::Agent))?;
        let mut src = Vm::start(&env.spec_with("src", sc.guest, false, Doorbell::Agent))?;
        let (qemu, fenced) = qemu_fence(&mut src)?;
        let src_agent = Agent::start(&bins, &env.dir, "src")?;
        let dst_agent = Agent::start(&bins, &env.dir, "dst")?;
        src.qmp
            .execute(
                "migrate-set-parameters",
                Some(json!({"max-bandwidth": 1u64 << 30})),
            )
            .context("migrate-set-parameters")?;
        if agent_receives {
            return Ok(Hosts {
                src,
                dst,
                src_agent,
                dst_agent,
                uri: String::new(),
                bins,
                incoming: None,
                fenced,
                qemu,
            });
        }
        if fenced {
            // Post-copy needs the capability on both ends.
            dst.qmp
                .execute(
                    "migrate-set-capabilities",
                    Some(json!({"capabilities": [{"capability": "postcopy-ram", "state": true}]})),
                )
                .context("migrate-set-capabilities")?;
        }
        dst.qmp
            .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))
            .context("migrate-incoming")?;
        let q = dst
            .qmp
            .execute("query-migrate", None)
            .context("query-migrate")?;
        let port = q["socket-address"][0]["port"]
            .as_str()
            .context("no incoming port")?
            .to_string();
        Ok(Hosts {
            src,
            dst,
            src_agent,
            dst_agent,
            uri: format!("tcp:127.0.0.1:{port}"),
            bins,
            incoming: None,
            fenced,
            qemu,
        })
    }

    /// `miglockctl incoming` on the destination agent; returns it running
    /// and the URI it listens on.
    pub(crate) fn receive(&mut self, extra: &[&str]) -> Result<Child, Failure> {
        let rx = self.dst_agent.receive(extra)?;
        eprintln!(
            "  $ miglockctl incoming guest --listen tcp:127.0.0.1:0 {}: listening on {}",
            extra.join(" "),
            rx.uri
        );
        self.uri = rx.uri;
        self.incoming = Some(rx.said);
        Ok(rx.child)
    }

    /// `miglockctl migrate` to the destination, with `extra`; in
    /// post-copy on a fenced QEMU unless `extra` names the mode.
    pub(crate) fn migrate(&self, extra: &[&str]) -> Result<Output, Failure> {
        let mut args = vec!["migrate", "guest", "--to", &self.uri];
        args.extend_from_slice(extra);
        if self.fenced && !extra.contains(&"--mode") {
            args.extend(["--mode", "postcopy"]);
        }
        let out = self.src_agent.ctl(&args)?;
        show(&args.join(" "), &out);
        Ok(out)
    }

    /// `miglockctl migrate` to the destination with `extra`, left running
    /// (its output piped) while the caller acts on the migration.
    pub(crate) fn migrate_in_background(&self, extra: &[&str]) -> Result<Child, Failure> {
        Ok(Command::new(self.src_agent.bin())
            .arg("--socket")
            .arg(self.src_agent.socket())
            .args(["migrate", "guest", "--to", &self.uri])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running miglockctl")?)
    }

    /// Waits until the migration `ctl` asked for copies; an error says why
    /// it ended first, or that it never began.
    pub(crate) fn until_active(
        &mut self,
        ctl: &mut Child,
        deadline: Instant,
    ) -> Result<(), Failure> {
        loop {
            let q = self
                .src
                .qmp
                .execute("query-migrate", None)
                .context("query-migrate")?;
            if q["status"] == "active" {
                return Ok(());
            }
            // Refused before it began (e.g. a fenced QEMU): say why now.
            if ctl.try_wait().context("miglockctl")?.is_some() {
                let mut err = String::new();
                if let Some(mut e) = ctl.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(host_fail(format!(
                    "the migration ended before its copy began: {}",
                    err.trim()
                )));
            }
            if Instant::now() >= deadline {
                let _ = ctl.kill();
                return Err(Failure::new(
                    FailKind::Timeout,
                    "the migration never became active",
                ));
            }
            std::thread::yield_now();
        }
    }

    /// Waits until the source agent says the VM is (un)locked.
    fn wait_locked(&self, locked: bool, deadline: Instant) -> Result<(), Failure> {
        loop {
            let st = self.src_agent.ctl(&["--json", "status"])?;
            let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            if v["data"]["vms"]["guest"]["locked"] == locked {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(host_fail(format!(
                    "the source agent never saw locked={locked}"
                )));
            }
            std::thread::yield_now();
        }
    }

    /// After a completed migration: the guest goes on at the destination,
    /// whose agent gets its state; then the guest script finishes there.
    pub(crate) fn arrive(&mut self, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
        let last = last_tick_in(&self.src.seen);
        match self
            .dst
            .wait_line(deadline, |l| tick_of(l).is_some_and(|t| t > last))
        {
            Wait::Line(_) => {}
            _ => {
                return Err(Failure::new(
                    FailKind::Migration,
                    "the guest did not go on on the destination",
                ))
            }
        }
        while !self
            .dst_agent
            .audit()
            .iter()
            .any(|r| r["event"] == "guest-state")
        {
            if Instant::now() >= deadline {
                return Err(host_fail(
                    "the destination agent never got the guest's state".into(),
                ));
            }
            std::thread::yield_now();
        }
        self.dst
            .send_line("finish")
            .context("typing on the destination console")?;
        finish_guest(sc, &mut self.dst, deadline)
    }

    fn src_events(&self) -> Vec<Value> {
        self.src_agent.audit()
    }
}

fn has(events: &[Value], event: &str, pred: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(|r| r["event"] == event && pred(r))
}

pub(crate) fn require(ok: bool, what: &str) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(host_fail(what.to_string()))
    }
}

/// Runs an agent scenario.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant, story: Story) -> Result<(), Failure> {
    let mut h = Hosts::start(sc, env, story.agent_receives())?;
    let r = match story {
        Story::Demo => demo(&mut h, sc, deadline),
        Story::Notice => notice(&mut h, sc, deadline),
        Story::Force => force(&mut h, sc, deadline),
        Story::Restart => restart(&mut h, sc, env, deadline),
        Story::Relock => relock(&mut h, sc, env, deadline),
        Story::Hostile => hostile(&mut h, sc, env, deadline),
        Story::Hints => hints(&mut h, sc, deadline),
        Story::Postcopy => postcopy(&mut h, sc, deadline, false),
        Story::PostcopyRunahead => postcopy(&mut h, sc, deadline, true),
        Story::PostcopyRecover => postcopy_recover(&mut h, sc, deadline),
        Story::PlanWriteHeavy => crate::advice::plan_write_heavy(&mut h, sc, env, deadline),
        Story::PlanReadMostly => crate::advice::plan_read_mostly(&mut h, sc, deadline),
        Story::Notices => notices(&mut h, sc, deadline),
        Story::StuckGuest => crate::stuckguest::run(&mut h, sc, env, deadline),
    };
    if env.echo != crate::vm::Echo::Off {
        // The story shows the decisions; -v and the files have everything.
        const DECISIONS: &[&str] = &[
            "lock",
            "unlock",
            "migrate-refused",
            "migrate-start",
            "migrate-done",
            "guest-migrated",
            "forced-release",
        ];
        for (side, agent) in [("source", &h.src_agent), ("destination", &h.dst_agent)] {
            let all = agent.audit();
            let shown: Vec<_> = all
                .iter()
                .filter(|r| {
                    env.echo == crate::vm::Echo::All
                        || r["event"].as_str().is_some_and(|e| DECISIONS.contains(&e))
                })
                .collect();
            eprintln!(
                "  {side} agent's audit log ({} of {} records{}):",
                shown.len(),
                all.len(),
                if shown.len() < all.len() {
                    format!(
                        ", the decisions; all in {}",
                        agent.dir.join("audit.jsonl").display()
                    )
                } else {
                    String::new()
                }
            );
            for rec in shown {
                eprintln!("    {rec}");
            }
        }
    }
    h.quit()?;
    r
}

impl Hosts {
    /// Stops both QEMUs (the agents stop when dropped).
    pub(crate) fn quit(self) -> Result<(), Failure> {
        let Hosts { src, dst, .. } = self;
        src.quit()?;
        dst.quit()?;
        Ok(())
    }

    /// Replaces the destination QEMU (after a failed incoming migration it
    /// has exited; after a refused one it still waits) with a fresh one
    /// waiting for a migration. The old one goes first: QEMU unlinks its
    /// sockets' paths as it exits, which are the new one's too.
    pub(crate) fn restart_dst(&mut self, sc: &Scenario, env: &Env<'_>) -> Result<(), Failure> {
        let _ = self.dst.stop();
        self.dst = Vm::start(&env.spec_with("dst", sc.guest, true, Doorbell::Agent))?;
        Ok(())
    }

    /// What `miglockctl incoming` printed, once it exited.
    pub(crate) fn incoming_output(&mut self) -> Vec<String> {
        self.incoming
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// The migration (`migrate` with `first`) is refused naming the hold
/// `label`; the guest unlocks ("unlock" on its console); then it migrates
/// and arrives.
fn refused_until_unlocked(
    h: &mut Hosts,
    sc: &Scenario,
    deadline: Instant,
    label: &str,
    first: &[&str],
) -> Result<(), Failure> {
    let refused = h.migrate(first)?;
    let why = String::from_utf8_lossy(&refused.stderr);
    require(
        !refused.status.success() && why.contains(label),
        &format!("the locked VM's migration was not refused naming \"{label}\""),
    )?;
    h.src
        .send_line("unlock")
        .context("typing on the guest console")?;
    wait_for(&mut h.src, deadline, "@@MIGLOCK unlocked@@")?;
    h.wait_locked(false, deadline)?;
    require(
        h.migrate(&[])?.status.success(),
        "the migration after the unlock failed",
    )?;
    h.arrive(sc, deadline)
}

fn demo(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    refused_until_unlocked(h, sc, deadline, "payment batch", &[])?;
    let ev = h.src_events();
    for want in [
        "lock",
        "migrate-refused",
        "unlock",
        "migrate-start",
        "migrate-done",
    ] {
        require(
            has(&ev, want, |_| true),
            &format!("source audit log lacks '{want}'"),
        )?;
    }
    Ok(())
}

fn notice(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    // No value: the VM policy's grace period (30 s by default).
    let out = h.migrate(&["--wait-unlock"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    require(
        said.contains("waiting up to 30000 ms"),
        "--wait-unlock without a value did not use the policy's grace period",
    )?;
    require(
        out.status.success(),
        "migrate --wait-unlock did not succeed",
    )?;
    h.arrive(sc, deadline)?;
    // The application says so before or after the switchover: look at both.
    let _ = h.src.wait_line(Instant::now(), |_| false);
    let woke = h
        .src
        .seen
        .iter()
        .chain(&h.dst.seen)
        .any(|l| l.contains("holder: notice received"));
    require(woke, "the application's poll() was not woken by the notice")?;
    let ev = h.src_events();
    require(
        has(&ev, "migrate-waiting", |_| true) && has(&ev, "migrate-done", |_| true),
        "audit: no migrate-waiting then migrate-done",
    )
}

fn force(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    let no_reason = h.migrate(&["--force"])?;
    require(
        !no_reason.status.success(),
        "--force without --reason was accepted",
    )?;
    let out = h.migrate(&["--force", "--reason", "host maintenance"])?;
    require(out.status.success(), "the forced migration failed")?;
    h.arrive(sc, deadline)?;
    let ev = h.src_events();
    require(
        has(&ev, "migrate-forced", |r| {
            r["reason"] == "host maintenance" && r["overrode"].to_string().contains("gpu pinned")
        }),
        "audit: the forced migration is not recorded with its reason and the lock it overrode",
    )
}

fn restart(h: &mut Hosts, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    h.wait_locked(true, deadline)?;
    // Kill the source agent mid-lock and start a new one on the same state.
    // The old one first: a second agent on its state directory refuses to
    // start (the directory's lock).
    h.src_agent.kill();
    let bins = h.bins.clone();
    h.src_agent = Agent::start(&bins, &env.dir, "src")?;
    h.wait_locked(true, deadline)?;
    refused_until_unlocked(h, sc, deadline, "restart test", &[])?;
    require(
        h.src_events()
            .iter()
            .filter(|r| r["event"] == "agent-start")
            .count()
            == 2,
        "the agent did not restart",
    )
}

fn relock(h: &mut Hosts, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK ready@@")?;
    if h.fenced {
        // Only a pre-copy has a copy to cancel. The fence guards the
        // destination's memory, which a cancelled migration never uses:
        // the source's agent is restarted with it lifted.
        let bins = h.bins.clone();
        h.src_agent.kill();
        h.src_agent =
            Agent::start_with(&bins, &env.dir, "src", "[planner]\nallow_fenced = true\n")?;
        // Until the new agent (the second to start) has reached QEMU.
        let reached = |ev: &[Value]| {
            ev.iter().filter(|r| r["event"] == "agent-start").count() >= 2
                && ev
                    .iter()
                    .rev()
                    .take_while(|r| r["event"] != "agent-start")
                    .any(|r| r["event"] == "qmp-link" && r["state"] == "connected")
        };
        while !reached(&h.src_events()) {
            if Instant::now() >= deadline {
                return Err(host_fail("the restarted agent never reached QEMU".into()));
            }
            std::thread::yield_now();
        }
    }
    // Slow the copy so the guest can lock while it runs.
    h.src
        .qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": 4u64 << 20})),
        )
        .context("migrate-set-parameters")?;
    let mut ctl = h.migrate_in_background(&[])?;
    h.until_active(&mut ctl, deadline)?;
    h.src
        .send_line("lock")
        .context("typing on the guest console")?;
    wait_for(&mut h.src, deadline, "@@MIGLOCK locked@@")?;
    let out = ctl.wait_with_output().context("miglockctl")?;
    show(
        &format!("migrate guest --to {} (while the guest locks)", h.uri),
        &out,
    );
    let why = String::from_utf8_lossy(&out.stderr);
    require(
        !out.status.success() && why.contains("cancelled"),
        "a lock during the copy did not cancel the migration",
    )?;
    let st = h
        .src
        .qmp
        .execute("query-status", None)
        .context("query-status")?;
    require(
        st["status"] == "running",
        "the source VM is not running after the cancel",
    )?;
    require(
        has(&h.src_events(), "migrate-cancelled", |r| {
            r["locks"].to_string().contains("late lock")
        }),
        "audit: no migrate-cancelled with the lock",
    )?;
    h.src
        .send_line("done")
        .context("typing on the guest console")?;
    finish_guest(sc, &mut h.src, deadline)
}

/// A migration the guest's lock refuses after 3 s, then (the guest
/// unlocked) one that completes: the guest's applications check what they
/// heard; the agents must have announced both, called off the first, and
/// told the guest it arrived.
fn notices(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    wait_for(&mut h.src, deadline, "@@MIGLOCK ready@@")?;
    refused_until_unlocked(h, sc, deadline, "notice app", &["--wait-unlock", "3s"])?;
    let ev = h.src_events();
    let count = |e: &str| ev.iter().filter(|r| r["event"] == e).count();
    require(
        count("migrate-announced") == 2 && count("migrate-called-off") == 1,
        "source audit: not two migrations announced and one called off",
    )?;
    require(
        has(&ev, "migrate-announced", |r| {
            r["deadline_ms"] == 3000 && r["guest_told"] == true
        }),
        "source audit: the refused migration was not announced with its 3 s",
    )?;
    require(
        has(&h.dst_agent.audit(), "guest-migrated", |r| {
            r["guest_told"] == true
        }),
        "destination audit: the guest was not told it arrived",
    )
}

/// The destination agent receives a post-copy migration and tells the
/// guest once it runs there; the guest's poller wakes for it.
/// Post-copy through both agents; with `runahead`, `postcopy-preempt` on
/// both ends (where QEMU has it) and the destination reading the source's hinted pages ahead
/// (which must not cost the guest a byte of its memory: `arrive` has the
/// workload verify all of it).
fn postcopy(
    h: &mut Hosts,
    sc: &Scenario,
    deadline: Instant,
    runahead: bool,
) -> Result<(), Failure> {
    if runahead {
        // Hints with the hot set in them: three samples' worth.
        crate::advice::wait_hints(h, deadline)?;
    }
    if let Wait::Timeout | Wait::Closed = h.src.wait_line(deadline, |l| tick_of(l).is_some()) {
        return Err(Failure::new(FailKind::Guest, "the workload never ticked"));
    }
    let mut rx = vec!["--postcopy"];
    let mut tx = vec!["--mode", "postcopy"];
    let file;
    if runahead {
        file = h.src_agent.export_hints()?;
        rx.extend(["--prefetch", file.to_str().unwrap_or_default()]);
        // The agent refuses preempt before QEMU 8.0.
        if h.qemu >= (8, 0, 0) {
            rx.push("--postcopy-preempt");
            tx.push("--postcopy-preempt");
        }
    }
    let mut child = h.receive(&rx)?;
    let out = h.migrate(&tx)?;
    require(out.status.success(), "the post-copy migration failed")?;
    let status = child.wait().context("miglockctl incoming")?;
    let said = h
        .incoming
        .take()
        .and_then(|t| t.join().ok())
        .unwrap_or_default();
    for l in &said {
        eprintln!("    incoming: {l}");
    }
    require(status.success(), "miglockctl incoming failed")?;
    require(
        said.iter().any(|l| l.contains("\"postcopy_notice\":true")),
        "the destination agent did not tell the guest that post-copy started",
    )?;
    if runahead {
        let done: Value = said
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "ok")
            .unwrap_or_default();
        let ran = &done["data"]["runahead"];
        eprintln!("    run-ahead: {ran}");
        require(
            ran["read"].as_u64().is_some_and(|n| n > 0) && ran["failed"] == 0,
            "the destination read no hinted page ahead, or a read failed",
        )?;
    }
    wait_for(&mut h.dst, deadline, "@@MIGLOCK postcopy-notice gen=1@@")?;
    h.arrive(sc, deadline)?;
    require(
        has(&h.dst_agent.audit(), "incoming-postcopy", |r| {
            r["guest_told"] == true
        }),
        "destination audit lacks incoming-postcopy",
    )
}

/// Post-copy on a slow link, paused once the guest runs on the destination
/// (QMP `migrate-pause`: what a broken link does): `migrate` and `incoming`
/// must fail at once naming the recovery, not wait with QEMU. Recovered as
/// they say (`migrate-recover` here, `migrate` with `resume` there), the
/// guest must arrive whole.
fn postcopy_recover(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    if let Wait::Timeout | Wait::Closed = h.src.wait_line(deadline, |l| tick_of(l).is_some()) {
        return Err(Failure::new(FailKind::Guest, "the workload never ticked"));
    }
    let mut rx = h.receive(&["--postcopy"])?;
    let tx = h.migrate_in_background(&[
        "--mode",
        "postcopy",
        "--bandwidth",
        "4M",
        "--postcopy-bandwidth",
        "4M",
    ])?;
    wait_for(&mut h.dst, deadline, "@@MIGLOCK postcopy-notice gen=1@@")?;
    let paused_at = Instant::now();
    h.src
        .qmp
        .execute("migrate-pause", None)
        .context("migrate-pause")?;
    let out = tx.wait_with_output().context("miglockctl migrate")?;
    show("migrate guest (paused mid-way)", &out);
    let waited = paused_at.elapsed();
    require(
        out.status.code() == Some(3)
            && String::from_utf8_lossy(&out.stderr).contains("migrate-recover"),
        "migrate did not fail naming the recovery when post-copy paused",
    )?;
    let status = rx.wait().context("miglockctl incoming")?;
    let said = h.incoming_output();
    for l in &said {
        eprintln!("    incoming: {l}");
    }
    require(
        status.code() == Some(3) && said.iter().any(|l| l.contains("migrate-recover")),
        "incoming did not fail naming the recovery when post-copy paused",
    )?;
    eprintln!(
        "  both agents gave up {} ms after the pause",
        waited.as_millis()
    );
    // Recover as they say, without the slow link.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free port")?
        .port();
    let uri = format!("tcp:127.0.0.1:{port}");
    h.dst
        .qmp
        .execute("migrate-recover", Some(json!({ "uri": uri })))
        .context("migrate-recover")?;
    h.src
        .qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-postcopy-bandwidth": 0})),
        )
        .context("migrate-set-parameters")?;
    h.src
        .qmp
        .execute("migrate", Some(json!({ "uri": uri, "resume": true })))
        .context("migrate resume")?;
    loop {
        let q = h
            .src
            .qmp
            .execute("query-migrate", None)
            .context("query-migrate")?;
        match q["status"].as_str() {
            Some("completed") => break,
            Some(s @ ("failed" | "cancelled")) => {
                return Err(host_fail(format!("the resumed migration {s}: {q}")))
            }
            _ if Instant::now() >= deadline => {
                return Err(host_fail("the resumed migration never completed".into()))
            }
            _ => std::thread::yield_now(),
        }
    }
    h.arrive(sc, deadline)
}

/// FNV-1a over hint ranges in wire layout (as `mldtest hints` prints it).
fn hints_sum(ranges: &[Value]) -> Option<u64> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for r in ranges {
        let mut b = r["start_pfn"].as_u64()?.to_le_bytes().to_vec();
        b.extend(u32::try_from(r["pages"].as_u64()?).ok()?.to_le_bytes());
        b.extend(u32::try_from(r["score"].as_u64()?).ok()?.to_le_bytes());
        for x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    }
    Some(h)
}

/// The guest's last hint batch, as the source agent kept it, must be the
/// one the guest sent: same number, figures, ranges and order.
fn hints(h: &mut Hosts, sc: &Scenario, deadline: Instant) -> Result<(), Failure> {
    let said = match h
        .src
        .wait_line(deadline, |l| l.contains("@@MIGLOCK hints batch="))
    {
        Wait::Line(l) => l,
        _ => return finish_guest(sc, &mut h.src, deadline),
    };
    finish_guest(sc, &mut h.src, deadline)?;
    let field = |k: &str| {
        said.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(|v| v.trim_end_matches('@').to_string())
            .unwrap_or_default()
    };
    let sent = h
        .src
        .seen
        .iter()
        .find(|l| l.starts_with("hint_batches "))
        .cloned()
        .unwrap_or_default();
    let counts = |v: &Value| {
        format!(
            "hint_batches {} hint_frames {}",
            v["data"]["stats"]["batches"], v["data"]["stats"]["frames"]
        )
    };
    // The guest may finish before the agent has read its last frames: wait
    // (bounded) until the agent counted what the module says it sent.
    let until = Instant::now() + std::time::Duration::from_secs(5);
    let v = loop {
        let v = h.src_agent.hints(true)?;
        if counts(&v) == sent.trim() || Instant::now() >= until {
            break v;
        }
        std::thread::yield_now();
    };
    let latest = &v["data"]["latest"];
    let ranges = latest["top"].as_array().cloned().unwrap_or_default();
    let sum = hints_sum(&ranges).map(|s| format!("{s:016x}"));
    eprintln!(
        "  agent kept batch {} with {} ranges (sum {}), stats {}",
        latest["batch"],
        ranges.len(),
        sum.as_deref().unwrap_or("?"),
        v["data"]["stats"]
    );
    require(
        latest["batch"].as_u64().map(|b| b.to_string()) == Some(field("batch=")),
        "the agent's latest batch is not the guest's last",
    )?;
    require(
        ranges.len().to_string() == field("ranges=") && sum.as_deref() == Some(&field("sum=")),
        "the ranges the agent kept differ from what the guest sent",
    )?;
    require(
        latest["workload"]["wss_pages"] == 11000,
        "the batch's working-set figures did not arrive",
    )?;
    // Every batch and frame the module sent arrived, none refused or lost.
    let got = counts(&v);
    require(
        sent.trim() == got,
        &format!("the module sent '{sent}', the agent got '{got}'"),
    )?;
    require(
        v["data"]["stats"]["invalid"] == 0 && v["data"]["stats"]["rate_dropped"] == 0,
        "the agent refused or dropped some of the guest's hint frames",
    )
}

/// Serves the "hostile" VM's doorbell socket (the agent dials it) with
/// garbage, corrupted frames and a flood of valid ones until `stop`.
fn flood(
    path: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<u64>> {
    use miglock_abi::wire::{self, Header, Message};
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let _ = fs::remove_file(path);
    // Blocking accept: the agent redials within its REDIAL pause after
    // cutting us off, so a stop is noticed promptly without spinning.
    let l = std::os::unix::net::UnixListener::bind(path)?;
    Ok(std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut seq = 0u32;
        let mut junk = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            // The agent redials after cutting us off: keep accepting.
            let Ok((mut s, _)) = l.accept() else { break };
            while !stop.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                for (i, b) in junk.iter_mut().enumerate() {
                    *b = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seq) as u8;
                }
                let mut f = [0u8; 64];
                let n =
                    wire::encode(&Message::Ping, Header { seq, reply_to: 0 }, &mut f).unwrap_or(0);
                let mut bad = f;
                bad[n - 1] ^= 0xff; // a frame with a wrong checksum
                let ok = s
                    .write_all(&junk)
                    .and_then(|()| s.write_all(&bad[..n]))
                    .and_then(|()| s.write_all(&f[..n]));
                if ok.is_err() {
                    break;
                }
                sent += (junk.len() + 2 * n) as u64;
            }
        }
        sent
    }))
}

fn hostile(h: &mut Hosts, sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = flood(&env.dir.join("src-hostile.sock"), stop.clone())?;
    let r = demo(h, sc, deadline);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap_or(0);
    r?;
    let st = h.src_agent.ctl(&["--json", "status"])?;
    let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    let link = &v["data"]["vms"]["hostile"]["link"];
    eprintln!(
        "  the hostile VM sent {:.1} MiB; its link: {link}",
        sent as f64 / 1048576.0
    );
    require(
        link["malformed"].as_u64().unwrap_or(0) > 0,
        "the hostile VM's garbage was not counted",
    )?;
    require(
        v["data"]["vms"]["guest"]["link"]["malformed"] == 0,
        "the good VM's link saw garbage",
    )?;
    require(
        has(&h.src_events(), "guest-misbehaving", |r| {
            r["vm"] == "hostile"
        }),
        "the hostile VM was never cut off",
    )
}
