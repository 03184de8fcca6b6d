// SPDX-License-Identifier: GPL-2.0

//! The end-to-end story with the real host agent: two QEMU processes stand
//! for two hosts on 127.0.0.1, each with its own `miglockd`; `miglockctl
//! migrate` is refused while the guest holds its lock, and succeeds once it
//! lets go; the destination's agent then owns the guest's lock state.

use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::vm::{Doorbell, Vm, Wait};
use anyhow::Context;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Instant;

/// One `miglockd` for one "host".
struct Agent {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
}

impl Agent {
    fn start(bin_dir: &Path, dir: &Path, host: &str) -> anyhow::Result<Agent> {
        let adir = dir.join(format!("{host}-agent"));
        fs::create_dir_all(&adir)?;
        let d = adir.display();
        let vm = dir.display();
        fs::write(
            adir.join("miglockd.toml"),
            format!(
                "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\ncontrol = \"{d}/control.sock\"\n\
                 [[vm]]\nname = \"guest\"\ndoorbell = \"{vm}/{host}-doorbell.sock\"\nqmp = \"{vm}/{host}-agent-qmp.sock\"\n\
                 [vm.policy]\nmax_lease_ms = 120000\n"
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

    fn ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new(&self.bin)
            .arg("--socket")
            .arg(self.dir.join("control.sock"))
            .args(args)
            .output()
            .context("running miglockctl")?;
        Ok(out)
    }

    fn audit(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_fail(msg: String) -> Failure {
    Failure::new(FailKind::Host, msg)
}

fn wait_for(vm: &mut Vm, deadline: Instant, marker: &str) -> Result<(), Failure> {
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

fn tick_of(line: &str) -> Option<u64> {
    line.strip_prefix("tick ")?.trim().parse().ok()
}

/// Runs the agent scenario.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
    let bins = bins.parent().context("harness directory")?.to_path_buf();
    let mut dst = Vm::start(&env.spec_with("dst", sc.guest, true, Doorbell::Agent))?;
    let mut src = Vm::start(&env.spec_with("src", sc.guest, false, Doorbell::Agent))?;
    let src_agent = Agent::start(&bins, &env.dir, "src")?;
    let dst_agent = Agent::start(&bins, &env.dir, "dst")?;
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
    let uri = format!("tcp:127.0.0.1:{port}");
    src.qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": 1u64 << 30})),
        )
        .context("migrate-set-parameters")?;

    wait_for(&mut src, deadline, "@@MIGLOCK locked@@")?;
    let refused = src_agent.ctl(&["migrate", "guest", "--to", &uri])?;
    show(&format!("migrate guest --to {uri}"), &refused);
    let why = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !why.contains("payment batch") {
        return Err(host_fail(format!(
            "migration of the locked VM was not refused with its reason: {why}"
        )));
    }

    src.send_line("unlock")
        .context("typing on the guest console")?;
    wait_for(&mut src, deadline, "@@MIGLOCK unlocked@@")?;
    // The guest has unlocked; the agent hears it over the doorbell.
    let t0 = Instant::now();
    let ok = loop {
        let st = src_agent.ctl(&["--json", "status"])?;
        let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        if v["data"]["vms"]["guest"]["locked"] == false {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::yield_now();
    };
    if !ok {
        return Err(host_fail(format!(
            "the agent never saw the unlock ({:?})",
            t0.elapsed()
        )));
    }
    let done = src_agent.ctl(&["migrate", "guest", "--to", &uri])?;
    show(&format!("migrate guest --to {uri}"), &done);
    if !done.status.success() {
        return Err(host_fail(format!(
            "migration failed: {}",
            String::from_utf8_lossy(&done.stderr)
        )));
    }

    let last = src
        .seen
        .iter()
        .filter_map(|l| tick_of(l))
        .max()
        .unwrap_or(0);
    match dst.wait_line(deadline, |l| tick_of(l).is_some_and(|t| t > last)) {
        Wait::Line(_) => {}
        _ => {
            return Err(Failure::new(
                FailKind::Migration,
                "the guest did not go on on the destination",
            ))
        }
    }
    // The destination's agent takes over once the VM runs there.
    let t0 = Instant::now();
    while !dst_agent
        .audit()
        .iter()
        .any(|r| r["event"] == "guest-state")
    {
        if Instant::now() >= deadline {
            return Err(host_fail(format!(
                "the destination agent never got the guest's state ({:?})",
                t0.elapsed()
            )));
        }
        std::thread::yield_now();
    }
    dst.send_line("finish")
        .context("typing on the destination console")?;
    let r = finish_guest(sc, &mut dst, deadline);
    eprintln!("  source agent's audit log:");
    for rec in src_agent.audit() {
        eprintln!("    {rec}");
    }
    eprintln!("  destination agent's audit log:");
    for rec in dst_agent.audit() {
        eprintln!("    {rec}");
    }
    let src_events: Vec<String> = src_agent
        .audit()
        .iter()
        .filter_map(|r| r["event"].as_str().map(String::from))
        .collect();
    for want in [
        "lock",
        "migrate-refused",
        "unlock",
        "migrate-start",
        "migrate-done",
    ] {
        if !src_events.iter().any(|e| e == want) {
            return Err(host_fail(format!("source audit log lacks '{want}'")));
        }
    }
    src.quit()?;
    dst.quit()?;
    r
}
