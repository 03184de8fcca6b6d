// SPDX-License-Identifier: GPL-2.0

//! One QEMU process running the test guest.
//!
//! The harness listens on two Unix sockets and QEMU connects to both as a
//! client at start-up: the guest's first serial port (console and scenario
//! output, streamed to `serial.log`) and QMP. Because the harness listens
//! first, no guest output is ever lost and nothing has to poll for sockets.

use anyhow::{bail, Context, Result};
use miglock_qmp::Qmp;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation; works everywhere.
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

impl Accel {
    fn arg(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// How to start a guest.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Short name used in logs (`src`, `dst`, `vm`).
    pub name: String,
    /// Directory for its sockets and logs.
    pub dir: PathBuf,
    /// bzImage.
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    /// The QEMU binary (`qemu-system-x86_64`, or another build's wrapper).
    pub qemu: PathBuf,
    /// Guest RAM.
    pub mem_mib: u32,
    /// vCPUs (TCG runs them in parallel host threads).
    pub cpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// Start as a migration destination (`-incoming defer`).
    pub incoming: bool,
    /// Give the guest the doorbell UART (I/O 0x520, IRQ 5), and who serves it.
    pub doorbell: Doorbell,
    /// A second legacy UART (ttyS1, 0x2f8, IRQ 3) for qemu-ga, served by the
    /// harness (see [`Vm::qga`]).
    pub qga: bool,
    /// Which serial lines to echo to stderr as they arrive.
    pub echo: Echo,
}

/// Who serves a guest's doorbell UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// No doorbell UART.
    None,
    /// The harness (QEMU dials the harness's socket; see [`Vm::doorbell`]).
    Harness,
    /// A host agent: QEMU listens on `<name>-doorbell.sock` and a second QMP
    /// monitor on `<name>-agent-qmp.sock`, and the agent dials both.
    Agent,
}

/// Which guest console lines to show while a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// None (they are in the log).
    Off,
    /// The demo's story: the scenario's own steps and results, from
    /// `/init`'s start line on, without KTAP, kernel messages, markers and
    /// ticks (all of which stay in the log; `-v` shows them).
    Story,
    /// Everything, boot messages included.
    All,
}

/// The line `/init` prints before it runs the scenario.
const START: &str = "@@MIGLOCK start";

/// What waiting for a serial line produced.
#[derive(Debug)]
pub enum Wait {
    /// A matching line.
    Line(String),
    /// The deadline passed.
    Timeout,
    /// The serial stream ended: QEMU exited or the guest rebooted.
    Closed,
}

/// A guest's serial console: what it printed, line by line, and a way to
/// type on it.
pub struct Console {
    serial: UnixStream,
    lines: Receiver<(Instant, String)>,
    /// Where the serial log is written.
    pub serial_log: PathBuf,
    /// Lines seen so far (whole serial log).
    pub seen: Vec<String>,
    /// When each line of `seen` came out of the serial port (the
    /// workload's rate is timed by them).
    pub seen_at: Vec<Instant>,
}

impl Console {
    /// Streams `serial` to `log` (named `name` when echoed; with
    /// `started`, echoed before `/init`'s start line too).
    pub fn new(
        serial: UnixStream,
        log: PathBuf,
        echo: Echo,
        name: String,
        started: bool,
    ) -> Result<Console> {
        let lines = spawn_reader(serial.try_clone()?, &log, echo, name, started)?;
        Ok(Console {
            serial,
            lines,
            serial_log: log,
            seen: Vec::new(),
            seen_at: Vec::new(),
        })
    }

    /// Types `line` on the guest's serial console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.serial.write_all(line.as_bytes())?;
        self.serial.write_all(b"\n")?;
        Ok(())
    }

    /// Waits until `deadline` for a serial line satisfying `pred`.
    pub fn wait_line(&mut self, deadline: Instant, mut pred: impl FnMut(&str) -> bool) -> Wait {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    self.seen_at.push(at);
                    if hit {
                        return Wait::Line(self.seen.last().cloned().unwrap_or_default());
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Wait::Timeout,
                Err(RecvTimeoutError::Disconnected) => return Wait::Closed,
            }
        }
    }
}

/// A running QEMU; killed when dropped. Its console's methods and fields
/// are its own (`vm.wait_line`, `vm.seen`).
pub struct Vm {
    /// The QMP session.
    pub qmp: Qmp,
    child: Child,
    console: Console,
    /// The host end of the doorbell UART, if the guest has one.
    pub doorbell: Option<UnixStream>,
    /// The host end of qemu-ga's UART, if the guest has one.
    pub qga: Option<UnixStream>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn accept_by(
    listener: &UnixListener,
    deadline: Instant,
    child: &mut Child,
    what: &str,
) -> Result<UnixStream> {
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("QEMU exited ({status}) before connecting its {what} socket");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("QEMU did not connect its {what} socket within {CONNECT_TIMEOUT:?}");
        }
        // Wake at least every 200 ms to notice a QEMU that died at start-up.
        let ts = Timespec::try_from(left.min(Duration::from_millis(200)))?;
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        if poll(&mut fds, Some(&ts))? > 0 {
            let (s, _) = listener.accept()?;
            return Ok(s);
        }
    }
}

impl Vm {
    /// Starts QEMU and connects serial and QMP.
    pub fn start(spec: &VmSpec) -> Result<Vm> {
        fs::create_dir_all(&spec.dir)?;
        let serial_sock = spec.dir.join(format!("{}-serial.sock", spec.name));
        let qmp_sock = spec.dir.join(format!("{}-qmp.sock", spec.name));
        for s in [&serial_sock, &qmp_sock] {
            let _ = fs::remove_file(s);
        }
        let serial_listener = UnixListener::bind(&serial_sock)
            .with_context(|| format!("binding {}", serial_sock.display()))?;
        let qmp_listener = UnixListener::bind(&qmp_sock)?;
        let bell_sock = spec.dir.join(format!("{}-doorbell.sock", spec.name));
        let _ = fs::remove_file(&bell_sock);
        let qga_sock = spec.dir.join(format!("{}-qga.sock", spec.name));
        let _ = fs::remove_file(&qga_sock);
        let qga_listener = if spec.qga {
            Some(UnixListener::bind(&qga_sock)?)
        } else {
            None
        };
        let bell_listener = if spec.doorbell == Doorbell::Harness {
            Some(UnixListener::bind(&bell_sock)?)
        } else {
            None
        };
        let qemu_log = spec.dir.join(format!("{}-qemu.log", spec.name));

        let mut cmd = Command::new(&spec.qemu);
        cmd.args([
            "-M",
            "pc",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        // Named threads ("CPU 0/TCG", "mig/snapshot"): a checkpoint's
        // copy-on-write faults are counted by its thread's name
        // (uffdfaults.rs).
        .args(["-name", &format!("{},debug-threads=on", spec.name)])
        .args(["-accel", spec.accel.arg()])
        .args([
            "-cpu",
            if spec.accel == Accel::Kvm {
                "host"
            } else {
                "max"
            },
        ])
        .args(["-m", &spec.mem_mib.to_string()])
        .args(["-smp", &spec.cpus.to_string()])
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initrd)
        .args(["-append", &spec.append])
        .arg("-chardev")
        .arg(format!("socket,id=ser0,path={}", serial_sock.display()))
        .args(["-serial", "chardev:ser0"])
        .arg("-chardev")
        .arg(format!("socket,id=qmp0,path={}", qmp_sock.display()))
        .args(["-mon", "chardev=qmp0,mode=control"]);
        if spec.incoming {
            cmd.args(["-incoming", "defer"]);
        }
        match spec.doorbell {
            Doorbell::None => {}
            Doorbell::Harness => {
                cmd.arg("-chardev")
                    .arg(format!("socket,id=mld0,path={}", bell_sock.display()));
            }
            Doorbell::Agent => {
                let agent_qmp = spec.dir.join(format!("{}-agent-qmp.sock", spec.name));
                cmd.arg("-chardev")
                    .arg(format!(
                        "socket,id=mld0,path={},server=on,wait=off",
                        bell_sock.display()
                    ))
                    .arg("-chardev")
                    .arg(format!(
                        "socket,id=aqmp0,path={},server=on,wait=off",
                        agent_qmp.display()
                    ))
                    .args(["-mon", "chardev=aqmp0,mode=control"]);
            }
        }
        if spec.doorbell != Doorbell::None {
            cmd.args(["-device", "isa-serial,chardev=mld0,iobase=0x520,irq=5"]);
        }
        if spec.qga {
            cmd.arg("-chardev")
                .arg(format!("socket,id=qga0,path={}", qga_sock.display()))
                .args(["-device", "isa-serial,chardev=qga0,iobase=0x2f8,irq=3"]);
        }
        fs::write(
            spec.dir.join(format!("{}-cmdline.txt", spec.name)),
            format!("{cmd:?}\n"),
        )?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&qemu_log)?)
            .stderr(File::create(qemu_log.with_extension("err"))?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (package qemu-system-x86; 'make deps')",
                    spec.qemu.display()
                )
            })?;

        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let setup = (|| {
            let serial = accept_by(&serial_listener, deadline, &mut child, "serial")?;
            let qmp_stream = accept_by(&qmp_listener, deadline, &mut child, "QMP")?;
            let doorbell = match &bell_listener {
                Some(l) => Some(accept_by(l, deadline, &mut child, "doorbell")?),
                None => None,
            };
            let qga = match &qga_listener {
                Some(l) => Some(accept_by(l, deadline, &mut child, "qemu-ga serial")?),
                None => None,
            };
            let mut qmp = Qmp::handshake(qmp_stream).context("QMP handshake")?;
            qmp.set_transcript(Box::new(File::create(
                spec.dir.join(format!("{}-qmp.log", spec.name)),
            )?));
            Ok::<_, anyhow::Error>((serial, qmp, doorbell, qga))
        })();
        let (serial, qmp, doorbell, qga) = match setup {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = fs::read_to_string(qemu_log.with_extension("err")).unwrap_or_default();
                return Err(e.context(format!("QEMU stderr: {}", err.trim())));
            }
        };

        let console = Console::new(
            serial,
            spec.dir.join(format!("{}-serial.log", spec.name)),
            spec.echo,
            spec.name.clone(),
            // A migration destination prints nothing before it runs.
            spec.incoming,
        )?;
        Ok(Vm {
            qmp,
            child,
            console,
            doorbell,
            qga,
        })
    }

    /// Asks QEMU to quit and waits for it (killing it after 10 s).
    pub fn quit(mut self) -> Result<()> {
        self.stop()
    }

    /// `quit`, leaving the `Vm` to be replaced.
    pub fn stop(&mut self) -> Result<()> {
        let _ = self.qmp.execute("quit", None);
        let deadline = Instant::now() + Duration::from_secs(10);
        // QEMU closes the serial socket as it exits: wait for that, not a timer.
        while let Wait::Line(_) = self.wait_line(deadline, |_| false) {}
        if self.child.try_wait()?.is_none() {
            let _ = self.child.kill();
        }
        self.child.wait()?;
        Ok(())
    }
}

impl std::ops::Deref for Vm {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.console
    }
}

impl std::ops::DerefMut for Vm {
    fn deref_mut(&mut self) -> &mut Console {
        &mut self.console
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Least time between two tick lines echoed to the terminal.
const TICK_ECHO_GAP: Duration = Duration::from_millis(200);

/// What the demo's story shows of a guest console line: `None` for what
/// only a tester reads (KTAP case lines, kernel messages, the harness's
/// markers, self-checks, workload ticks), the KUnit totals as one line.
pub fn story_line(line: &str) -> Option<String> {
    let t = line.trim_start();
    if let Some(totals) = t.strip_prefix("# miglock: ") {
        return Some(format!("KUnit suite miglock: {totals}"));
    }
    const HIDDEN: &[&str] = &[
        "@@MIGLOCK",
        "KTAP version",
        "1..",
        "ok ",
        "# ",
        "tsc: ",
        "clocksource: ",
        "random: ",
        "mldtest: ",
        "miglock: loading out-of-tree",
    ];
    if HIDDEN.iter().any(|h| t.starts_with(h)) || crate::pair::tick_of(line).is_some() {
        return None;
    }
    Some(line.to_string())
}

/// Copies the serial stream to `log` and hands each line to the returned channel.
fn spawn_reader(
    mut stream: UnixStream,
    log: &Path,
    echo: Echo,
    name: String,
    mut started: bool,
) -> Result<Receiver<(Instant, String)>> {
    let mut out =
        BufWriter::new(File::create(log).with_context(|| format!("creating {}", log.display()))?);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut pending: Vec<u8> = Vec::new();
        let mut last_tick: Option<std::time::Instant> = None;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            pending.extend_from_slice(&buf[..n]);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = pending.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                started |= line.contains(START);
                match echo {
                    Echo::Off => {}
                    Echo::Story if !started => {}
                    Echo::Story => {
                        if let Some(shown) = story_line(&line) {
                            eprintln!("  [{name}] {shown}");
                        }
                    }
                    Echo::All => {
                        // A fast workload ticks 50 times a second: at most
                        // one tick line in 200 ms, the log keeps all.
                        let now = std::time::Instant::now();
                        let tick = crate::pair::tick_of(&line).is_some();
                        if !tick || last_tick.is_none_or(|t| now - t >= TICK_ECHO_GAP) {
                            if tick {
                                last_tick = Some(now);
                            }
                            eprintln!("  [{name}] {line}");
                        }
                    }
                }
                if tx.send((std::time::Instant::now(), line)).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send((
                std::time::Instant::now(),
                String::from_utf8_lossy(&pending).into_owned(),
            ));
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::story_line;

    #[test]
    fn the_story_hides_what_only_a_tester_reads() {
        for hidden in [
            "KTAP version 1",
            "    1..17",
            "    ok 3 lock_table_holders",
            "# Totals: pass:17 fail:0 skip:0 total:17",
            "ok 1 miglock",
            "clocksource: Switched to clocksource tsc",
            "tsc: Refined TSC clocksource calibration: 2445.438 MHz",
            "@@MIGLOCK locked@@",
            "ok - the host channel connected",
            "mldtest: 1 passed, 0 failed",
            "miglock: loading out-of-tree module taints kernel.",
            "tick 7",
        ] {
            assert_eq!(story_line(hidden), None, "{hidden}");
        }
        assert_eq!(
            story_line("    # miglock: pass:17 fail:0 skip:0 total:17").as_deref(),
            Some("KUnit suite miglock: pass:17 fail:0 skip:0 total:17")
        );
        // A failing case, the steps and the evidence stay.
        for shown in [
            "    not ok 4 lock_table_leases",
            "== an application locks: a payment batch must not be interrupted",
            "workload: verified 4096 pages after 2 ticks gen 3",
            "state:             LOCKED (1 holder; static lock: no; detached hold: yes)",
        ] {
            assert_eq!(story_line(shown).as_deref(), Some(shown));
        }
    }
}
