// SPDX-License-Identifier: GPL-2.0

//! A real libvirt: two `libvirtd` standing for two hosts on one machine,
//! each in its own mount and UTS namespaces with its own configuration,
//! runtime and state directories, hostname and `host_uuid`
//! (Documentation/testing.rst). The test guest is defined in one and moved
//! with `virsh migrate --live`, as an operator moves VMs; a `miglockd` per
//! host attaches to the VM through a second QMP monitor the domain XML
//! adds, and libvirt's `qemu` hook is ours.
//!
//! `libvirt-migrate-locked`: `virsh migrate` of the locked guest fails and
//! says why; a lock taken during a slow libvirt migration cancels it; after
//! the unlock the migration completes and the guest runs on, whole, on the
//! destination.

use crate::agentdemo::{host_fail, require, Agent};
use crate::pair::last_tick_in;
use crate::pair::{self, Proof};
use crate::scenario::{Env, FailKind, Failure};
use crate::vm::{Console, Echo, Wait};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hosts.
const HOSTS: [&str; 2] = ["a", "b"];
/// The domain.
const DOMAIN: &str = "guest";

/// One libvirtd in its namespaces; stopped when dropped.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // unshare execs libvirtd, so this is the daemon itself.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Two libvirt hosts; their domains and daemons are stopped when dropped.
pub struct Libvirt {
    lv: PathBuf,
    _daemons: Vec<Daemon>,
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // libvirtd leaves its QEMUs running when it exits: stop them first.
        for host in HOSTS {
            let _ = self.virsh(host, &["destroy", DOMAIN]);
        }
    }
}

/// Adds `line` to the copy of `/etc/NAME` unless an entry of that name is there.
fn ensure_entry(text: &mut String, line: &str) {
    let name = line.split(':').next().unwrap_or("");
    if !text.lines().any(|l| l.split(':').next() == Some(name)) {
        text.push_str(line);
        text.push('\n');
    }
}

impl Libvirt {
    /// Starts both daemons under `lv`, each with `hook` as its `qemu` hook.
    pub fn start(lv: &Path, hook: &Path) -> Result<Libvirt> {
        if Command::new("libvirtd").arg("--version").output().is_err() {
            bail!("libvirtd not found (package libvirt-daemon-driver-qemu; 'make deps')");
        }
        let _ = fs::remove_dir_all(lv);
        fs::create_dir_all(lv)?;
        // libvirt resolves its default user before it reads qemu.conf.
        let mut passwd = fs::read_to_string("/etc/passwd")?;
        ensure_entry(
            &mut passwd,
            "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin",
        );
        let mut group = fs::read_to_string("/etc/group")?;
        for g in ["libvirt-qemu:x:64055:", "kvm:x:64056:", "libvirt:x:64057:"] {
            ensure_entry(&mut group, g);
        }
        fs::write(lv.join("passwd"), passwd)?;
        fs::write(lv.join("group"), group)?;
        for d in ["/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt"] {
            fs::create_dir_all(d)?; // mount points
        }
        let mut daemons = Vec::new();
        for (i, host) in HOSTS.iter().enumerate() {
            let d = lv.join(host);
            for sub in ["etc/hooks", "lib/qemu", "run", "log/qemu", "cache"] {
                fs::create_dir_all(d.join(sub))?;
            }
            let n = i + 1;
            fs::write(
                d.join("etc/libvirtd.conf"),
                format!(
                    "host_uuid = \"0000000{n}-0000-4000-8000-00000000000{n}\"\n\
                     auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                     unix_sock_group = \"root\"\nunix_sock_rw_perms = \"0770\"\n\
                     log_outputs = \"3:file:{}/libvirtd.log\"\n",
                    d.display()
                ),
            )?;
            fs::write(
                d.join("etc/qemu.conf"),
                format!(
                    "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\n\
                     remember_owner = 0\nsecurity_driver = \"none\"\n\
                     cgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = \"file\"\n\
                     migration_port_min = 49{n}00\nmigration_port_max = 49{n}99\n"
                ),
            )?;
            // The hook must be there before the daemon starts.
            let installed = d.join("etc/hooks/qemu");
            fs::copy(hook, &installed).context("installing the libvirt hook")?;
            fs::set_permissions(&installed, fs::Permissions::from_mode(0o755))?;
            fs::write(d.join("etc/hooks/miglock.toml"), "unknown = \"refuse\"\n")?;
            let script = format!(
                "hostname {host}.test && \
                 mount --bind {lv}/passwd /etc/passwd && mount --bind {lv}/group /etc/group && \
                 mount --bind {d}/etc /etc/libvirt && mount --bind {d}/lib /var/lib/libvirt && \
                 mount --bind {d}/run /run && mount --bind {d}/log /var/log/libvirt && \
                 mount --bind {d}/cache /var/cache/libvirt && \
                 exec libvirtd --config {d}/etc/libvirtd.conf --pid-file {d}/libvirtd.pid",
                lv = lv.display(),
                d = d.display()
            );
            let child = Command::new("unshare")
                .args(["--uts", "--mount", "--propagation", "private", "sh", "-c"])
                .arg(script)
                .stdout(fs::File::create(d.join("daemon.out"))?)
                .stderr(fs::File::create(d.join("daemon.err"))?)
                .spawn()
                .context("starting libvirtd in its namespaces (unshare)")?;
            daemons.push(Daemon { child });
        }
        let l = Libvirt {
            lv: lv.to_path_buf(),
            _daemons: daemons,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for host in HOSTS {
            // The daemon creates its socket a moment after it starts.
            while l.virsh(host, &["version"])?.status.code() != Some(0) {
                if Instant::now() >= deadline {
                    let err =
                        fs::read_to_string(l.dir(host).join("daemon.err")).unwrap_or_default();
                    bail!("libvirtd '{host}' did not come up: {}", err.trim());
                }
                std::thread::sleep(Duration::from_millis(100)); // polling a daemon's start-up
            }
        }
        Ok(l)
    }

    /// Host `host`'s directory (its `/var/lib/libvirt` is `lib/` in it).
    pub fn dir(&self, host: &str) -> PathBuf {
        self.lv.join(host)
    }

    /// Host `host`'s connection URI.
    pub fn uri(&self, host: &str) -> String {
        format!(
            "qemu+unix:///system?socket={}/run/libvirt/libvirt-sock",
            self.dir(host).display()
        )
    }

    /// Runs `virsh` against `host`.
    pub fn virsh(&self, host: &str, args: &[&str]) -> Result<Output> {
        Command::new("virsh")
            .args(["-c", &self.uri(host)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running virsh (package libvirt-clients)")
    }
}

/// The test guest's domain XML: direct kernel boot (ACPI on: without it
/// libvirt 9.0 passes QEMU 10 the `-no-acpi` it no longer has); its
/// console on a socket
/// the harness listens on; the doorbell UART and a QMP monitor for the
/// agent, whose sockets, like the console's, are under
/// `/var/lib/libvirt/qemu`, per host.
fn domain_xml(env: &Env<'_>, qemu: &Path, script: &str) -> String {
    let q = "/var/lib/libvirt/qemu";
    format!(
        r#"<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 mlscenario={script}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{qemu}</emulator>
    <serial type='unix'><source mode='connect' path='{q}/{DOMAIN}-console.sock'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-chardev'/>
    <qemu:arg value='socket,id=miglock-bell,path={q}/{DOMAIN}-doorbell.sock,server=on,wait=off'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='isa-serial,chardev=miglock-bell,iobase=0x520,irq=5'/>
    <qemu:arg value='-chardev'/>
    <qemu:arg value='socket,id=miglock-qmp,path={q}/{DOMAIN}-agent-qmp.sock,server=on,wait=off'/>
    <qemu:arg value='-mon'/>
    <qemu:arg value='chardev=miglock-qmp,mode=control'/>
  </qemu:commandline>
</domain>
"#,
        kernel = env.kernel.display(),
        initrd = env.initrd.display(),
        qemu = qemu.display(),
    )
}

/// The agent of `host`, attached to the libvirt-run guest there.
fn agent(env: &Env<'_>, lv: &Libvirt, host: &str) -> Result<Agent> {
    let bins = std::env::current_exe()?;
    let bins = bins.parent().context("harness directory")?.to_path_buf();
    let q = lv.dir(host).join("lib/qemu");
    let vm = format!(
        "[[vm]]\nname = \"{DOMAIN}\"\ndoorbell = \"{q}/{DOMAIN}-doorbell.sock\"\n\
         qmp = \"{q}/{DOMAIN}-agent-qmp.sock\"\n[vm.libvirt]\nuri = \"{uri}\"\n",
        q = q.display(),
        uri = lv.uri(host)
    );
    Agent::start_toml(&bins, &env.dir, host, &vm)
}

/// Listens where `host`'s QEMU connects the guest's console: every QEMU
/// libvirt starts there (a migration that fails leaves one behind) gives a
/// console, in order.
fn console_at(lv: &Libvirt, host: &str, dir: &Path) -> Result<mpsc::Receiver<Result<Console>>> {
    let path = lv.dir(host).join(format!("lib/qemu/{DOMAIN}-console.sock"));
    let _ = fs::remove_file(&path);
    let l = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let (tx, rx) = mpsc::channel();
    let (dir, host) = (dir.to_path_buf(), host.to_string());
    std::thread::spawn(move || {
        for n in 0.. {
            let log = dir.join(format!("{host}-serial-{n}.log"));
            let c = l
                .accept()
                .map_err(anyhow::Error::from)
                .and_then(|(s, _)| Console::new(s, log, Echo::Off, host.clone(), false));
            if tx.send(c).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The console of the QEMU that connected last.
fn latest(rx: &mpsc::Receiver<Result<Console>>) -> Result<Console, Failure> {
    let mut last = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| host_fail("QEMU never connected the guest's console".into()))?;
    while let Ok(c) = rx.try_recv() {
        last = c;
    }
    Ok(last?)
}

fn wait(c: &mut Console, deadline: Instant, marker: &str) -> Result<(), Failure> {
    match c.wait_line(deadline, |l| l.contains(marker)) {
        Wait::Line(_) => Ok(()),
        _ => Err(Failure::new(
            FailKind::Timeout,
            format!(
                "no '{marker}' from the guest; log: {}",
                c.serial_log.display()
            ),
        )),
    }
}

/// Waits until `agent` holds no blocker for the VM (the unlock's linger is
/// over) and says so in the domain's metadata: libvirt would otherwise meet
/// the one, or its hook read the other.
fn unblocked(agent: &Agent, deadline: Instant) -> Result<(), Failure> {
    loop {
        let out = agent.ctl(&["--json", "status"])?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let published = agent
            .audit()
            .iter()
            .rev()
            .find(|r| r["event"] == "libvirt-metadata")
            .is_some_and(|r| r["locked"] == false);
        if v["data"]["vms"][DOMAIN]["blocker"].is_null()
            && v["data"]["vms"][DOMAIN]["locked"] == false
            && published
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(host_fail(
                "the agent kept the VM blocked after the unlock".into(),
            ));
        }
        std::thread::yield_now();
    }
}

/// `virsh migrate --live` from a to b, as an operator types it.
fn migrate_args(lv: &Libvirt, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["migrate", "--live", DOMAIN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(lv.uri("b"));
    a.extend(
        [
            "--migrateuri",
            "tcp://127.0.0.1",
            "--listen-address",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Attempts at migrating the locked guest.
const LOCKED_ATTEMPTS: usize = 3;

/// `libvirt-migrate-locked`.
pub fn migrate_locked(env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
    let hook = bins
        .parent()
        .context("harness directory")?
        .join("miglock-libvirt-hook");
    let lv = Libvirt::start(&env.dir.join("lv"), &hook)?;
    let qemu = which(env.qemu)?;
    let xml = env.dir.join("domain.xml");
    fs::write(&xml, domain_xml(env, &qemu, "libvirt-locked")).context("domain.xml")?;
    let rx_a = console_at(&lv, "a", &env.dir)?;
    let rx_b = console_at(&lv, "b", &env.dir)?;
    let agent_a = agent(env, &lv, "a")?;
    let agent_b = agent(env, &lv, "b")?;
    let out = lv.virsh("a", &["define", &xml.display().to_string()])?;
    require(
        out.status.success(),
        &format!("virsh define: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    let out = lv.virsh("a", &["start", DOMAIN])?;
    require(
        out.status.success(),
        &format!("virsh start: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    let mut a = latest(&rx_a)?;
    wait(&mut a, deadline, "@@MIGLOCK locked@@")?;
    eprintln!("  the guest holds its lock; virsh migrate --live, {LOCKED_ATTEMPTS} times:");

    // 1. Locked: every attempt fails, and says why.
    let (mut passed, mut virsh_error) = (0, String::new());
    for _ in 0..LOCKED_ATTEMPTS {
        let out = lv.virsh(
            "a",
            &migrate_args(&lv, &[])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )?;
        if out.status.success() {
            passed += 1;
        } else {
            virsh_error = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
    }
    eprintln!("    {virsh_error}");
    let names_lock = virsh_error.contains("miglock");

    // 2. A lock during a slow migration cancels it.
    a.send_line("unlock").context("console")?;
    wait(&mut a, deadline, "@@MIGLOCK unlocked@@")?;
    unblocked(&agent_a, deadline)?;
    let mut slow = Command::new("virsh")
        .args(["-c", &lv.uri("a")])
        .args(migrate_args(&lv, &["--bandwidth", "2"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("virsh migrate")?;
    // QEMU copies (the agent saw it start) before the guest locks.
    while !agent_a
        .audit()
        .iter()
        .any(|r| r["event"] == "migrate-observed" && r["status"] == "active")
    {
        if Instant::now() >= deadline || slow.try_wait().is_ok_and(|s| s.is_some()) {
            let out = slow.wait_with_output().context("virsh migrate")?;
            return Err(host_fail(format!(
                "the slow migration never became active: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(50)); // polling the agent's audit log
    }
    a.send_line("lock").context("console")?;
    wait(&mut a, deadline, "@@MIGLOCK locked@@")?;
    let slow = slow.wait_with_output().context("virsh migrate")?;
    let state_a = String::from_utf8_lossy(&lv.virsh("a", &["domstate", DOMAIN])?.stdout)
        .trim()
        .to_string();
    let midway_cancelled = !slow.status.success() && state_a == "running";
    eprintln!(
        "  a lock during a 2 MiB/s virsh migrate: {} (guest on a: {state_a})",
        String::from_utf8_lossy(&slow.stderr).trim()
    );

    // 3. Unlocked: it migrates, and the guest goes on on b.
    a.send_line("unlock").context("console")?;
    wait(&mut a, deadline, "@@MIGLOCK unlocked@@")?;
    unblocked(&agent_a, deadline)?;
    let before = last_tick_in(&a.seen);
    let out = lv.virsh(
        "a",
        &migrate_args(&lv, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    let completed = out.status.success();
    eprintln!(
        "  unlocked: virsh migrate {}",
        if completed {
            "completed".to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        }
    );
    let mut proof = Proof::Died("the guest did not move".into());
    let mut state_b = String::new();
    if completed {
        let mut b = latest(&rx_b)?;
        proof = pair::prove_alive(&mut b, 50, before, 0);
        state_b =
            String::from_utf8_lossy(&lv.virsh("b", &["domstate", DOMAIN, "--reason"])?.stdout)
                .trim()
                .to_string();
        let _ = b.send_line("finish");
    }
    let audit_a = agent_a.audit();
    let cancelled_by_lock = audit_a.iter().any(|r| {
        r["event"] == "migrate-cancelled" && r["why"].as_str().is_some_and(|w| w.contains("locked"))
    });
    let hook_refused = fs::read_to_string(lv.dir("b").join("libvirtd.log"))
        .unwrap_or_default()
        .contains("miglock: refusing");
    let v = json!({
        "locked_attempts": LOCKED_ATTEMPTS,
        "locked_passed": passed,
        "virsh_error": virsh_error,
        "midway_lock_cancelled": midway_cancelled && cancelled_by_lock,
        "unlocked_completed": completed && proof == Proof::Alive,
        "destination_state": state_b,
        "hook_refused_on_destination": hook_refused,
        "libvirt": String::from_utf8_lossy(&lv.virsh("a", &["version", "--daemon"])?.stdout).lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).collect::<Vec<_>>(),
        "agent_b_saw_the_guest": agent_b.audit().iter().any(|r| r["event"] == "guest-state"),
    });
    env.write_result(&v)?;
    require(
        passed == 0,
        &format!("{passed} of {LOCKED_ATTEMPTS} virsh migrate of the locked guest passed"),
    )?;
    require(
        names_lock,
        &format!("virsh's error does not name the lock: {virsh_error}"),
    )?;
    require(
        midway_cancelled,
        "a lock during a slow libvirt migration did not cancel it",
    )?;
    require(
        cancelled_by_lock,
        "the agent did not audit the cancellation for the lock",
    )?;
    require(completed, "the migration after the unlock failed")?;
    if let Proof::Died(why) | Proof::Corrupted(_, why) = proof {
        return Err(Failure::new(FailKind::Migration, why));
    }
    require(
        state_b.starts_with("running"),
        &format!("the guest on b is '{state_b}'"),
    )?;
    Ok(())
}

/// `qemu` as an absolute path (libvirt wants one in `<emulator>`).
fn which(qemu: &Path) -> Result<PathBuf> {
    if qemu.is_absolute() {
        return Ok(qemu.to_path_buf());
    }
    let out = Command::new("sh")
        .args(["-c", "command -v \"$0\""])
        .arg(qemu)
        .output()?;
    let p = String::from_utf8(out.stdout)?.trim().to_string();
    if p.is_empty() {
        bail!("{} not found", qemu.display());
    }
    Ok(PathBuf::from(p))
}
