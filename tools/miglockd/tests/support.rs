// SPDX-License-Identifier: GPL-2.0

//! The miglockd process under test, shared by the integration tests: start
//! it, wait for a condition, and a fake QEMU monitor to migrate against.
#![allow(dead_code)] // each test file uses its own part

use miglock_abi::wire::{self, Decoder, Event, Header, Message};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running miglockd; killed when dropped.
pub struct Agent {
    /// Its directory (configuration, sockets, logs).
    pub dir: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts miglockd on `dir/agent.toml`, stderr to `dir/agent.err`.
    pub fn start(dir: &Path) -> Agent {
        let mut cmd = Agent::command(dir);
        cmd.arg("--config").arg(dir.join("agent.toml"));
        Agent::spawn(dir, cmd)
    }

    /// The miglockd command, stderr to `dir/agent.err`.
    pub fn command(dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_miglockd"));
        cmd.stderr(std::fs::File::create(dir.join("agent.err")).unwrap());
        cmd
    }

    /// Starts `cmd` as the agent of `dir`.
    pub fn spawn(dir: &Path, mut cmd: Command) -> Agent {
        Agent {
            dir: dir.to_path_buf(),
            child: cmd.spawn().expect("start miglockd"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.err")).unwrap_or_default()
    }

    /// Waits for it to exit.
    pub fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let mut status = None;
        wait_for(within, "miglockd to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds; panics naming `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10)); // polling pace
    }
}

/// A scripted guest on a fake doorbell socket that the agent dials.
pub struct Guest {
    /// The connection.
    pub s: UnixStream,
    dec: Decoder,
    /// The last sequence number sent.
    pub seq: u32,
}

/// Accepts the agent's dials of a fake doorbell at `path`.
pub fn listen(path: &Path) -> mpsc::Receiver<UnixStream> {
    let l = UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            if tx.send(c).is_err() {
                return;
            }
        }
    });
    rx
}

impl Guest {
    /// The next connection: the agent announces itself first.
    pub fn accept(rx: &mpsc::Receiver<UnixStream>) -> Guest {
        let s = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the agent dials the doorbell");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut g = Guest {
            s,
            dec: Decoder::new(),
            seq: 0,
        };
        // The agent announces itself first.
        assert!(matches!(g.recv(), (_, Kind::Welcome)));
        g
    }

    pub fn send(&mut self, m: Message<'_>) -> u32 {
        self.frame(|hdr, b| wire::encode(&m, hdr, b))
    }

    /// Writes the frame `encode` makes under the next sequence number.
    pub fn frame(
        &mut self,
        encode: impl FnOnce(Header, &mut [u8]) -> Result<usize, wire::EncodeError>,
    ) -> u32 {
        self.seq += 1;
        let mut b = [0u8; wire::MAX_FRAME];
        let hdr = Header {
            seq: self.seq,
            reply_to: 0,
        };
        let n = encode(hdr, &mut b).unwrap();
        self.s.write_all(&b[..n]).unwrap();
        self.seq
    }

    pub fn recv(&mut self) -> (u32, Kind) {
        let mut b = [0u8; 1];
        loop {
            self.s.read_exact(&mut b).expect("a frame from the agent");
            if self.dec.push(b[0]) == Event::Frame {
                let (h, m) = wire::decode(self.dec.frame()).unwrap();
                return (h.reply_to, Kind::of(m));
            }
        }
    }

    /// The next notice from the agent (other frames are passed over).
    pub fn notice(&mut self) -> wire::Notice {
        let mut b = [0u8; 1];
        loop {
            self.s.read_exact(&mut b).expect("a frame from the agent");
            if self.dec.push(b[0]) == Event::Frame {
                if let (_, Message::Notice(n)) = wire::decode(self.dec.frame()).unwrap() {
                    return n;
                }
            }
        }
    }

    pub fn decision(&mut self, seq: u32) -> (bool, u32, u32) {
        loop {
            if let (r, Kind::Decision(g, l, why)) = self.recv() {
                if r == seq {
                    return (g, l, why);
                }
            }
        }
    }

    /// Waits until the agent has handled everything sent so far: it answers
    /// in order, so its Pong to a Ping means the frames before were handled.
    pub fn sync(&mut self) {
        let seq = self.send(Message::Ping);
        while self.recv() != (seq, Kind::Other) {}
    }

    pub fn lock(&mut self, hold: u32, label: &str, lease_ms: u32) -> (bool, u32, u32) {
        let l = miglock_abi::types::make_label(label).unwrap();
        let seq = self.send(Message::Lock {
            hold,
            reason: 2,
            lease_ms,
            label: l,
        });
        self.decision(seq)
    }
}

#[derive(Debug, PartialEq)]
pub enum Kind {
    Welcome,
    Decision(bool, u32, u32),
    Notice,
    Other,
}

impl Kind {
    pub fn of(m: Message<'_>) -> Kind {
        match m {
            Message::Welcome { .. } => Kind::Welcome,
            Message::Decision {
                granted,
                lease_ms,
                reason,
            } => Kind::Decision(granted, lease_ms, reason),
            Message::Verdict { lease_ms, refusal } => {
                Kind::Decision(refusal == 0, lease_ms, refusal)
            }
            Message::Notice(_) => Kind::Notice,
            _ => Kind::Other,
        }
    }
}

/// How a fake QEMU's migrations go.
#[derive(Clone, Copy, Debug)]
pub struct FakeQemu {
    /// QEMU's version (major, minor): below 10 under TCG, the agent fences
    /// pre-copy.
    pub version: (u32, u32),
    /// How every migration ends after one "active" look: "completed" (via
    /// a pause before the switchover), "failed" or "cancelled"; "active":
    /// it never ends by itself (until cancelled).
    pub ending: &'static str,
    /// The host kernel has no userfaultfd write-protection: QEMU refuses
    /// the background-snapshot capability, as QEMU does.
    pub no_snapshot: bool,
    /// An older or stripped QEMU: `query-migrate-capabilities` does not
    /// list `auto-converge`.
    pub no_auto_converge: bool,
    /// The migration status each connection finds ("none": none yet; say
    /// "pre-switchover": one paused there by a client that went away).
    pub initial: &'static str,
    /// While a migration runs, `blockdev-add` fails with this text (QEMU
    /// takes no blocker then; its wording is not an API).
    pub busy_error: Option<&'static str>,
}

impl Default for FakeQemu {
    fn default() -> Self {
        FakeQemu {
            version: (10, 0),
            ending: "completed",
            no_snapshot: false,
            no_auto_converge: false,
            initial: "none",
            busy_error: None,
        }
    }
}

/// Every command a fake QEMU was sent, in order (`{"execute": ...,
/// "arguments": ...}`).
pub type Commands = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// Serves a QMP monitor on `path` (one client at a time, as QEMU does)
/// that walks each migration through "active" to `q.ending`; returns the
/// commands it is sent.
pub fn fake_qemu(path: &Path, q: FakeQemu) -> Commands {
    let l = UnixListener::bind(path).unwrap();
    // Block nodes and capabilities belong to the QEMU, not to a connection.
    let nodes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let caps = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Map::new()));
    let commands = Commands::default();
    let sent = commands.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut w = conn.try_clone().unwrap();
            let _ = writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#);
            let mut state = q.initial;
            let mut nodes = nodes.lock().unwrap();
            let mut caps = caps.lock().unwrap();
            for line in BufReader::new(conn).lines() {
                let Ok(v) = serde_json::from_str::<Value>(&line.unwrap_or_default()) else {
                    break;
                };
                sent.lock().unwrap().push(v.clone());
                let mut reply = match v["execute"].as_str().unwrap_or("") {
                    "query-version" => json!({"return": {"qemu":
                        {"major": q.version.0, "minor": q.version.1, "micro": 0}}}),
                    "query-kvm" => json!({"return": {"enabled": false, "present": false}}),
                    "query-status" => json!({"return": {"status": "running", "running": true}}),
                    "query-migrate-parameters" => {
                        json!({"return": {"max-bandwidth": 1 << 27, "downtime-limit": 300}})
                    }
                    "query-migrate-capabilities" => {
                        // What this QEMU offers, each as last set.
                        let mut offered = vec![
                            "events",
                            "postcopy-ram",
                            "postcopy-preempt",
                            "pause-before-switchover",
                            "background-snapshot",
                            "dirty-limit",
                        ];
                        if !q.no_auto_converge {
                            offered.push("auto-converge");
                        }
                        let on: Vec<Value> = offered
                            .iter()
                            .map(|c| {
                                let state = caps.get(*c).cloned().unwrap_or(json!(false));
                                json!({"capability": c, "state": state})
                            })
                            .collect();
                        json!({ "return": on })
                    }
                    "query-named-block-nodes" => json!({ "return": *nodes }),
                    "query-fdsets" => json!({"return": []}),
                    "add-fd" => json!({"return": {"fdset-id": 1, "fd": 3}}),
                    "blockdev-add"
                        if q.busy_error.is_some()
                            && matches!(state, "active" | "pre-switchover" | "continuing") =>
                    {
                        json!({"error": {"class": "GenericError", "desc": q.busy_error}})
                    }
                    "blockdev-add" => {
                        nodes.push(json!({"node-name": v["arguments"]["node-name"]}));
                        json!({"return": {}})
                    }
                    "blockdev-del" => {
                        nodes.retain(|n| n["node-name"] != v["arguments"]["node-name"]);
                        json!({"return": {}})
                    }
                    "migrate-set-capabilities"
                        if q.no_snapshot
                            && v["arguments"]["capabilities"].as_array().is_some_and(|c| {
                                c.iter().any(|c| {
                                    c["capability"] == "background-snapshot" && c["state"] == true
                                })
                            }) =>
                    {
                        json!({"error": {"class": "GenericError",
                            "desc": "Background-snapshot is not supported by host kernel"}})
                    }
                    "migrate-set-capabilities" => {
                        for c in v["arguments"]["capabilities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            if let Some(name) = c["capability"].as_str() {
                                caps.insert(name.into(), c["state"].clone());
                            }
                        }
                        json!({"return": {}})
                    }
                    "migrate" | "migrate-incoming" => {
                        state = "active";
                        json!({"return": {}})
                    }
                    "query-migrate" => {
                        // Like QEMU, the status leaves "pre-switchover" a
                        // moment after migrate-continue, not at once.
                        let shown = if state == "continuing" {
                            "pre-switchover"
                        } else {
                            state
                        };
                        let r = json!({"return": {"status": shown, "ram": {"total": 4 << 20,
                            "transferred": 1 << 20, "remaining": 3 << 20, "mbps": 8.0}}});
                        state = match (state, q.ending) {
                            ("active", "completed") => "pre-switchover",
                            ("active", end) => end,
                            ("continuing", _) => "completed",
                            (s, _) => s,
                        };
                        r
                    }
                    "migrate-continue" if state == "pre-switchover" => {
                        state = "continuing";
                        json!({"return": {}})
                    }
                    "migrate-continue" => json!({"error": {"class": "GenericError",
                        "desc": format!("Migration not in expected state: {state}")}}),
                    "migrate_cancel" => {
                        state = "cancelled";
                        json!({"return": {}})
                    }
                    _ => json!({"return": {}}),
                };
                reply["id"] = v["id"].clone();
                if writeln!(w, "{reply}").is_err() {
                    break;
                }
            }
        }
    });
    commands
}

/// One control request and how its answer came: the time to its first line
/// (a progress line, or the answer itself) and the final answer. Panics if
/// the first line takes longer than `first_within` (a stuck agent) or the
/// answer longer than `within`.
pub fn control_timed(
    dir: &Path,
    req: Value,
    first_within: Duration,
    within: Duration,
) -> (Duration, Value) {
    let t = Instant::now();
    let mut s = UnixStream::connect(dir.join("control.sock")).expect("control socket");
    s.set_read_timeout(Some(first_within)).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = None;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            other => panic!("{req}: no answer after {:?}: {other:?}", t.elapsed()),
        }
        let first = *first.get_or_insert_with(|| {
            let _ = s.set_read_timeout(Some(within));
            t.elapsed()
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["kind"] != "progress" {
            return (first, v);
        }
    }
}

/// The audit log's records so far.
pub fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Writes `dir/agent.toml`: state, audit and control socket in `dir`, then
/// `rest` (top-level tables, then the `[[vm]]`s).
pub fn write_config(dir: &Path, rest: &str) {
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n{rest}"
        ),
    )
    .unwrap();
}
