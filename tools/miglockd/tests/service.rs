// SPDX-License-Identifier: GPL-2.0

//! miglockd as a service: found configuration, readiness, a log that tells
//! a dial failure once and its recovery once, the audit log reopened on
//! SIGHUP, and a clean exit on SIGTERM.

use miglock_abi::wire::{self, Header, Message};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{wait_for, Agent};

const WITHIN: Duration = Duration::from_secs(10);

/// An /etc-style root: the configuration where a package puts it, every
/// path it names inside the root.
fn root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-svc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc/miglock")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("etc/miglock/miglockd.toml"),
        format!(
            "state = \"{d}/var/lib/miglock/state.json\"\n\
             audit = \"{d}/var/log/miglock/audit.jsonl\"\n\
             control = \"{d}/run/miglock/control.sock\"\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/run/miglock/vm-bell.sock\"\n"
        ),
    )
    .unwrap();
    dir
}

fn count(log: &str, what: &str, path: &Path) -> usize {
    let path = path.display().to_string();
    log.lines()
        .filter(|l| l.contains(what) && l.contains(&path))
        .count()
}

fn policy(control: &Path) -> Value {
    let mut s = UnixStream::connect(control).unwrap();
    writeln!(s, r#"{{"cmd": "policy", "vm": "vm"}}"#).unwrap();
    let line = BufReader::new(s).lines().next().unwrap().unwrap();
    serde_json::from_str(&line).unwrap()
}

fn audit(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One datagram; a signal that lands meanwhile (seen: EINTR) is no answer.
fn recv(sock: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[test]
fn runs_as_a_service() {
    let dir = root("service");
    let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    notify.set_read_timeout(Some(WITHIN)).unwrap();
    let mut cmd = Agent::command(&dir);
    // No --config: the environment names the file, as it would the
    // default /etc/miglock/miglockd.toml.
    cmd.env("MIGLOCKD_CONFIG", dir.join("etc/miglock/miglockd.toml"))
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .env("MIGLOCKD_LOG", "debug")
        .env_remove("JOURNAL_STREAM");
    let mut agent = Agent::spawn(&dir, cmd);
    let (control, bell) = (
        dir.join("run/miglock/control.sock"),
        dir.join("run/miglock/vm-bell.sock"),
    );
    let audit_path = dir.join("var/log/miglock/audit.jsonl");

    // Ready once the control socket listens.
    let mut buf = [0u8; 256];
    let n = recv(&notify, &mut buf).expect("a readiness notification");
    let said = String::from_utf8_lossy(&buf[..n]);
    assert!(said.lines().any(|l| l == "READY=1"), "{said:?}");
    assert_eq!(policy(&control)["kind"], "ok");

    // The doorbell is not there: told once with its path, however often
    // the agent redials (each redial is a debug line).
    wait_for(WITHIN, "three redials of the missing doorbell", || {
        count(&agent.log(), "doorbell dial failed again", &bell) >= 3
    });
    let log = agent.log();
    assert_eq!(
        count(&log, "cannot dial the doorbell socket", &bell),
        1,
        "{log}"
    );
    assert!(log.contains("No such file"), "{log}");

    // It appears: the recovery is told, once.
    let listener = UnixListener::bind(&bell).unwrap();
    let (mut guest, _) = listener.accept().unwrap();
    wait_for(WITHIN, "the recovery in the log", || {
        count(&agent.log(), "doorbell reachable again", &bell) == 1
    });
    assert_eq!(
        count(&agent.log(), "cannot dial the doorbell socket", &bell),
        1
    );

    // logrotate moves the audit log away; SIGHUP: the agent writes a new one.
    std::fs::rename(&audit_path, dir.join("audit.jsonl.1")).unwrap();
    kill(Pid::from_raw(agent.pid()), Signal::SIGHUP).unwrap();
    wait_for(WITHIN, "a new audit log", || audit_path.exists());
    let set = r#"{"cmd": "policy", "vm": "vm", "set": {"grace_ms": 1000}}"#;
    let mut s = UnixStream::connect(&control).unwrap();
    writeln!(s, "{set}").unwrap();
    BufReader::new(s).lines().next().unwrap().unwrap();
    assert!(audit(&audit_path).contains("\"policy\""));
    assert!(!audit(&dir.join("audit.jsonl.1")).contains("\"policy\""));

    // SIGTERM while the guest keeps the agent writing records: it ends
    // with status 0 and the audit log ends with a whole record.
    let flood = std::thread::spawn(move || {
        let label = miglock_abi::types::make_label("busy").unwrap();
        for seq in 1u32.. {
            let m = if seq % 2 == 1 {
                Message::Lock {
                    hold: 1,
                    reason: 1,
                    lease_ms: 1000,
                    label,
                }
            } else {
                Message::Unlock { hold: 1 }
            };
            let mut b = [0u8; wire::MAX_FRAME];
            let n = wire::encode(&m, Header { seq, reply_to: 0 }, &mut b).unwrap();
            if guest.write_all(&b[..n]).is_err() {
                return seq;
            }
        }
        unreachable!()
    });
    wait_for(WITHIN, "the guest's locks in the audit log", || {
        audit(&audit_path).matches("\"lock\"").count() >= 5
    });
    kill(Pid::from_raw(agent.pid()), Signal::SIGTERM).unwrap();
    let status = agent.exit_status(WITHIN);
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", agent.log());
    assert!(flood.join().unwrap() > 10);
    let text = audit(&audit_path);
    assert!(text.ends_with('\n'), "a torn last record: {text}");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every record parses"))
        .collect();
    let last = records.last().unwrap();
    assert_eq!(last["event"], "agent-stop", "{text}");
    assert_eq!(last["signal"], "SIGTERM");
    assert!(!control.exists(), "the control socket stays behind");
    let n = recv(&notify, &mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// --check-config says whether a configuration is valid, without starting.
#[test]
fn checks_a_configuration() {
    let dir = root("check");
    let conf = dir.join("etc/miglock/miglockd.toml");
    let run = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_miglockd"))
            .arg("--check-config")
            .env("MIGLOCKD_CONFIG", path)
            .output()
            .unwrap()
    };
    let ok = run(&conf);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 VM(s)"));
    assert!(
        !dir.join("run").exists(),
        "checking must not start anything"
    );
    std::fs::write(&conf, "[[vm]]\nname = \"a\"\ndoorbel = \"/x\"\n").unwrap();
    let bad = run(&conf);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("doorbel"),
        "{bad:?}"
    );
    let missing = run(&dir.join("nowhere.toml"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}
